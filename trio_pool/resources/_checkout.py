"""An acquirer's path through a ResourcePool: try the idle stack, else park; then ping.

Theory of operation
-------------------
:meth:`Checkout.take` is what ``pool.checkout()`` and ``async with pool.acquire()`` run. It
refuses at once what the pool refuses (asking its :class:`CheckoutOwner`), takes an idle slot if
there is one ("try now"), else parks in the pool's :class:`~._lending.Lending` queue ("then
park", as ``trio.MemoryReceiveChannel.receive`` does), having first told the pool to allocate
for it. ``request_timeout`` bounds the whole of it, queueing and pinging.

With a ``ping``, a handed slot is pinged before it is returned. A slot whose ping fails is
retired and replaced: from the idle stack if it holds one, else by parking again *at the head*
of the queue (the acquirer keeps its place). Giving the failed slot back and parking again is
one synchronous step, so the pool never sees a moment with nobody holding or waiting (which
would let ``end()`` finish under this acquirer). A ping interrupted by the caller (cancelled)
retires the slot too: its state is unknown.

This module changes no pool state itself: it moves slots through :class:`~._lending.Lending`'s
methods and asks its owner to retire or allocate.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Coroutine
from types import FrameType, TracebackType
from typing import Any, Generic, Protocol, TypeVar, overload

import attrs
import trio

from .._errors import PoolDestroyedError, PoolFullError, RequestTimeoutError
from ._allocator import Allocator
from ._housekeeping import Housekeeper
from ._lending import Lending
from ._listeners import Listeners
from ._options import PoolOptions
from ._slot import Slot, SlotState, deadline_after
from ._stats import Counters

__all__ = ["AcquireContext", "Checkout", "CheckoutOwner", "give_back"]

logger = logging.getLogger("trio_pool.resource")

T = TypeVar("T")

_INF = float("inf")

# A ping interrupted by the acquirer's request_timeout (not a verdict on the resource).
_CUT_SHORT = trio.TooSlowError("ping cut short by request_timeout")


class CheckoutOwner(Protocol):
    """The pool, as an acquirer sees it (private methods: they are not the pool's API)."""

    def _refusal(self) -> BaseException | None:
        """Why a new acquirer is refused, or None if it is accepted."""

    def _serving(self) -> bool:
        """Whether acquirers accepted earlier may still be served."""

    def _maybe_allocate(self, arriving: int = 0) -> None:
        """Allocate for the waiters, counting ``arriving`` more about to park."""

    def _retire(self, slot: Slot, *, graceful: bool) -> None:
        """Dispose of (or destroy) an un-lent slot, and refill."""


@attrs.define(eq=False, slots=True)
class Checkout:
    """The acquirer's path of one pool (see the module docstring)."""

    _owner: CheckoutOwner
    _options: PoolOptions[Any]
    _lending: Lending
    _allocator: Allocator
    _housekeeper: Housekeeper
    _counters: Counters
    _listeners: Listeners
    release: Callable[[Any], object]  # the pool's release, for AcquireContext

    # Mirrors of the pool's state, kept by the pool (read on every checkout: no call).
    open: bool = False
    torn_down: bool = False

    def _lent(self, slot: Slot, started: float | None = None) -> Slot:
        """Count a checkout that succeeded; with ``leak_timeout``, note where it was asked
        for: three frames up, past this method, ``take``/``take_nowait`` and the public
        method the user called. ``started``: when the acquirer asked (None: it did not
        wait here, as a Cluster's waiter, so no "acquired" is reported)."""
        self._counters.acquires += 1
        if self._options.leak_timeout is not None:
            self._note_site(slot, sys._getframe(3))
        if self._listeners.timing:
            self._timed(slot, started)
        return slot

    def _timed(self, slot: Slot, started: float | None) -> None:
        """Start timing the lease; tell the "acquired" listeners how long the wait was."""
        now = slot.held_since = trio.current_time()
        if started is not None:
            self._listeners.emit("acquired", now - started)

    @staticmethod
    def _note_site(slot: Slot, caller: FrameType) -> None:
        # No clock read and no formatting here: the sweep times the lease and formats it.
        slot.leak_site = (caller.f_code, caller.f_lineno)

    def refusal(self, _: object = None) -> BaseException:
        """Why the pool refuses an acquirer now (it must refuse; a waiter is ignored)."""
        return self._refuse()

    def _refuse(self) -> BaseException:
        refusal = self._owner._refusal()
        assert refusal is not None
        return refusal

    def take_nowait(self) -> Slot:
        """Lend an idle slot now. Not a checkpoint. Runs no ping (it cannot wait).

        Raises:
            trio.WouldBlock: nothing is idle.
        """
        if not self.open:
            raise self._refuse()
        lending = self._lending
        while lending.idle:
            slot = lending.idle.pop()
            why = self._housekeeper.expired(slot, now=trio.current_time())
            if why is None:
                return self._lent(
                    lending.lend(slot), trio.current_time() if self._listeners.timing else None
                )
            self._housekeeper.expire(slot, why)
        raise trio.WouldBlock

    @overload
    async def take(self) -> Slot: ...

    @overload
    async def take(self, context: AcquireContext[T]) -> T: ...

    async def take(self, context: AcquireContext[Any] | None = None) -> Any:
        """Check out a slot and return it; for an ``acquire()`` block, record it in the
        block's ``context`` and return its resource instead (the block's ``__aenter__`` is
        then this coroutine itself: one frame less on every suspension and resumption).
        A checkpoint. Raises what ``acquire()`` documents."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self.open:
            raise self._refuse()
        lending, options = self._lending, self._options
        started = trio.current_time() if self._listeners.timing else None
        timeout = options.request_timeout
        deadline = _INF if timeout is None else trio.current_time() + timeout
        if lending.idle:  # try now... (lending.lend_idle(), inlined)
            slot = lending.idle.pop()
            slot.lend()
            lending.busy[id(slot.resource)] = slot
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:  # ...then park
            limit = options.max_requests
            if limit is not None and len(lending.waiters) >= limit:
                raise PoolFullError("Pool is full")
            slot = await self._wait(deadline)
        # The pool may have been torn down between handing the slot over and this task
        # running again; then the resource was destroyed with the rest.
        if self.torn_down:
            self._check_not_torn_down(slot)
        if options.ping is not None:
            slot = await self._pinged(slot, deadline)
        self._counters.acquires += 1  # what _lent() does, without a call on the hot path
        if options.leak_timeout is not None:  # _note_site(), inlined
            # The caller: the acquire() block's frame (it awaits this coroutine itself), or
            # the one past ResourcePool.checkout().
            caller = sys._getframe(1 if context is not None else 2)
            slot.leak_site = (caller.f_code, caller.f_lineno)
        if started is not None:
            self._timed(slot, started)
        if context is not None:
            context._slot, context._lease = slot, slot.lease
            return slot.resource
        return slot

    async def adopt(self, slot: Slot, deadline: float) -> Slot:
        """Finish the checkout of a slot a :class:`Cluster` waiter was handed (already lent):
        what :meth:`take` does after its wait, its ping bounded by the waiter's ``deadline``.
        A checkpoint only with a ``ping``."""
        self._check_not_torn_down(slot)
        if self._options.ping is not None:
            slot = await self._pinged(slot, deadline)
        return self._lent(slot)

    async def _wait(self, deadline: float, *, front: bool = False) -> Slot:
        """Count this acquirer's demand, then park until a slot is handed over (``front``: at
        the head of the queue). A checkpoint."""
        self._owner._maybe_allocate(arriving=1)
        lending = self._lending
        key = object()
        # Straight on the hand-off queue's sleep (park(): no wrapper coroutine, not even
        # wait()'s: every hand-off resumes it).
        try:
            if deadline == _INF:  # the common case; a cancel scope costs a little on a hot path
                return await lending.waiters.park(key, front=front)
            with trio.CancelScope(deadline=deadline):
                return await lending.waiters.park(key, front=front)
        except BaseException:
            lending.check_drained()  # it left the queue (cancelled, or failed by the pool)
            raise
        # Only reached when the deadline's scope caught its cancellation.
        lending.check_drained()
        raise self.timed_out()

    def timed_out(self) -> RequestTimeoutError:
        """Count a request timeout; return the error the acquirer raises."""
        self._counters.request_timeouts += 1
        error = RequestTimeoutError(
            f"no resource within request_timeout={self._options.request_timeout}s"
        )
        # During an allocation outage, say why nothing came: "database down" must not look
        # like "pool exhausted".
        error.__cause__ = self._allocator.outage
        return error

    def _check_not_torn_down(self, slot: Slot) -> None:
        if self.torn_down:
            self._lending.untake(slot)
            raise PoolDestroyedError("Pool is destroyed")

    async def _pinged(self, slot: Slot, deadline: float) -> Slot:
        """Ping ``slot`` and return it, or replace it (keeping the queue place) until one
        passes. ``deadline`` is the acquirer's request deadline."""
        lending = self._lending
        while True:
            failure = await self._ping_once(slot, deadline)
            if failure is None:
                self._check_not_torn_down(slot)  # torn down mid-ping
                return slot
            logger.debug("%r: ping failed (%r); replacing the resource", self._owner, failure)
            if failure is not _CUT_SHORT:
                self._counters.ping_failures += 1
            if failure is not _CUT_SHORT and lending.idle:
                # Take the replacement before giving the failed one back: an ending pool that
                # saw nobody holding or waiting for an instant would finish under this acquirer.
                replacement = lending.lend_idle()
                self._give_up(slot)
                slot = replacement
            elif failure is _CUT_SHORT or not self._owner._serving():
                self._give_up(slot)
                raise self.timed_out() if failure is _CUT_SHORT else self._refuse()
            else:
                # One synchronous step: give the failed slot back, park at the head (_wait
                # counts this acquirer's demand for the replacement).
                if lending.untake(slot) and slot.state is SlotState.BUSY:
                    slot.retire()
                slot = await self._wait(deadline, front=True)
                self._check_not_torn_down(slot)

    async def _ping_once(self, slot: Slot, deadline: float) -> BaseException | None:
        """Run one ping; return None if it passed, else why not (``_CUT_SHORT`` when the
        request deadline interrupted it)."""
        ping = self._options.ping
        assert ping is not None
        ping_deadline = deadline_after(self._options.ping_timeout)
        try:
            with trio.CancelScope(deadline=min(ping_deadline, deadline)) as scope:
                await ping(slot.resource)
        except Exception as exc:
            return exc
        except BaseException:
            # Interrupted mid-ping by the caller: the resource's state is unknown, so it goes.
            self._give_up(slot)
            raise
        # A ping that ignored its cancellation and came back late is as untrusted as one
        # that was cut off in time: the resource it vouches for is handed out late either way.
        if not scope.cancelled_caught and trio.current_time() < scope.deadline:
            return None
        if ping_deadline > deadline:
            return _CUT_SHORT
        return trio.TooSlowError(f"ping took over ping_timeout={self._options.ping_timeout}s")

    def _give_up(self, slot: Slot) -> None:
        """Let go of a slot this acquirer could not use (a teardown destroyed it already)."""
        if self._lending.untake(slot) and not self.torn_down:
            self._owner._retire(slot, graceful=True)


