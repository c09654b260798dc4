"""ResourcePool: a generic pool of resources (pool2's design, in Trio) — the façade.

Theory of operation
-------------------
The pool is five parts: :mod:`._options` (the validated, frozen options), :mod:`._slot` (one
resource, its :class:`~._slot.SlotState` and the resource task that creates and disposes of
it), :mod:`._allocator` (how many tasks to start, what they report, the backoff after failures,
``bail_after``), :mod:`._lending` (the idle stack, the lent map and the queue of waiters) and
this façade, which owns the pool's state and decides, synchronously, where each resource goes.

``allocated`` = idle + lent + being created, and never exceeds ``max``. An acquirer tries the
idle stack first and parks only if it is empty; a freed resource goes straight to the head
waiter; so idle resources exist only while nobody waits.

The pool's own state (:class:`_State`) is NEW → OPEN → ENDING → DESTROYED; BAILED (from OPEN or
ENDING, when no creation ever succeeded within ``bail_after``) refuses acquirers as ENDING does
but with :class:`PoolBailedError` (:meth:`ResourcePool._refusal` is the one place that tells it
apart), and also ends in DESTROYED. Only this class changes it. OPEN is the only state that
accepts new acquirers; OPEN and ENDING still serve those already accepted and allocate for
them. :meth:`ResourcePool._check_invariants` asserts all of the above (the tests call it at
every step).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar, final

import trio

from .._errors import (
    PoolBailedError,
    PoolDestroyedError,
    PoolEndingError,
)
from .._supervisor import LifetimeError, Supervisor
from ._allocator import Allocator
from ._backoff import Backoff
from ._checkout import AcquireContext, Checkout
from ._housekeeping import Housekeeper
from ._lending import Lending
from ._listeners import Listeners, Observed
from ._options import pool_options
from ._reset import resetter
from ._slot import Slot, SlotState
from ._stats import Counters, ResourcePoolStats

__all__ = ["ResourcePool", "ResourcePoolStats"]

logger = logging.getLogger("trio_pool.resource")

T = TypeVar("T")

_INF = float("inf")


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    BAILED = "bailed"
    ENDING = "ending"
    DESTROYED = "destroyed"


_DEAD = SlotState.DEAD
_SERVING = (_State.OPEN, _State.ENDING)  # states that still serve accepted acquirers


@final
class ResourcePool(Observed, Generic[T]):
    """A pool of reusable resources: database connections and anything like them.

    Give either ``acquire`` and ``dispose`` (async callables that create and close one
    resource), or ``open`` (a callable returning an async context manager that yields one
    resource; the resource then lives inside its own task, so resources that must be closed
    by the task that opened them pool naturally).

    The pool is an async context manager; its block is the pool's lifetime. Constructing it
    does no I/O. Leaving the block normally is :meth:`end`; leaving it with an exception
    destroys every resource promptly and lets the exception propagate as itself.

    Args:
        acquire: ``async () -> T``: create one resource.
        dispose: ``async (T) -> None``: close one resource gracefully.
        open: ``() -> AsyncContextManager[T]``: the structured alternative to
            ``acquire``/``dispose``.
        destroy: ``(T) -> None``: last-resort, synchronous teardown, called for
            :meth:`destroy`, when a dispose fails or times out, and when the pool is torn
            down by an exception.
        ping: ``async (T) -> None``: raises if the resource is dead; run before each hand-out.
        reset: ``async (T) -> None``: run in the pool's nursery on every release, before the
            resource is handed out again (bounded by ``ping_timeout``); if it raises or times
            out the resource is removed (counted in ``reset_failures_total``).
        acquire_timeout: bound on one creation (seconds; ``None``/``0``: none).
        dispose_timeout: bound on one dispose; on expiry ``destroy`` is called.
        ping_timeout: bound on one ping; expiry counts as a failed ping.
        capabilities: tags a :class:`Cluster` selects pools by.
        min: resources kept open, refilled after failures and eviction.
        max: cap on allocated resources (checked out + idle + being created).
        max_requests: cap on waiting acquirers (``None``: no cap); overflow raises
            :class:`PoolFullError`.
        request_timeout: bound on one acquirer's wait; :class:`RequestTimeoutError`.
        idle_timeout: idle resources older than this are disposed, never below ``min``.
        sync_interval: how often idle eviction and refill to ``min`` run.
        backoff: the retry schedule for failed creations.
        bail_after: if no creation has ever succeeded this long after the pool started, a
            failure makes the pool fail every waiting and later acquire with
            :class:`PoolBailedError`. ``0`` (default): the first such failure. ``None``:
            retry forever.
        max_lifetime: a resource older than this (each its own limit in [0.9, 1.0] x it) is
            retired when given back, or while idle (by the sweep, every ``sync_interval``);
            ``None`` (default): no limit.
        leak_timeout: a checkout held longer logs one WARNING naming its ``file:line`` and
            counts in ``leaks_total`` (checked by the sweep, timed from the first sweep that
            sees the checkout); ``None`` (default): no check.
        name: in the repr, the log lines and metrics; default ``"ResourcePool-N"``.

    Raises:
        InvalidArgumentError: an argument is out of its domain (the message names it).
    """

    def __init__(
        self,
        acquire: Callable[[], Awaitable[T]] | None = None,
        dispose: Callable[[T], Awaitable[object]] | None = None,
        *,
        open: Callable[[], AbstractAsyncContextManager[T]] | None = None,
        destroy: Callable[[T], object] | None = None,
        ping: Callable[[T], Awaitable[object]] | None = None,
        reset: Callable[[T], Awaitable[object]] | None = None,
        acquire_timeout: float | None = 30.0,
        dispose_timeout: float | None = 30.0,
        ping_timeout: float | None = 10.0,
        capabilities: Iterable[str] = (),
        min: int = 0,
        max: int = 10,
        max_requests: int | None = None,
        request_timeout: float | None = None,
        idle_timeout: float | None = 60.0,
        sync_interval: float = 10.0,
        backoff: Backoff | None = None,
        bail_after: float | None = 0.0,
        max_lifetime: float | None = None,
        leak_timeout: float | None = None,
        name: str | None = None,
    ) -> None:
        options = pool_options(
            acquire, dispose, open=open, destroy=destroy, ping=ping,
            acquire_timeout=acquire_timeout, dispose_timeout=dispose_timeout,
            ping_timeout=ping_timeout, capabilities=capabilities, min=min, max=max,
            max_requests=max_requests, request_timeout=request_timeout,
            idle_timeout=idle_timeout, sync_interval=sync_interval, backoff=backoff,
            bail_after=bail_after, max_lifetime=max_lifetime, leak_timeout=leak_timeout,
            name=name, reset=reset,
        )  # fmt: skip
        self._options = options
        self.capabilities: tuple[str, ...] = options.capabilities
        """The tags a :class:`Cluster` selects this pool by."""
        self.name: str = options.name
        """The pool's name, in its repr (hence its log lines) and its metrics."""
        self._counters = Counters()
        self._supervisor = Supervisor()
        self._allocator = Allocator(options, self, self._supervisor, self._counters)
        self._lending = Lending()
        self._housekeeper = keeper = Housekeeper(
            self, options, self._lending, self._allocator, self._counters
        )
        self._listeners = Listeners(self)
        self._checkout = Checkout(
            self, options, self._lending, self._allocator, keeper, self._counters,
            self._listeners, self.release,
        )  # fmt: skip
        self._resetter = resetter(self, options, self._lending, self._supervisor, self._counters)
        self._state = _State.NEW
        self._bail_error: BaseException | None = None
        self._ended: trio.Event | None = None  # made when the shutdown (end or abort) begins
        self._end_errors: list[BaseException] = []

    # ------------------------------------------------------------------ lifetime

    async def __aenter__(self) -> ResourcePool[T]:
        if self._state is _State.DESTROYED:
            raise PoolDestroyedError("Pool is destroyed: a pool's async with block runs once")
        await self._supervisor.enter()
        self._lending.clock = trio.lowlevel.current_clock()
        self._set_state(_State.OPEN)
        self._allocator.start()
        if self._housekeeper.needed:
            self._supervisor.start_soon(self._housekeeper.run, name=f"{self!r} sync")
        logger.debug("%r: started", self)
        self._maybe_allocate()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        await self._supervisor.exit(exc, graceful=self.end, abort=self._abort)
        return False

    def __repr__(self) -> str:
        return (
            f"<ResourcePool {self.name!r} {self._state.value} allocated={self._allocated()}"
            f"/{self._housekeeper.max} idle={len(self._lending.idle)}"
            f" queued={len(self._lending.waiters)}>"
        )

    @property
    def live(self) -> bool:
        """Whether an allocation has ever succeeded."""
        return self._allocator.live

    def statistics(self) -> ResourcePoolStats:
        """Return a snapshot of the pool's counts. O(1), not a checkpoint."""
        return ResourcePoolStats(
            min=self._housekeeper.min,
            max=self._housekeeper.max,
            allocated=self._allocated(),
            available=len(self._lending.idle),
            queued=len(self._lending.waiters),
            max_requests=self._options.max_requests,
            live=self._allocator.live,
            **self._counters.totals(),
        )

    def _allocated(self) -> int:
        lending = self._lending
        return lending.placed() + len(self._allocator.creating)

    # ------------------------------------------------------------------ acquiring

    def acquire(self) -> AbstractAsyncContextManager[T]:
        """``async with pool.acquire() as resource:``: check out a resource for the block.

        Waiters are served first come, first served. Entering is a checkpoint; it runs
        ``ping`` first when one is configured. Leaving the block releases the resource
        unless it was removed or destroyed inside the block.

        Raises:
            PoolFullError: ``max_requests`` acquirers already wait.
            RequestTimeoutError: no resource came within ``request_timeout``.
            PoolEndingError: :meth:`end` has begun.
            PoolDestroyedError: the pool has shut down.
            PoolBailedError: the pool gave up (see ``bail_after``).
        """
        return AcquireContext(self._checkout)

    async def checkout(self) -> T:
        """Take a resource; give it back with :meth:`release`. A checkpoint.

        Raises the same errors as :meth:`acquire`. Cancelling it while it waits leaves no
        trace; once it has returned, the caller owns the resource until it releases it.
        """
        return (await self._checkout.take()).resource  # type: ignore[no-any-return]

    def checkout_nowait(self) -> T:
        """Take an idle resource now; give it back with :meth:`release`. Not a checkpoint.

        No ``ping`` runs (it would have to wait).

        Raises:
            trio.WouldBlock: no resource is idle (nothing is queued or allocated for it).
            PoolEndingError, PoolDestroyedError, PoolBailedError: as :meth:`acquire`.
        """
        return self._checkout.take_nowait().resource  # type: ignore[no-any-return]

    def expire_all(self) -> None:
        """Retire every current resource: idle ones are disposed now, checked-out ones when
        they are given back, creations under way when they finish; ``min`` is refilled with
        new ones. For a failover: nothing opened before it is reused after. Not a checkpoint.
        """
        self._housekeeper.expire_all()
        self._maybe_allocate()

    def resize(self, *, min: int | None = None, max: int | None = None) -> None:
        """Change ``min`` and/or ``max`` at run time. Not a checkpoint.

        A lower ``max`` retires surplus idle resources now and checked-out ones as they are
        given back (``allocated`` may exceed the new ``max`` until then); a higher one serves
        waiters at once. A higher ``min`` opens resources now.

        Raises:
            InvalidArgumentError: a value is out of its domain, or ``max`` is below ``min``
                (nothing is changed).
        """
        keeper = self._housekeeper
        keeper.resize(keeper.min if min is None else min, keeper.max if max is None else max)
        self._maybe_allocate()

    def _set_state(self, state: _State) -> None:
        self._state = state
        self._checkout.open = state is _State.OPEN
        self._checkout.torn_down = state is _State.DESTROYED
        for spill in self._lending.spills if state is not _State.OPEN else ():
            spill.closed()  # its clusters' waiters may have nowhere left to wait

    def _refusal(self) -> BaseException | None:
        """Why a new acquirer is refused, or None while the pool is OPEN."""
        state = self._state
        if state is _State.OPEN:
            return None
        if state is _State.DESTROYED:
            return PoolDestroyedError("Pool is destroyed")
        if state is _State.BAILED:  # the one place that tells "bailed" apart
            error = PoolBailedError(
                "Pool bailed: no resource could be allocated within"
                f" bail_after={self._options.bail_after}s (last error: {self._bail_error!r})"
            )
            error.__cause__ = self._bail_error
            return error
        if state is _State.ENDING:
            return PoolEndingError("Pool is ending")
        return LifetimeError("use ResourcePool in an 'async with' block")

    def _accepting(self) -> bool:
        return self._state is _State.OPEN

    def _serving(self) -> bool:
        return self._state in _SERVING

    def _torn_down(self) -> bool:
        return self._state is _State.DESTROYED

    # ------------------------------------------------------------------ giving back

    def release(self, resource: T) -> None:
        """Give back a resource taken with :meth:`checkout`. Not a checkpoint.

        Raises:
            InvalidArgumentError: the resource is not checked out from this pool (foreign,
                or already released, removed or destroyed).
        """
        # Lending.take_back(), inlined for a resource that is lent (it explains the others).
        busy = self._lending.busy
        slot = busy.get(id(resource))
        if slot is not None and slot.resource is resource:
            del busy[id(resource)]
        else:
            slot = self._lending.take_back(resource, "release")  # raises
        if slot.held_since is not None:
            self._listeners.given_back(slot)
        if self._state is _State.DESTROYED:
            return  # already torn down with the pool; giving it back is a no-op
        if slot.state is _DEAD:
            self._settle()
        elif self._resetter is not None:
            self._resetter.begin(slot)  # it offers the slot once reset
        else:
            self._offer(slot)

    def remove(self, resource: T) -> None:
        """Take a resource (checked out or idle) out of the pool; ``dispose`` runs in the
        background. Not a checkpoint. Inside ``async with pool.acquire() as r``, leaving the
        block then does not release ``r``.

        Raises:
            InvalidArgumentError: the pool does not own the resource (foreign, or already
                removed or destroyed).
        """
        slot = self._lending.take_back(resource, "remove", idle_too=True)
        self._listeners.given_back(slot)
        if self._state is not _State.DESTROYED:
            self._retire(slot, graceful=True)

    def destroy(self, resource: T) -> None:
        """Take a resource (checked out or idle) out of the pool ungracefully: ``destroy`` is
        called (synchronously), ``dispose`` is not. Not a checkpoint.

        Raises:
            InvalidArgumentError: the pool does not own the resource (foreign, or already
                removed or destroyed).
        """
        slot = self._lending.take_back(resource, "destroy", idle_too=True)
        self._listeners.given_back(slot)
        if self._state is not _State.DESTROYED:
            self._retire(slot, graceful=False)

    def _offer(self, slot: Slot) -> None:
        """A resource is free: the head waiter gets it, else it goes idle (or, unless open,
        is disposed). One past its lifetime, expired or over ``max`` is retired instead."""
        keeper, lending = self._housekeeper, self._lending
        now = None
        why = None
        if keeper.may_expire:
            assert lending.clock is not None  # nothing is offered before the pool is entered
            now = lending.clock.current_time()  # read once: give() stamps an idle slot with it
            if (
                slot.expires_at <= now
                or slot.generation != self._allocator.generation
                or keeper.shrunk
            ):  # the rare case: expired() says why, if at all
                why = keeper.expired(slot, now=now)
        if why is not None:
            keeper.expire(slot, why)
        elif not lending.give(slot, may_idle=self._state is _State.OPEN, now=now):
            self._retire(slot, graceful=True)
        if self._lending.drained is not None:  # only while ending
            self._lending.check_drained()

    def _retire(self, slot: Slot, *, graceful: bool) -> None:
        """Tell the slot's task to dispose (or, ungracefully, destroy) it; refill. (A DEAD
        slot's task is over: removing it only frees its place.)"""
        if not graceful:
            slot.destroy(self._options.destroy, self)
        elif slot.state is not SlotState.DEAD:
            slot.retire()
        self._settle()

    def _settle(self) -> None:
        """A place was freed: refill, and see whether an ending pool is drained."""
        self._maybe_allocate()
        self._lending.check_drained()

    # ------------------------------------------------------------------ the allocator's owner

    def _maybe_allocate(self, arriving: int = 0) -> None:
        """Start as many resource tasks as waiters (plus ``arriving`` about to park) and,
        while open, ``min`` need. Not a checkpoint."""
        state = self._state
        if state is not _State.OPEN and state is not _State.ENDING:
            return
        lending = self._lending
        creating = len(self._allocator.creating)
        # lending.placed(), inlined: every acquirer that parks runs this.
        allocated = len(lending.idle) + len(lending.busy) + len(lending.resetting) + creating
        keeper = self._housekeeper
        if allocated >= keeper.max:
            return  # full, the common case under contention: nothing may start
        wanted = lending.demand() + arriving - creating
        if state is _State.OPEN:
            wanted = max(wanted, keeper.min - allocated)
        self._allocator.allocate(wanted, allocated, keeper.max)

    def _place(self, slot: Slot) -> None:
        self._offer(slot)
        self._maybe_allocate()

    def _lost(self, slot: Slot) -> None:
        if slot.state is SlotState.IDLE:
            self._lending.drop_idle(slot)
            slot.die()
            self._maybe_allocate()
        else:
            slot.die()  # the holder's release will just drop it

    def _dispose_failed(self, error: BaseException) -> None:
        if self._ended is not None:
            self._end_errors.append(error)

    def _bail(self, error: BaseException) -> None:
        if self._state not in _SERVING:
            return
        self._set_state(_State.BAILED)
        self._bail_error = error
        logger.debug("%r: bailing: no allocation ever succeeded (%r)", self, error)
        self._lending.waiters.fail_all(self._checkout.refusal)
        self._lending.check_drained()

    # ------------------------------------------------------------------ housekeeping

    def _check_invariants(self) -> None:
        """Assert that the bookkeeping is consistent (for tests; O(allocated + queued))."""
        _check_invariants(self, self._lending)

    # ------------------------------------------------------------------ shutting down

    async def end(self) -> list[BaseException]:
        """Shut the pool down gracefully and return the errors its disposals raised.

        New acquires are refused at once (:class:`PoolEndingError`); acquirers already
        waiting are still served; then it waits for every checked-out resource to come
        back, disposes all of them, and from then on acquires raise
        :class:`PoolDestroyedError`. A checkpoint. The shutdown runs in the pool's own task,
        so cancelling ``end()`` stops the wait, not the shutdown. A second call waits for
        the same shutdown and returns ``[]``.
        """
        if self._ended is not None:
            await self._ended.wait()
            return []
        self._ended = trio.Event()
        if self._state is _State.NEW or not self._supervisor.running:
            self._set_state(_State.DESTROYED)
            self._ended.set()
            await trio.lowlevel.checkpoint()
            return []
        if self._state is _State.OPEN:
            self._set_state(_State.ENDING)  # a bailed pool stays BAILED: it refuses as such
        logger.debug("%r: ending", self)
        drained = self._lending.start_draining()
        self._supervisor.start_soon(self._shutdown, drained, name=f"{self!r} end")
        await self._ended.wait()
        errors, self._end_errors = self._end_errors, []
        return errors

    async def _shutdown(self, drained: trio.Event) -> None:
        await drained.wait()
        # Once drained no new task starts: end what is left, then wait for every task.
        self._allocator.abandon_creating(forget=False)  # nobody waits for them any more
        for slot in self._lending.take_all_idle():
            self._retire(slot, graceful=True)
        await self._allocator.tasks_ended()
        self._set_state(_State.DESTROYED)
        self._housekeeper.stop()
        assert self._ended is not None
        self._ended.set()
        logger.debug("%r: ended", self)

    def _abort(self) -> None:
        """Tear everything down at once (the block raised): destroy, never dispose."""
        _tear_down(self, self._lending)


