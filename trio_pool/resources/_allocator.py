"""Creating resources: how many resource tasks to start, the backoff after failures, bailing.

Theory of operation
-------------------
The :class:`Allocator` starts resource tasks (:func:`~._slot.run_resource_task`) in the pool's
nursery when its owner asks (:meth:`Allocator.allocate`, with the demand the owner counted),
hears what the tasks report (created, failed, ended: it is their :class:`~._slot.SlotOwner`),
hands new resources to the pool (``_place``), and keeps the record of how creation goes:

* ``creating``: the slots whose task is still creating (counted in the pool's ``allocated``);
  ``alive``: the slots whose task runs, in any phase (the pool waits for them when ending).
* After a failed creation it retries *one at a time* on the :class:`~._backoff.Backoff`
  schedule: ``retry_at`` is when the next attempt may start, and a timer task sleeps until then
  and asks the owner to allocate again (no busy loop, no thundering herd against a dead
  backend). A success resets the schedule and makes the pool ``live``.
* ``bail_after``: if no creation has ever succeeded that long after the pool started, a failure
  (or the timer reaching that moment with failures recorded) makes it call
  :meth:`AllocatorOwner.bail` once, with the last error. The owner turns that into its BAILED
  state; the allocator does not know what bailing means for acquirers.

Only the allocator's methods change its fields; all of them are synchronous except the timer
task, which changes nothing itself before calling back into them.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any, Protocol

import trio

from .._errors import AcquireTimeoutError
from .._supervisor import Supervisor
from ._options import PoolOptions
from ._slot import Slot, SlotState, run_resource_task
from ._stats import Counters

__all__ = ["Allocator", "AllocatorOwner"]

logger = logging.getLogger("trio_pool.resource")

_INF = math.inf


class AllocatorOwner(Protocol):
    """The pool, as the allocator sees it (private methods: they are not the pool's API)."""

    def _maybe_allocate(self) -> None:
        """Count the demand and call :meth:`Allocator.allocate` (the backoff timer calls it)."""

    def _bail(self, error: BaseException) -> None:
        """No creation ever succeeded within ``bail_after``: give up (a second call: no-op)."""

    def _torn_down(self) -> bool:
        """Whether the pool was torn down (a late resource is then destroyed at once)."""

    def _place(self, slot: Slot) -> None:
        """A new resource: hand it out or stack it, and refill."""

    def _lost(self, slot: Slot) -> None:
        """An IDLE or BUSY ``open=`` resource died under the pool."""

    def _dispose_failed(self, error: BaseException) -> None:
        """A dispose failed or timed out (``destroy`` was called): a report for end()."""


class Allocator:
    """Starts resource tasks, hears their reports, keeps the creation record (see the module
    docstring). It is the :class:`~._slot.SlotOwner` of every slot."""

    __slots__ = (
        "_counters",
        "_failures",
        "_options",
        "_owner",
        "_retry_at",
        "_started_at",
        "_supervisor",
        "_tasks_done",
        "_timer_running",
        "alive",
        "creating",
        "generation",
        "last_error",
        "live",
    )

    def __init__(
        self,
        options: PoolOptions[Any],
        owner: AllocatorOwner,
        supervisor: Supervisor,
        counters: Counters,
    ) -> None:
        self._options = options
        self._counters = counters
        self.generation = 0
        """Bumped by expire_all(): slots of an older generation are retired when free."""
        self._owner = owner
        self._supervisor = supervisor
        self.creating: set[Slot] = set()
        self.alive: set[Slot] = set()
        self.live = False
        """Whether a creation has ever succeeded."""
        self.last_error: BaseException | None = None
        self._started_at = 0.0
        self._failures = 0  # consecutive failed creations
        self._retry_at = -_INF
        self._timer_running = False
        self._tasks_done: trio.Event | None = None

    def __repr__(self) -> str:
        return repr(self._owner)  # log lines name the pool

    def start(self) -> None:
        """The pool opened: ``bail_after`` counts from now."""
        self._started_at = trio.current_time()

    @property
    def outage(self) -> BaseException | None:
        """The last creation error while creations are failing (None once one succeeds)."""
        return self.last_error if self._failures else None

    # ------------------------------------------------------------------ starting tasks

    def allocate(self, wanted: int, allocated: int, maximum: int) -> None:
        """Start up to ``wanted`` more resource tasks, never past ``maximum`` allocated, and
        only one probe at a time while creations fail. Not a checkpoint."""
        if wanted <= 0 or trio.current_time() < self._retry_at:
            return  # nothing to do, or backing off (the timer calls again when it is time)
        room = maximum - allocated
        if self._failures:
            room = min(room, 1 - len(self.creating))
        for _ in range(min(wanted, room)):
            slot = Slot(generation=self.generation)
            self.creating.add(slot)
            self.alive.add(slot)
            self._supervisor.start_soon(
                run_resource_task, slot, self, self._options, name=f"{self!r} resource"
            )

    def abandon_creating(self, *, forget: bool) -> None:
        """Nobody needs the creations under way: cancel them (a late one is disposed, or
        destroyed if the pool is torn down). ``forget``: stop counting them at once."""
        for slot in self.creating:
            if slot.state is SlotState.CREATING:
                slot.abandon()
        if forget:
            self.creating.clear()

    async def tasks_ended(self) -> None:
        """Wait until no resource task is left (none may start any more). A checkpoint."""
        if self.alive:
            # Made only now: while the pool still served waiters, every task could end for a
            # moment (a failed creation backing off) and more start later.
            self._tasks_done = trio.Event()
            await self._tasks_done.wait()
        else:
            await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------------ what tasks report

    def slot_created(self, slot: Slot, deadline: float) -> bool:
        """A task has its resource: place it. False if it is unwanted or late (dispose it)."""
        self.creating.discard(slot)
        late = trio.current_time() >= deadline
        if slot.state is SlotState.CREATING and not late:
            self.live = True
            self._failures = 0
            self._retry_at = -_INF
            lifetime = self._options.max_lifetime
            if lifetime is not None:
                # Each its own limit in [0.9, 1.0] x max_lifetime, so that resources created
                # together (at start, after a failover) do not all expire together.
                slot.expires_at = trio.current_time() + lifetime * random.uniform(0.9, 1.0)
            logger.debug("%r: created %r", self, slot.resource)
            self._owner._place(slot)
            return True
        if self._owner._torn_down():
            # The pool was torn down while this creation ignored its cancellation: the
            # resource arrives to nobody, so it gets the same treatment as the rest.
            slot.destroy(self._options.destroy, self)
            return False
        # Either the creation ignored its deadline (it is over: dispose, and count a failure)
        # or end() no longer needs it.
        if late:
            self._failed(self._timed_out())
        slot.retire()  # retired from birth: a failing dispose is reported as such
        return False

    def slot_failed(self, slot: Slot, error: BaseException | None) -> None:
        """A task ended a phase abnormally: ``error`` raised, or (None) its deadline fired."""
        state = slot.state
        if state is SlotState.CREATING or state is SlotState.ABANDONED:
            self.creating.discard(slot)
            slot.fail()
            if state is SlotState.CREATING:  # an abandoned creation is not a failure
                self._failed(error or self._timed_out())
        elif state is SlotState.RETIRED:
            # Disposing failed or timed out: the last resort, and a report for end().
            if error is None:
                timeout = self._options.dispose_timeout
                error = trio.TooSlowError(f"dispose took over dispose_timeout={timeout}s")
            logger.debug("%r: dispose of %r failed: %r", self, slot.resource, error)
            slot.destroy(self._options.destroy, self)
            self._owner._dispose_failed(error)
        elif state is SlotState.IDLE or state is SlotState.BUSY:
            # An open= resource whose context manager died while the resource was alive.
            logger.debug("%r: resource %r died: %r", self, slot.resource, error)
            self._owner._lost(slot)
        # DESTROYED: torn down on purpose, nothing failed.

    def slot_ended(self, slot: Slot) -> None:
        """A task is over."""
        self.alive.discard(slot)
        if not self.alive and self._tasks_done is not None:
            self._tasks_done.set()

    # ------------------------------------------------------------------ failures

    def _timed_out(self) -> AcquireTimeoutError:
        timeout = self._options.acquire_timeout
        return AcquireTimeoutError(f"acquire took over acquire_timeout={timeout}s")

    def _failed(self, error: BaseException) -> None:
        """A creation failed: bail, or schedule the next attempt after the backoff delay."""
        now = trio.current_time()
        self._counters.allocation_errors += 1
        self._failures += 1
        self.last_error = error
        logger.debug("%r: allocation failed (%d in a row): %r", self, self._failures, error)
        if self._should_bail(now):
            self._owner._bail(error)
            return
        self._retry_at = now + self._options.backoff.delay(self._failures)
        if not self._timer_running:
            self._timer_running = True
            self._supervisor.start_soon(self._retry_timer, name=f"{self!r} backoff")

    def _should_bail(self, now: float) -> bool:
        bail_after = self._options.bail_after
        return (
            not self.live
            and bail_after is not None
            and self.last_error is not None
            and now - self._started_at >= bail_after
        )

    async def _retry_timer(self) -> None:
        """Sleep out the backoff delay (or until the bail deadline), then allocate again."""
        bail_after = self._options.bail_after
        try:
            while True:
                wake = self._retry_at
                if not self.live and bail_after is not None:
                    wake = min(wake, self._started_at + bail_after)
                await trio.sleep_until(wake)
                if self._should_bail(trio.current_time()):
                    assert self.last_error is not None
                    self._owner._bail(self.last_error)
                    return
                if trio.current_time() >= self._retry_at:
                    break
        finally:
            self._timer_running = False
        self._owner._maybe_allocate()

    def check_invariants(self) -> None:
        """Assert the record is consistent (for tests)."""
        assert self.creating <= self.alive, "a creating slot has no task"
        for slot in self.creating:
            assert slot.state in (SlotState.CREATING, SlotState.ABANDONED), slot
        assert self._failures == 0 or self.last_error is not None