class AcquireContext(Generic[T]):
    """What :meth:`ResourcePool.acquire` returns: checks out on entry, releases on exit."""

    # Written by hand, not with attrs: one is made per ``async with pool.acquire()``, and
    # attrs' __init__ (every field set, defaults included) costs about a third more; the
    # slot and its lease are set by :meth:`Checkout.take` on entry, before any read.
    __slots__ = ("_checkout", "_lease", "_slot")

    _slot: Slot | None
    _lease: int

    def __init__(self, checkout: Checkout) -> None:
        self._checkout = checkout

    def __aenter__(self) -> Coroutine[Any, Any, T]:
        # Not ``async def``: take() is the awaitable, and it records the slot here.
        return self._checkout.take(self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        slot, self._slot = self._slot, None
        assert slot is not None
        # give_back(), inlined: every acquire block runs this.
        checkout = self._checkout
        if slot.lease == self._lease and checkout._lending.busy.get(id(slot.resource)) is slot:
            checkout.release(slot.resource)


def give_back(checkout: Checkout, slot: Slot, lease: int) -> None:
    """Release ``slot`` as an ``acquire()`` block's exit does, unless it was released, removed
    or destroyed inside the block (then maybe lent again: not this block's any more)."""
    # Read straight from the lent map: this runs on every acquire.
    if slot.lease == lease and checkout._lending.busy.get(id(slot.resource)) is slot:
        checkout.release(slot.resource)