def _tear_down(pool: ResourcePool[Any], lending: Lending) -> None:
    """:meth:`ResourcePool._abort`, outside the class to keep it short."""
    logger.debug("%r: destroying everything", pool)
    pool._set_state(_State.DESTROYED)
    lending.waiters.fail_all(lambda _: PoolDestroyedError("Pool is destroyed"))
    lending.check_drained()
    for slot in (*lending.take_all_idle(), *lending.busy.values(), *lending.resetting.values()):
        slot.destroy(pool._options.destroy, pool)
    pool._allocator.abandon_creating(forget=True)
    for slot in pool._allocator.alive:
        # The supervisor's cancellation reaches every task but a late open= resource
        # disposing under a shield; cancelling each scope reaches that one too.
        if slot.scope is not None:
            slot.scope.cancel()
    if pool._ended is None:
        pool._ended = trio.Event()
    pool._ended.set()
    # The supervisor now cancels every resource task: open= context managers exit
    # under cancellation, nothing is disposed.


def _check_invariants(pool: ResourcePool[Any], lending: Lending) -> None:
    """:meth:`ResourcePool._check_invariants`, outside the class to keep it short."""
    stats = pool.statistics()
    assert stats.allocated == lending.placed() + len(pool._allocator.creating), stats
    assert (stats.available, stats.queued) == (len(lending.idle), len(lending.waiters))
    if pool._state is _State.DESTROYED:
        assert not lending.idle and not lending.waiters, "destroyed, yet in use"  # noqa: PT018
        return
    # Over max only after a resize down, and then nothing idles until it is back under.
    assert stats.allocated <= stats.max or not lending.idle, f"over max: {stats}"
    assert (pool._state is _State.BAILED) == (pool._bail_error is not None)
    assert all(slot in pool._allocator.alive for slot in lending.idle), "idle, no task"
    lending.check_invariants()
    pool._allocator.check_invariants()
