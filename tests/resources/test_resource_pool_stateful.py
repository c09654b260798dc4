"""A Hypothesis state machine driving a ResourcePool through random sequences of acquire,
release, remove, destroy (of held and of idle resources), cancel (including the
cancel-at-hand-off race), failing allocations, dead resources, expire_all(), resize(),
max_lifetime, leak_timeout, resets on release (some failing) and the passage of time, checking
the pool's invariants (its own ``_check_invariants()`` and the backend's view) after every step.

Harness: Trio runs in a background thread on a ``MockClock`` that only moves when a rule
jumps it; every rule calls into that loop with ``trio.from_thread`` and then waits until all
tasks are blocked, so each invariant is checked in a quiescent state.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import hypothesis.strategies as st
import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from resource_fakes import FORMS, OPEN, FakeBackend, FakeResource, Holder, make_pool

from trio_pool import Backoff, PoolDestroyedError, PoolEndingError, ResourcePool

T = TypeVar("T")

MAX_ACTIVE_HOLDERS = 6
PING_TIMEOUT = 10.0  # the pool's default, which also bounds a reset


class ResetError(Exception):
    """What the machine's ``reset`` raises when told to fail."""


class TrioDriver:
    """A Trio loop in a thread, with a clock that only moves when told to."""

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock()
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):  # pragma: no cover
            raise RuntimeError("the Trio thread did not start")
        if self.error is not None:  # pragma: no cover
            raise self.error

    def _thread_main(self) -> None:
        try:
            trio.run(self._main, clock=self.clock)
        except BaseException as exc:  # pragma: no cover - reported by close()
            self.error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` in the loop, then wait until every task is blocked."""

        async def step() -> T:
            result = await fn()
            await trio.testing.wait_all_tasks_blocked()
            return result

        return trio.from_thread.run(step, trio_token=self.token)

    def call_sync(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` synchronously in the loop (one step, no checkpoint), then settle."""

        async def step() -> T:
            return fn()

        return self.call(step)

    def close(self) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # the loop may have died already
            trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join(10)
        if self.error is not None:  # pragma: no cover
            raise self.error


class ResourcePoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.driver = TrioDriver()
        self.backend = FakeBackend(acquire_delay=1.0)
        self.pool: ResourcePool[FakeResource] | None = None
        self.holders: list[Holder] = []
        self.destroyed_by_us: list[Any] = []
        self._pool_done: trio.Event | None = None
        self._pool_exited = threading.Event()
        self.ending = False
        self.end_result: list[BaseException] | None = None
        self.resetting: dict[int, FakeResource] = {}  # resources whose reset runs now
        self.reset_delay = 0.0
        self.fail_next_reset = 0
        self.reset_failures = 0

    async def _reset(self, resource: FakeResource) -> None:
        """The pool's ``reset``: takes ``reset_delay``; fails when told to. A jump of the
        clock past ``ping_timeout`` makes it late: the pool counts that as a failure too."""
        assert id(resource) not in self.resetting, "reset twice at once"
        self.resetting[id(resource)] = resource
        started = trio.current_time()
        try:
            await trio.sleep(self.reset_delay)
        except trio.Cancelled:  # only its ping_timeout cancels a reset here (end() waits)
            self.reset_failures += 1
            raise
        finally:
            del self.resetting[id(resource)]
        late = trio.current_time() - started >= PING_TIMEOUT
        if late or self.fail_next_reset:
            self.reset_failures += 1
        if self.fail_next_reset:
            self.fail_next_reset -= 1
            raise ResetError(f"cannot reset {resource!r}")

    # ------------------------------------------------------------------ setup / teardown

    @initialize(
        form=st.sampled_from(FORMS),
        minimum=st.integers(0, 2),
        extra=st.integers(0, 2),
        idle_timeout=st.sampled_from([None, 4.0, 20.0]),
        allocation_time=st.sampled_from([0.0, 1.0]),
        ping_time=st.sampled_from([0.0, 0.0, 0.5]),
        max_lifetime=st.sampled_from([None, None, 3.0, 15.0]),
        reset_time=st.sampled_from([None, None, 0.0, 0.5]),
        leak_timeout=st.sampled_from([None, 1.0]),
    )
    def open_pool(
        self,
        form: str,
        minimum: int,
        extra: int,
        idle_timeout: float | None,
        allocation_time: float,
        ping_time: float,
        max_lifetime: float | None,
        reset_time: float | None,
        leak_timeout: float | None,
    ) -> None:
        self.form = form
        self.backend.acquire_delay = allocation_time
        self.backend.ping_delay = ping_time
        self.max = max(1, minimum + extra)
        self.reset_delay = reset_time or 0.0
        self.pool = make_pool(
            self.backend,
            form,
            ping=True,
            min=minimum,
            max=self.max,
            bail_after=None,
            backoff=Backoff(min=0.5, max=2.0),
            idle_timeout=idle_timeout,
            sync_interval=2.0,
            max_lifetime=max_lifetime,
            reset=None if reset_time is None else self._reset,
            leak_timeout=leak_timeout,  # its reports only log: they must not disturb the rest
        )
        pool = self.pool

        async def host(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            self._pool_done = trio.Event()
            try:
                async with pool:
                    task_status.started()
                    await self._pool_done.wait()
            finally:
                self._pool_exited.set()

        async def start() -> None:
            await self.driver.nursery.start(host)

        self.driver.call(start)

    def teardown(self) -> None:
        try:
            if self.pool is not None:
                self._shut_down()
        finally:
            self.driver.close()

    def _shut_down(self) -> None:
        pool = self.pool
        assert pool is not None
        if not self.ending:
            self.begin_end()
        # Give everything back, in every way there is (end() waits for all of it).
        for _ in range(10):
            waiting = self._with_state("waiting")
            holding = self._with_state("holding")
            if not waiting and not holding:
                break
            for holder in waiting:
                self.driver.call_sync(holder.scope.cancel)
            for index, holder in enumerate(holding):
                [self._release, self._remove, self._destroy][index % 3](holder)
        assert all(h.state not in ("waiting", "holding") for h in self.holders)

        async def wait_for_end() -> None:
            self.driver.clock.autojump_threshold = 0
            with trio.move_on_after(1000):
                await self._end_done.wait()
            stats = pool.statistics()
            assert self._end_done.is_set(), (
                f"end() never finished after all was given back: {stats}"
            )

        self.driver.call(wait_for_end)
        assert self.end_result == []
        assert self._pool_done is not None
        self.driver.call_sync(self._pool_done.set)
        assert self._pool_exited.wait(10)

        destroyed_ids = {id(r) for r in self.backend.destroyed}
        graceful_ids = {id(r) for r in self.backend.gracefully_closed}
        for resource in self.backend.created:
            closings = int(id(resource) in destroyed_ids) + int(id(resource) in graceful_ids)
            assert closings == 1, f"{resource!r} was closed {closings} times"
        assert self.backend.disposed == list({id(r): r for r in self.backend.disposed}.values())
        assert destroyed_ids == {id(r) for r in self.destroyed_by_us}
        assert self.backend.in_flight == 0
        assert self.backend.alive_resources == []
        finished = {id(r) for r in self.backend.dispose_finished}
        assert graceful_ids == finished, "a dispose was cut short"

    # ------------------------------------------------------------------ helpers

    def _with_state(self, state: str) -> list[Holder]:
        return [h for h in self.holders if h.state == state]

    def _release(self, holder: Holder) -> None:
        self.driver.call_sync(holder.release)

    def _remove(self, holder: Holder) -> None:
        pool, resource = self.pool, holder.resource
        assert pool is not None
        assert resource is not None  # a holding holder has its resource

        def remove() -> None:
            pool.remove(resource)
            holder.state = "removed"

        self.driver.call_sync(remove)

    def _destroy(self, holder: Holder) -> None:
        pool, resource = self.pool, holder.resource
        assert pool is not None
        assert resource is not None  # a holding holder has its resource

        def destroy() -> None:
            pool.destroy(resource)
            holder.state = "destroyed"

        self.destroyed_by_us.append(resource)
        self.driver.call_sync(destroy)

    # ------------------------------------------------------------------ rules

    @precondition(
        lambda self: (
            self.pool is not None
            and sum(h.state in ("waiting", "holding") for h in self.holders) < MAX_ACTIVE_HOLDERS
        )
    )
    @rule()
    def acquire(self) -> None:
        holder = Holder(self.pool, f"h{len(self.holders)}")
        self.holders.append(holder)
        self.driver.call_sync(lambda: self.driver.nursery.start_soon(holder.run))

    @precondition(
        lambda self: (
            self.pool is not None
            and sum(h.state in ("waiting", "holding") for h in self.holders) < MAX_ACTIVE_HOLDERS
        )
    )
    @rule()
    def checkout_nowait(self) -> None:
        """An idle resource now (no ping), or WouldBlock; refused once the pool ends."""
        pool = self.pool
        assert pool is not None
        holder = Holder(pool, f"n{len(self.holders)}")
        outcome: list[str] = []

        def take() -> None:
            try:
                holder.resource = pool.checkout_nowait()
            except trio.WouldBlock:
                outcome.append("blocked")
            except (PoolEndingError, PoolDestroyedError):
                outcome.append("refused")
            else:
                holder.state = "holding"

        self.driver.call_sync(take)
        # It blocks only when nothing is idle (an expired idle one is retired, not lent),
        # and refuses only once end() began.
        assert outcome != ["blocked"] or pool.statistics().available == 0
        assert outcome != ["refused"] or self.ending
        if holder.state == "holding":
            self.holders.append(holder)

    @precondition(lambda self: any(h.state == "holding" for h in self.holders))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self._release(data.draw(st.sampled_from(self._with_state("holding"))))

    @precondition(lambda self: any(h.state == "holding" for h in self.holders))
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        self._remove(data.draw(st.sampled_from(self._with_state("holding"))))

    @precondition(lambda self: any(h.state == "holding" for h in self.holders))
    @rule(data=st.data())
    def destroy(self, data: st.DataObject) -> None:
        self._destroy(data.draw(st.sampled_from(self._with_state("holding"))))

    def _idle_resources(self) -> list[FakeResource]:
        # In a quiescent state every live resource is idle, held, or being pinged.
        busy = {id(h.resource) for h in self._with_state("holding")}
        busy |= {id(r) for r in self.backend.pinging}
        busy |= set(self.resetting)
        return [r for r in self.backend.alive_resources if id(r) not in busy]

    @precondition(lambda self: self.pool is not None and bool(self._idle_resources()))
    @rule(data=st.data(), ungracefully=st.booleans())
    def evict_idle(self, data: st.DataObject, ungracefully: bool) -> None:
        """remove()/destroy() of an idle resource evicts it (issue 12 item 10)."""
        pool = self.pool
        assert pool is not None
        resource = data.draw(st.sampled_from(self._idle_resources()))
        if ungracefully:
            self.destroyed_by_us.append(resource)
            self.driver.call_sync(lambda: pool.destroy(resource))
        else:
            self.driver.call_sync(lambda: pool.remove(resource))

    @precondition(lambda self: self.pool is not None)
    @rule()
    def expire_all(self) -> None:
        """A failover: every current resource is retired (idle now, held on release)."""
        pool = self.pool
        assert pool is not None
        self.driver.call_sync(pool.expire_all)

    @precondition(lambda self: self.pool is not None)
    @rule(data=st.data())
    def resize(self, data: st.DataObject) -> None:
        """min/max at run time, within the cap the machine started with."""
        pool = self.pool
        assert pool is not None
        new_max = data.draw(st.integers(1, self.max))
        new_min = data.draw(st.integers(0, min(2, new_max)))
        self.driver.call_sync(lambda: pool.resize(min=new_min, max=new_max))
        assert (pool.statistics().min, pool.statistics().max) == (new_min, new_max)

    @precondition(lambda self: self.pool is not None and not self.ending)
    @rule()
    def begin_end(self) -> None:
        """end() in the background: waiters already queued are still served, new acquires
        fail with PoolEndingError, and it finishes once everything is given back."""
        pool = self.pool
        assert pool is not None
        self.ending = True
        self._end_done = trio.Event()

        async def run_end() -> None:
            self.end_result = await pool.end()
            self._end_done.set()

        self.driver.call_sync(lambda: self.driver.nursery.start_soon(run_end))

    @precondition(lambda self: any(h.state == "waiting" for h in self.holders))
    @rule(data=st.data())
    def cancel_waiter(self, data: st.DataObject) -> None:
        holder = data.draw(st.sampled_from(self._with_state("waiting")))
        self.driver.call_sync(holder.scope.cancel)

    @precondition(
        lambda self: (
            any(h.state == "holding" for h in self.holders)
            and any(h.state == "waiting" for h in self.holders)
        )
    )
    @rule(data=st.data(), cancel_first=st.booleans())
    def release_and_cancel_at_once(self, data: st.DataObject, cancel_first: bool) -> None:
        """The hand-off race: a release and a waiter's cancellation in one synchronous step."""
        holder = data.draw(st.sampled_from(self._with_state("holding")))
        waiter = data.draw(st.sampled_from(self._with_state("waiting")))

        def both() -> None:
            if cancel_first:
                waiter.scope.cancel()
                holder.release()
            else:
                holder.release()
                waiter.scope.cancel()

        self.driver.call_sync(both)

    @rule()
    def next_reset_fails(self) -> None:
        self.fail_next_reset += 1

    @rule()
    def next_allocation_fails(self) -> None:
        self.backend.fail_next += 1

    @precondition(lambda self: bool(self.backend.alive_resources))
    @rule(data=st.data())
    def resource_dies(self, data: st.DataObject) -> None:
        resource = data.draw(st.sampled_from(self.backend.alive_resources))
        resource.alive = False

    @precondition(lambda self: self.pool is not None)
    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.5, 10.0]))
    def time_passes(self, seconds: float) -> None:
        async def jump() -> None:
            self.driver.clock.jump(seconds)

        self.driver.call(jump)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def pool_invariants(self) -> None:
        if self.pool is None:
            return
        # The pool's own view first (containers, slot states, the hand-off), in its thread.
        self.driver.call_sync(self.pool._check_invariants)
        stats = self.pool.statistics()
        holding = self._with_state("holding")
        waiting = self._with_state("waiting")
        held = [h.resource for h in holding]

        assert stats.allocated <= self.max
        assert self.backend.outstanding <= self.max

        # No resource is held twice, and none that is held was disposed or destroyed.
        assert len({id(r) for r in held}) == len(held)
        closed = {id(r) for r in self.backend.closed}
        assert not [r for r in held if id(r) in closed]

        # Every resource that exists is idle, held by exactly one holder, being pinged for
        # an acquirer (who is still "waiting" but no longer queued) or being reset.
        pinging = len(self.backend.pinging) + len(self.resetting)
        assert len(self.backend.alive_resources) == stats.available + len(held) + pinging
        assert not [r for r in held if id(r) in self.resetting], "lent while resetting"
        assert stats.reset_failures_total == self.reset_failures

        # allocated = idle + checked out + being created (a retry waiting on the backoff
        # schedule may hold one slot while allocations are failing).
        visible = stats.available + len(held) + pinging + self.backend.in_flight
        slack = 1 if self.backend.failed_since_success else 0
        assert visible <= stats.allocated <= visible + slack, (stats, visible)

        assert stats.queued == len(waiting) - len(self.backend.pinging)
        assert stats.live == bool(self.backend.created)
        for holder in self._with_state("failed"):
            assert self.ending, holder.error
            assert isinstance(holder.error, (PoolEndingError, PoolDestroyedError)), holder.error

    @invariant()
    def nobody_waits_on_a_pool_that_has_ended(self) -> None:
        if self.end_result is not None:
            assert not self._with_state("waiting"), "an acquirer is stranded after end()"
            assert self.pool is not None
            assert self.pool.statistics().queued == 0

    @invariant()
    def end_finishes_once_everything_is_given_back(self) -> None:
        if not self.ending or self._with_state("waiting") or self._with_state("holding"):
            return
        if self.resetting:
            return  # end() waits for the resets under way
        assert self.end_result == [], "end() still waiting with nothing checked out or queued"
        assert self.backend.alive_resources == []

    @invariant()
    def open_form_exits_match_closed_resources(self) -> None:
        if self.pool is None or self.form != OPEN:
            return
        assert len(self.backend.exits) == len(self.backend.closed)


ResourcePoolMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestResourcePoolMachine = ResourcePoolMachine.TestCase
