"""ResourcePool: a generic pool of resources (pool2's design, in Trio).

Theory of operation
-------------------
Every resource lives in its own *resource task* in the pool's nursery. The task creates the
resource (``acquire()``, or entering ``open()``'s context manager), hands it to the pool,
parks until the pool retires it, then disposes of it (``dispose()``, or leaving ``open()``'s
block). A resource that is being created therefore belongs to the pool, never to the
acquirer whose demand caused it: a cancelled acquirer cannot orphan it (pool2#30,
httpcore#1093), and a timed-out creation ends with its task, so ``allocated`` can never
exceed ``max``.

All bookkeeping lives in plain containers that only synchronous methods change — decide and
record with no ``await`` in between, then do I/O:

* ``_idle``: a stack of idle slots (LIFO hand-out, so resources nobody needs age out);
* ``_busy``: checked-out slots by ``id(resource)`` (resources need not be hashable);
* ``_creating``: the number of resource tasks still creating;
* ``_waiters``: parked acquirers, FIFO, in an ``OrderedDict`` for O(1) removal.

An acquirer that finds nothing idle parks with ``wait_task_rescheduled``. Whoever frees a
resource (a release, a finished creation) hands it straight to the head waiter and
reschedules that task: the hand-off is atomic, so a resource is never lost to a waiter that
is being cancelled (aiohttp#9670) — a waiter cancelled while parked has already been removed
by its abort callback, and the resource goes to the next one. Idle resources exist only
while nobody waits.

Failed creations are retried one at a time on the ``Backoff`` schedule by a timer task
(no busy loop, no thundering herd against a dead backend); ``bail_after`` turns a pool that
never once succeeded into a fast failure. A periodic sync task evicts idle resources older
than ``idle_timeout`` (never below ``min``) and refills to ``min``.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar

import attrs
import trio

from .._errors import (
    AcquireTimeoutError,
    InvalidArgumentError,
    PoolBailedError,
    PoolDestroyedError,
    PoolEndingError,
    PoolFullError,
    RequestTimeoutError,
)
from .._supervisor import LifetimeError, Supervisor
from .._validate import check_count, check_positive, check_timeout
from ._backoff import Backoff

__all__ = ["ResourcePool", "ResourcePoolStats"]

logger = logging.getLogger("trio_pool.resource")

T = TypeVar("T")

_INF = math.inf

# A ping interrupted by the acquirer's request_timeout (not a verdict on the resource).
_CUT_SHORT = trio.TooSlowError("ping cut short by request_timeout")


@attrs.frozen
class ResourcePoolStats:
    """A snapshot of a :class:`ResourcePool`, returned by :meth:`ResourcePool.statistics`."""

    min: int
    """Resources kept open (the ``min`` option)."""
    max: int
    """The cap on :attr:`allocated` (the ``max`` option)."""
    allocated: int
    """Resources checked out, idle or being created."""
    available: int
    """Idle resources, ready to be handed out at once."""
    queued: int
    """Acquirers waiting for a resource."""
    max_requests: int | None
    """The cap on :attr:`queued`, or None for no cap (the ``max_requests`` option)."""
    live: bool
    """Whether an allocation has ever succeeded."""


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    ENDING = "ending"
    DESTROYED = "destroyed"


@attrs.define(eq=False, slots=True)
class _Slot:
    """One resource and its task's state."""

    resource: Any = None
    scope: trio.CancelScope | None = None
    retired: trio.Event = attrs.field(factory=trio.Event)
    idle_since: float = 0.0
    lease: int = 0  # bumped at every hand-out; tells an acquire block its own checkout apart
    graceful: bool = True  # dispose when retired (False: destroyed, no dispose)
    abandoned: bool = False  # creation cancelled by end(): not an allocation failure
    dead: bool = False  # its task ended while the resource was checked out
    disposed: bool = False  # dispose (or leaving open()'s block) completed
    destroy_called: bool = False


@attrs.define(eq=False, slots=True)
class _Waiter:
    """A parked acquirer; ``slot`` or ``error`` is filled in before it is rescheduled."""

    task: trio.lowlevel.Task
    slot: _Slot | None = None
    error: BaseException | None = None


class ResourcePool(Generic[T]):
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
    ) -> None:
        if open is not None:
            if acquire is not None or dispose is not None:
                raise InvalidArgumentError(
                    "invalid arguments: give either open or acquire and dispose, not both"
                )
            if not callable(open):
                raise InvalidArgumentError(f"invalid open: expected a callable, got {open!r}")
        elif acquire is None or dispose is None:
            missing = "dispose" if acquire is not None else "acquire"
            raise InvalidArgumentError(
                f"invalid {missing}: give acquire and dispose together, or open"
            )
        for name, fn in (("acquire", acquire), ("dispose", dispose), ("destroy", destroy),
                         ("ping", ping)):  # fmt: skip
            if fn is not None and not callable(fn):
                raise InvalidArgumentError(f"invalid {name}: expected a callable, got {fn!r}")
        self._acquire = acquire
        self._dispose = dispose
        self._open = open
        self._destroy = destroy
        self._ping = ping
        self._acquire_timeout = check_timeout("acquire_timeout", acquire_timeout)
        self._dispose_timeout = check_timeout("dispose_timeout", dispose_timeout)
        self._ping_timeout = check_timeout("ping_timeout", ping_timeout)
        self._request_timeout = check_timeout("request_timeout", request_timeout)
        self._idle_timeout = check_timeout("idle_timeout", idle_timeout)
        self._sync_interval = check_positive("sync_interval", sync_interval)
        tags = () if isinstance(capabilities, str) else tuple(capabilities)
        if isinstance(capabilities, str) or not all(isinstance(tag, str) for tag in tags):
            raise InvalidArgumentError(
                f"invalid capabilities: expected a sequence of strings, got {capabilities!r}"
            )
        self.capabilities: tuple[str, ...] = tags
        """The tags a :class:`Cluster` selects this pool by."""
        self._min: int = check_count("min", min)  # type: ignore[assignment]
        self._max: int = check_count("max", max, minimum=1)  # type: ignore[assignment]
        if self._max < self._min:
            raise InvalidArgumentError(f"invalid max: {max!r} is below min {min!r}")
        self._max_requests = check_count("max_requests", max_requests, allow_none=True)
        if backoff is None:
            backoff = Backoff()
        elif not isinstance(backoff, Backoff):
            raise InvalidArgumentError(f"invalid backoff: expected a Backoff, got {backoff!r}")
        self._backoff = backoff
        # Here 0 is a real value (bail at the first failure), not "no limit" as elsewhere;
        # None and infinity mean never.
        self._bail_after = check_timeout("bail_after", bail_after)
        if bail_after == 0:
            self._bail_after = 0.0

        self._supervisor = Supervisor()
        self._state = _State.NEW
        self._idle: list[_Slot] = []
        self._busy: dict[int, _Slot] = {}
        self._creating: set[_Slot] = set()
        self._waiters: OrderedDict[_Waiter, None] = OrderedDict()
        self._alive: set[_Slot] = set()  # slots whose resource task runs, in any phase
        self._live = False
        self._started_at = 0.0
        self._failures = 0  # consecutive failed creations
        self._last_error: BaseException | None = None
        self._retry_at = -_INF
        self._timer_running = False
        self._bail_error: BaseException | None = None
        self._sync_scope: trio.CancelScope | None = None
        self._drained: trio.Event | None = None  # set when ending and nothing is out
        self._tasks_done: trio.Event | None = None  # set when drained and no task is left
        self._ended: trio.Event | None = None
        self._end_errors: list[BaseException] = []

    # ------------------------------------------------------------------ lifetime

    async def __aenter__(self) -> ResourcePool[T]:
        if self._state is _State.DESTROYED:
            raise PoolDestroyedError("Pool is destroyed: a pool's async with block runs once")
        await self._supervisor.enter()
        self._state = _State.OPEN
        self._started_at = trio.current_time()
        if self._idle_timeout is not None:
            self._supervisor.start_soon(self._sync_task, name=f"{self!r} sync")
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
            f"<ResourcePool {self._state.value} allocated={self._allocated()}/{self._max}"
            f" idle={len(self._idle)} queued={len(self._waiters)}>"
        )

    @property
    def live(self) -> bool:
        """Whether an allocation has ever succeeded."""
        return self._live

    def statistics(self) -> ResourcePoolStats:
        """Return a snapshot of the pool's counts. O(1), not a checkpoint."""
        return ResourcePoolStats(
            min=self._min,
            max=self._max,
            allocated=self._allocated(),
            available=len(self._idle),
            queued=len(self._waiters),
            max_requests=self._max_requests,
            live=self._live,
        )

    def _allocated(self) -> int:
        return len(self._idle) + len(self._busy) + len(self._creating)

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
        return _AcquireContext(self)

    async def checkout(self) -> T:
        """Take a resource; give it back with :meth:`release`. A checkpoint.

        Raises the same errors as :meth:`acquire`. Cancelling it while it waits leaves no
        trace; once it has returned, the caller owns the resource until it releases it.
        """
        return (await self._checkout()).resource  # type: ignore[no-any-return]

    async def _checkout(self) -> _Slot:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_accepting()
        # request_timeout bounds the caller's whole wait: queueing and pinging.
        deadline = self._wait_deadline()
        if self._idle:
            slot = self._lend(self._idle.pop())
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            if self._max_requests is not None and len(self._waiters) >= self._max_requests:
                raise PoolFullError("Pool is full")
            slot = await self._wait(deadline)
        # The pool may have been torn down between handing the slot over and this task
        # running again; then the resource was destroyed with the rest.
        self._check_not_torn_down(slot)
        if self._ping is not None:
            slot = await self._pinged(slot, deadline)
        return slot

    def _check_not_torn_down(self, slot: _Slot) -> None:
        if self._state is _State.DESTROYED:
            self._busy.pop(id(slot.resource), None)
            raise PoolDestroyedError("Pool is destroyed")

    def _accepting(self) -> bool:
        return self._state is _State.OPEN and self._bail_error is None

    def _check_accepting(self) -> None:
        if self._accepting():
            return
        if self._state is _State.DESTROYED:
            raise PoolDestroyedError("Pool is destroyed")
        if self._bail_error is not None:
            raise self._bailed()
        if self._state is _State.ENDING:
            raise PoolEndingError("Pool is ending")
        raise LifetimeError("use ResourcePool in an 'async with' block")

    def _wait_deadline(self) -> float:
        if self._request_timeout is None:
            return _INF
        return trio.current_time() + self._request_timeout

    async def _wait(
        self, deadline: float, *, front: bool = False, replacing: _Slot | None = None
    ) -> _Slot:
        """Park until a slot is handed over.

        ``front`` and ``replacing`` serve an acquirer whose ping failed: it keeps its place
        at the head of the queue, and gives back the failed slot only once it is queued, so
        the pool never sees a moment with nobody holding or waiting (which would let end()
        finish under it) and counts its demand when replacing the slot.
        """
        waiter = _Waiter(trio.lowlevel.current_task())
        self._waiters[waiter] = None
        if front:
            self._waiters.move_to_end(waiter, last=False)
        if replacing is not None:
            self._remove_busy(replacing, graceful=True)
        self._maybe_allocate()

        def abort(_: object) -> trio.lowlevel.Abort:
            # Still parked, so nothing was handed to it: removing it loses nothing.
            del self._waiters[waiter]
            self._check_drained()
            return trio.lowlevel.Abort.SUCCEEDED

        if deadline == _INF:  # the common case; a cancel scope costs a little on a hot path
            await trio.lowlevel.wait_task_rescheduled(abort)
        else:
            with trio.CancelScope(deadline=deadline) as scope:
                await trio.lowlevel.wait_task_rescheduled(abort)
            if scope.cancelled_caught:
                raise self._request_timed_out()
        if waiter.error is not None:
            raise waiter.error
        assert waiter.slot is not None
        return waiter.slot

    def _request_timed_out(self) -> RequestTimeoutError:
        return RequestTimeoutError(f"no resource within request_timeout={self._request_timeout}s")

    async def _pinged(self, slot: _Slot, deadline: float) -> _Slot:
        """Ping ``slot`` and return it, or replace it (keeping the queue place) until one
        passes. ``deadline`` is the acquirer's request deadline."""
        while True:
            failure = await self._ping_once(slot, deadline)
            if failure is None:
                self._check_not_torn_down(slot)  # torn down mid-ping
                return slot
            logger.debug("%r: ping failed (%r); replacing the resource", self, failure)
            if failure is _CUT_SHORT or self._idle or not self._serves_accepted():
                self._remove_busy(slot, graceful=True)
                if failure is _CUT_SHORT:
                    raise self._request_timed_out()
                if not self._idle:
                    self._check_accepting()  # raises why this acquirer cannot be served
                slot = self._lend(self._idle.pop())
            else:
                slot = await self._wait(deadline, front=True, replacing=slot)
                self._check_not_torn_down(slot)

    async def _ping_once(self, slot: _Slot, deadline: float) -> BaseException | None:
        """Run one ping; return None if it passed, else why not (``_CUT_SHORT`` when the
        request deadline interrupted it)."""
        assert self._ping is not None
        ping_deadline = _deadline_after(self._ping_timeout)
        try:
            with trio.CancelScope(deadline=min(ping_deadline, deadline)) as scope:
                await self._ping(slot.resource)
        except Exception as exc:
            return exc
        except BaseException:
            # Interrupted mid-ping by the caller: the resource's state is unknown, so it goes.
            self._remove_busy(slot, graceful=True)
            raise
        if not scope.cancelled_caught:
            return None
        if ping_deadline > deadline:
            return _CUT_SHORT
        return trio.TooSlowError(f"ping took over ping_timeout={self._ping_timeout}s")

    def _serves_accepted(self) -> bool:
        """Whether an acquirer accepted earlier may still be served (also while ending)."""
        return self._state in (_State.OPEN, _State.ENDING) and self._bail_error is None

    def _lend(self, slot: _Slot) -> _Slot:
        slot.lease += 1
        self._busy[id(slot.resource)] = slot
        return slot

    # ------------------------------------------------------------------ giving back

    def release(self, resource: T) -> None:
        """Give back a resource taken with :meth:`checkout`. Not a checkpoint.

        Raises:
            InvalidArgumentError: the resource is not checked out from this pool (foreign,
                or already released, removed or destroyed).
        """
        slot = self._take_busy(resource, "release")
        if slot is None:
            return
        if slot.dead:
            self._maybe_allocate()
            self._check_drained()
        else:
            self._offer(slot)

    def remove(self, resource: T) -> None:
        """Take a checked-out resource out of the pool; ``dispose`` runs in the background.

        Not a checkpoint. Inside ``async with pool.acquire() as r``, leaving the block then
        does not release ``r``.

        Raises:
            InvalidArgumentError: the resource is not checked out from this pool.
        """
        slot = self._take_busy(resource, "remove")
        if slot is not None:
            self._retire(slot, graceful=True)

    def destroy(self, resource: T) -> None:
        """Take a checked-out resource out of the pool ungracefully: ``destroy`` is called
        (synchronously), ``dispose`` is not. Not a checkpoint.

        Raises:
            InvalidArgumentError: the resource is not checked out from this pool.
        """
        slot = self._take_busy(resource, "destroy")
        if slot is not None:
            self._retire(slot, graceful=False)

    def _take_busy(self, resource: T, verb: str) -> _Slot | None:
        slot = self._busy.get(id(resource))
        if slot is None or slot.resource is not resource:
            raise InvalidArgumentError(
                f"cannot {verb} {resource!r}: it is not checked out from this pool"
            )
        del self._busy[id(resource)]
        if self._state is _State.DESTROYED:
            return None  # already torn down with the pool; giving it back is a no-op
        return slot

    def _remove_busy(self, slot: _Slot, *, graceful: bool) -> None:
        if self._busy.get(id(slot.resource)) is slot:
            del self._busy[id(slot.resource)]
            if slot.dead:
                self._maybe_allocate()
            else:
                self._retire(slot, graceful=graceful)

    def _offer(self, slot: _Slot) -> None:
        """A resource is free: the head waiter gets it, else it goes idle (or, while ending,
        is disposed)."""
        if self._waiters:
            waiter, _ = self._waiters.popitem(last=False)
            waiter.slot = self._lend(slot)
            trio.lowlevel.reschedule(waiter.task)
        elif self._state is _State.OPEN and self._bail_error is None:
            slot.idle_since = trio.current_time()
            self._idle.append(slot)
        else:
            self._retire(slot, graceful=True)
        self._check_drained()

    def _retire(self, slot: _Slot, *, graceful: bool) -> None:
        """Tell the slot's task to dispose (or, ungracefully, destroy) it; refill."""
        slot.graceful = graceful
        if graceful:
            slot.retired.set()
        else:
            self._call_destroy(slot)
            assert slot.scope is not None
            slot.scope.cancel()
        self._maybe_allocate()
        self._check_drained()

    def _call_destroy(self, slot: _Slot) -> None:
        if self._destroy is None or slot.destroy_called:
            return
        slot.destroy_called = True
        try:
            self._destroy(slot.resource)
        except Exception:
            logger.exception("%r: destroy(%r) raised", self, slot.resource)

    # ------------------------------------------------------------------ allocation

    def _maybe_allocate(self) -> None:
        """Start as many resource tasks as waiters (and, while open, ``min``) need."""
        if self._state not in (_State.OPEN, _State.ENDING) or self._bail_error is not None:
            return
        if trio.current_time() < self._retry_at:
            return  # backing off; the timer task calls again when it is time
        allocated = self._allocated()
        wanted = len(self._waiters) - len(self._creating)
        if self._state is _State.OPEN:
            wanted = max(wanted, self._min - allocated)
        room = self._max - allocated
        if self._failures:
            room = min(room, 1 - len(self._creating))  # one probe at a time after a failure
        for _ in range(min(wanted, room)):
            slot = _Slot()
            self._creating.add(slot)
            self._alive.add(slot)
            self._supervisor.start_soon(self._resource_task, slot, name=f"{self!r} resource")

    async def _resource_task(self, slot: _Slot) -> None:
        """One resource's whole life: create, hand over, park until retired, dispose."""
        try:
            if self._open is not None:
                await self._run_opened(slot)
            else:
                await self._run_acquired(slot)
        finally:
            if slot.retired.is_set() and not slot.disposed:
                # Its dispose was cut short (it failed, timed out, or the pool was torn
                # down): the destroy callback is the last resort.
                self._call_destroy(slot)
            self._alive.discard(slot)
            if not self._alive and self._tasks_done is not None:
                self._tasks_done.set()

    async def _run_acquired(self, slot: _Slot) -> None:
        """The acquire/dispose form: one cancel scope per phase, so a creation that ran
        past its deadline still gets a dispose with a deadline of its own."""
        assert self._acquire is not None
        assert self._dispose is not None
        deadline = _deadline_after(self._acquire_timeout)
        with trio.CancelScope(deadline=deadline) as slot.scope:
            try:
                resource = await self._acquire()
            except Exception as exc:
                self._task_failed(slot, exc)
                return
        if slot.scope.cancelled_caught:
            self._task_failed(slot, None)
            return
        if self._created(slot, resource, deadline):
            with trio.CancelScope() as slot.scope:  # destroy() cancels it
                await slot.retired.wait()
        if not slot.graceful:
            return
        logger.debug("%r: disposing %r", self, resource)
        with trio.CancelScope(deadline=_deadline_after(self._dispose_timeout)) as slot.scope:
            try:
                await self._dispose(resource)
                slot.disposed = True
            except Exception as exc:
                self._task_failed(slot, exc)
        if slot.scope.cancelled_caught:
            self._task_failed(slot, None)

    async def _run_opened(self, slot: _Slot) -> None:
        """The open= form: the context manager's exit must happen inside every scope its
        entry was inside, so both scopes enclose all of it: ``creation`` carries the
        acquire_timeout, ``slot.scope`` (inside it) is what destroy() and end() cancel and
        what carries the dispose_timeout. A creation that ignored its deadline returns into
        a ``creation`` scope that has fired for good; shielding ``slot.scope`` then lets the
        late resource's exit run as a real dispose, bounded by its own deadline (a teardown
        cancels ``slot.scope`` directly, shield or not)."""
        assert self._open is not None
        deadline = _deadline_after(self._acquire_timeout)
        with (
            trio.CancelScope(deadline=deadline) as creation,
            trio.CancelScope() as slot.scope,
        ):
            try:
                async with self._open() as resource:
                    if self._created(slot, resource, deadline):
                        creation.deadline = _INF
                        await slot.retired.wait()
                        logger.debug("%r: disposing %r", self, resource)
                    elif slot.graceful:
                        slot.scope.shield = True
                    slot.scope.deadline = _deadline_after(self._dispose_timeout)
                slot.disposed = slot.graceful
            except Exception as exc:
                self._task_failed(slot, exc)
        if creation.cancelled_caught or slot.scope.cancelled_caught:
            self._task_failed(slot, None)

    def _created(self, slot: _Slot, resource: Any, deadline: float) -> bool:
        """The task has a resource: hand it over. False if it is unwanted or late."""
        slot.resource = resource
        self._creating.discard(slot)
        if self._state is _State.DESTROYED:
            # The pool was torn down while this creation ignored its cancellation: the
            # resource arrives to nobody, so it gets the same treatment as the rest.
            slot.graceful = False
            self._call_destroy(slot)
            return False
        late = trio.current_time() >= deadline
        if late or slot.abandoned:
            # Either the creation ignored its deadline (it is over: dispose, and count a
            # failure) or end() no longer needs it.
            if late:
                self._creation_failed(self._acquire_timed_out())
            slot.retired.set()  # retired from birth: a failing dispose is reported as such
            return False
        self._live = True
        self._failures = 0
        self._retry_at = -_INF
        logger.debug("%r: created %r", self, resource)
        self._offer(slot)
        self._maybe_allocate()
        return True

    def _acquire_timed_out(self) -> AcquireTimeoutError:
        return AcquireTimeoutError(f"acquire took over acquire_timeout={self._acquire_timeout}s")

    def _task_failed(self, slot: _Slot, exc: BaseException | None) -> None:
        """The resource task ended abnormally: ``exc`` raised, or its deadline expired."""
        if slot in self._creating:
            self._creating.discard(slot)
            if slot.abandoned:
                return
            self._creation_failed(exc if exc is not None else self._acquire_timed_out())
        elif slot.retired.is_set() or not slot.graceful:
            # Disposing failed or timed out: the last resort, and a report for end().
            if not slot.graceful:
                return  # destroyed on purpose: no dispose ran, nothing failed
            error = (
                exc
                if exc is not None
                else trio.TooSlowError(
                    f"dispose took over dispose_timeout={self._dispose_timeout}s"
                )
            )
            logger.debug("%r: dispose of %r failed: %r", self, slot.resource, error)
            self._call_destroy(slot)
            if self._state is not _State.OPEN:
                self._end_errors.append(error)
        else:
            # An open= resource whose context manager died while the resource was alive.
            logger.debug("%r: resource %r died: %r", self, slot.resource, exc)
            self._forget(slot)

    def _forget(self, slot: _Slot) -> None:
        if slot in self._idle:
            self._idle.remove(slot)
        elif self._busy.get(id(slot.resource)) is slot:
            slot.dead = True  # the holder's release will just drop it
            return
        self._maybe_allocate()

    def _creation_failed(self, exc: BaseException) -> None:
        now = trio.current_time()
        self._failures += 1
        self._last_error = exc
        logger.debug("%r: allocation failed (%d in a row): %r", self, self._failures, exc)
        if self._should_bail(now):
            self._bail()
            return
        self._retry_at = now + self._backoff.delay(self._failures)
        if not self._timer_running:
            self._timer_running = True
            self._supervisor.start_soon(self._retry_timer, name=f"{self!r} backoff")

    def _should_bail(self, now: float) -> bool:
        return (
            not self._live
            and self._bail_after is not None
            and self._last_error is not None
            and now - self._started_at >= self._bail_after
        )

    async def _retry_timer(self) -> None:
        """Sleep out the backoff delay (or until the bail deadline), then allocate again."""
        try:
            while True:
                wake = self._retry_at
                if not self._live and self._bail_after is not None:
                    wake = min(wake, self._started_at + self._bail_after)
                await trio.sleep_until(wake)
                if self._should_bail(trio.current_time()):
                    self._bail()
                    return
                if trio.current_time() >= self._retry_at:
                    break
        finally:
            self._timer_running = False
        self._maybe_allocate()

    def _bail(self) -> None:
        if self._bail_error is not None:
            return
        self._bail_error = self._last_error
        logger.debug("%r: bailing: no allocation ever succeeded (%r)", self, self._last_error)
        self._fail_waiters(self._bailed)

    def _bailed(self) -> PoolBailedError:
        error = PoolBailedError(
            f"Pool bailed: no resource could be allocated within bail_after={self._bail_after}s"
            f" (last error: {self._bail_error!r})"
        )
        error.__cause__ = self._bail_error
        return error

    def _fail_waiters(self, make_error: Callable[[], BaseException]) -> None:
        while self._waiters:
            waiter, _ = self._waiters.popitem(last=False)
            waiter.error = make_error()
            trio.lowlevel.reschedule(waiter.task)
        self._check_drained()

    # ------------------------------------------------------------------ housekeeping

    async def _sync_task(self) -> None:
        """Every ``sync_interval``: evict stale idle resources, then refill to ``min``.

        (Refills after failures and removals happen at once; this catches evictions.)
        """
        with trio.CancelScope() as self._sync_scope:
            while True:
                await trio.sleep(self._sync_interval)
                self._evict_idle()
                self._maybe_allocate()

    def _evict_idle(self) -> None:
        if self._idle_timeout is None or self._state is not _State.OPEN:
            return
        cutoff = trio.current_time() - self._idle_timeout
        spare = self._allocated() - self._min
        evicted = 0
        # The stack's bottom holds the longest-idle resources.
        while evicted < spare and evicted < len(self._idle):
            if self._idle[evicted].idle_since > cutoff:
                break
            evicted += 1
        stale, self._idle[:evicted] = self._idle[:evicted], []
        for slot in stale:
            logger.debug("%r: evicting idle %r", self, slot.resource)
            self._retire(slot, graceful=True)

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
            self._state = _State.DESTROYED
            self._ended.set()
            await trio.lowlevel.checkpoint()
            return []
        self._state = _State.ENDING
        self._drained = trio.Event()
        logger.debug("%r: ending", self)
        self._check_drained()
        self._supervisor.start_soon(self._shutdown, name=f"{self!r} end")
        await self._ended.wait()
        errors, self._end_errors = self._end_errors, []
        return errors

    async def _shutdown(self) -> None:
        assert self._drained is not None
        await self._drained.wait()
        for slot in list(self._creating):
            slot.abandoned = True  # nobody waits for it any more
            if slot.scope is not None:
                slot.scope.cancel()
        idle, self._idle = self._idle, []
        for slot in idle:
            self._retire(slot, graceful=True)
        if self._alive:
            # Made only now: while waiters were still served, every resource task could end
            # for a moment (a failed creation backing off) and more start later, so an event
            # made earlier could already be set with tasks alive (end() returned before
            # their disposes ran). Once drained, no new task starts.
            self._tasks_done = trio.Event()
            await self._tasks_done.wait()
        self._finish()

    def _check_drained(self) -> None:
        if self._drained is not None and not self._waiters and not self._busy:
            self._drained.set()

    def _finish(self) -> None:
        self._state = _State.DESTROYED
        if self._sync_scope is not None:
            self._sync_scope.cancel()
        if self._ended is not None:
            self._ended.set()
        logger.debug("%r: ended", self)

    def _abort(self) -> None:
        """Tear everything down at once (the block raised): destroy, never dispose."""
        logger.debug("%r: destroying everything", self)
        self._state = _State.DESTROYED
        self._fail_waiters(lambda: PoolDestroyedError("Pool is destroyed"))
        for slot in (*self._idle, *self._busy.values()):
            slot.graceful = False
            self._call_destroy(slot)
        self._idle.clear()
        self._creating.clear()
        for slot in self._alive:
            # The supervisor's cancellation reaches every task but a late open= resource
            # disposing under a shield; cancelling each scope reaches that one too.
            if slot.scope is not None:
                slot.scope.cancel()
        if self._ended is None:
            self._ended = trio.Event()
        self._ended.set()
        # The supervisor now cancels every resource task: open= context managers exit
        # under cancellation, nothing is disposed.


def _deadline_after(timeout: float | None) -> float:
    return _INF if timeout is None else trio.current_time() + timeout


@attrs.define(eq=False, slots=True)
class _AcquireContext(Generic[T]):
    """What :meth:`ResourcePool.acquire` returns: checks out on entry, releases on exit."""

    _pool: ResourcePool[T]
    _slot: _Slot | None = None
    _lease: int = 0

    async def __aenter__(self) -> T:
        slot = await self._pool._checkout()
        self._slot, self._lease = slot, slot.lease
        return slot.resource  # type: ignore[no-any-return]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        slot, self._slot = self._slot, None
        assert slot is not None
        pool = self._pool
        # Released, removed or destroyed inside the block (then maybe lent again): not ours.
        if slot.lease == self._lease and pool._busy.get(id(slot.resource)) is slot:
            pool.release(slot.resource)
