"""One pooled resource: its :class:`Slot`, the slot's state machine, and its resource task.

Theory of operation
-------------------
Every resource lives in its own *resource task* (:func:`run_resource_task`) in the pool's
nursery. The task creates the resource (``acquire()``, or entering ``open()``'s context
manager), reports it to its owner (the allocator), parks until the pool retires it, then disposes of
it (``dispose()``, or leaving ``open()``'s block). A resource being created therefore belongs to
the pool, never to the acquirer whose demand caused it: a cancelled acquirer cannot orphan it
(pool2#30, httpcore#1093), and a timed-out creation ends with its task.

A slot's life is a :class:`SlotState`, changed only by the slot's own methods, each of which
checks that it is called from a state it allows (in the style of h11's ``_state.py``)::

    CREATING --created--> IDLE <--release/lend--> BUSY          (lend: IDLE or BUSY -> BUSY)
    CREATING --abandon--> ABANDONED                  (end() no longer needs it: not a failure)
    CREATING, ABANDONED --fail--> FAILED             (creation raised or timed out: terminal)
    CREATING, ABANDONED, IDLE, BUSY --retire--> RETIRED  (dispose it; its task does so)
    RETIRED --closed--> CLOSED                       (the dispose completed: terminal)
    any state but CLOSED --destroy--> DESTROYED      (destroy() called once: terminal)
    IDLE, BUSY --die--> DEAD                         (its open= task ended under it: terminal)

So a resource is closed exactly once: disposed (CLOSED) or destroyed (DESTROYED), never both,
and ``destroy`` runs at most once. Which container of the pool holds a slot follows its state
(the pool checks this in ``_check_invariants``): ``IDLE`` slots in its idle stack, ``BUSY`` (and
``DEAD`` ones not yet given back) in its busy map, ``CREATING``/``ABANDONED`` ones in the
allocator's ``creating`` set.

The task reports to its :class:`SlotOwner` (the allocator) through three synchronous calls
(``slot_created``, ``slot_failed``, ``slot_ended``); every decision about the pool is the
owner's.
"""

from __future__ import annotations

import enum
import logging
import math
from types import CodeType
from typing import Any, Protocol

import attrs
import trio

from ._options import PoolOptions

__all__ = ["Slot", "SlotOwner", "SlotState", "deadline_after", "run_resource_task"]

logger = logging.getLogger("trio_pool.resource")

_INF = math.inf


class SlotState(enum.Enum):
    """Where one resource is in its life (see the module docstring for the transitions)."""

    CREATING = "creating"
    ABANDONED = "abandoned"
    IDLE = "idle"
    BUSY = "busy"
    RETIRED = "retired"
    DEAD = "dead"
    FAILED = "failed"
    CLOSED = "closed"
    DESTROYED = "destroyed"


_S = SlotState
_LIVE = frozenset({_S.CREATING, _S.ABANDONED, _S.IDLE, _S.BUSY})
_CREATING = frozenset({_S.CREATING})
_CREATED_OR_NOT = frozenset({_S.CREATING, _S.ABANDONED})
_RETIRED = frozenset({_S.RETIRED})
_IN_POOL = frozenset({_S.IDLE, _S.BUSY})


class SlotStateError(AssertionError):
    """A slot method was called from a state that does not allow it (a bug in the pool)."""


@attrs.define(eq=False, slots=True)
class Slot:
    """One resource and its task's state. Only its methods change ``state``."""

    resource: Any = None
    state: SlotState = SlotState.CREATING
    scope: trio.CancelScope | None = None  # what destroy cancels: the task's current phase
    retired: trio.Event = attrs.field(factory=trio.Event)  # the task waits on it, then disposes
    idle_since: float = 0.0
    lease: int = 0  # bumped at every hand-out; tells an acquire block its own checkout apart
    generation: int = 0  # the pool's expire_all() generation when its creation began
    expires_at: float = _INF  # max_lifetime (with its jitter) after its creation
    lent_at: float = 0.0  # when the sweep first saw the current lease (with leak_timeout)
    leak_lease: int = 0  # the lease the sweep last saw (with leak_timeout)
    # Where the current lease was asked for (code, line), until reported as a leak.
    leak_site: tuple[CodeType, int] | None = None
    held_since: float | None = None  # when the current lease began (only while a listener hears)

    def __repr__(self) -> str:
        return f"<Slot {self.state.value} {self.resource!r}>"

    # lend() and park_idle() are on every checkout's path: their checks are inlined.

    def _move(self, allowed: frozenset[SlotState], to: SlotState) -> None:
        if self.state not in allowed:
            raise SlotStateError(f"{self!r}: cannot become {to.value}")
        self.state = to

    def created(self, resource: Any) -> None:
        """The task has its resource (the slot stays CREATING until the pool places it)."""
        if self.state not in (_S.CREATING, _S.ABANDONED):
            raise SlotStateError(f"{self!r}: created twice")
        self.resource = resource

    def park_idle(self, now: float) -> None:
        """CREATING or BUSY -> IDLE: into the pool's idle stack."""
        state = self.state  # identity tests: hashing an Enum member runs Python code
        if state is not _S.BUSY and state is not _S.CREATING:
            raise SlotStateError(f"{self!r}: cannot become idle")
        self.state = _S.IDLE
        self.idle_since = now

    def lend(self) -> None:
        """CREATING, IDLE or BUSY -> BUSY: handed to an acquirer (a new lease)."""
        state = self.state
        if state is not _S.IDLE and state is not _S.BUSY and state is not _S.CREATING:
            raise SlotStateError(f"{self!r}: cannot be lent")
        self.state = _S.BUSY
        self.lease += 1
        self.leak_site = None

    def abandon(self) -> None:
        """CREATING -> ABANDONED: nobody needs this creation any more; cancel it."""
        self._move(_CREATING, _S.ABANDONED)
        if self.scope is not None:
            self.scope.cancel()

    def fail(self) -> None:
        """CREATING or ABANDONED -> FAILED: the creation raised or timed out."""
        self._move(_CREATED_OR_NOT, _S.FAILED)

    def retire(self) -> None:
        """-> RETIRED: its task disposes of the resource (now, or once created)."""
        self._move(_LIVE, _S.RETIRED)
        self.retired.set()

    def closed(self) -> None:
        """RETIRED -> CLOSED: the dispose (or leaving open()'s block) completed."""
        self._move(_RETIRED, _S.CLOSED)

    def die(self) -> None:
        """IDLE or BUSY -> DEAD: its open= context manager ended while the resource lived."""
        self._move(_IN_POOL, _S.DEAD)

    def destroy(self, destroy: Any, owner: object) -> None:
        """-> DESTROYED, calling ``destroy(resource)`` (if given) exactly once per slot.

        Only for a slot whose resource exists. From a live state this is a teardown on
        purpose: the task's current phase is cancelled and nothing is disposed. From RETIRED
        it is the last resort for a dispose that failed, timed out or was cut short. An error
        from ``destroy`` is logged, not raised.
        """
        if self.state in (_S.DESTROYED, _S.CLOSED):
            return
        was_live = self.state in _LIVE
        self.state = _S.DESTROYED
        if was_live and self.scope is not None:
            self.scope.cancel()
        if destroy is None:
            return
        try:
            destroy(self.resource)
        except Exception:
            logger.exception("%r: destroy(%r) raised", owner, self.resource)


class SlotOwner(Protocol):
    """What a resource task reports to (the allocator). Every call is synchronous."""

    def slot_created(self, slot: Slot, deadline: float) -> bool:
        """The resource exists: place it. False if it is unwanted or late (dispose it)."""

    def slot_failed(self, slot: Slot, error: BaseException | None) -> None:
        """The task ended a phase abnormally: ``error`` raised, or (None) its deadline fired."""

    def slot_ended(self, slot: Slot) -> None:
        """The task is over."""


def deadline_after(timeout: float | None) -> float:
    """The absolute deadline ``timeout`` seconds from now (infinity for None)."""
    return _INF if timeout is None else trio.current_time() + timeout


async def run_resource_task(slot: Slot, owner: SlotOwner, options: PoolOptions[Any]) -> None:
    """One resource's whole life: create, hand over, park until retired, dispose."""
    try:
        if options.open is not None:
            await _run_opened(slot, owner, options)
        else:
            await _run_acquired(slot, owner, options)
    finally:
        if slot.state is _S.RETIRED:
            # Its dispose was cut short (the pool was torn down under it): the destroy
            # callback is the last resort.
            slot.destroy(options.destroy, owner)
        owner.slot_ended(slot)


async def _run_acquired(slot: Slot, owner: SlotOwner, options: PoolOptions[Any]) -> None:
    """The acquire/dispose form: one cancel scope per phase, so a creation that ran past its
    deadline still gets a dispose with a deadline of its own."""
    assert options.acquire is not None
    assert options.dispose is not None
    deadline = deadline_after(options.acquire_timeout)
    with trio.CancelScope(deadline=deadline) as slot.scope:
        try:
            resource = await options.acquire()
        except Exception as exc:
            owner.slot_failed(slot, exc)
            return
    if slot.scope.cancelled_caught:
        owner.slot_failed(slot, None)
        return
    slot.created(resource)
    if owner.slot_created(slot, deadline):
        with trio.CancelScope() as slot.scope:  # destroy() cancels it
            await slot.retired.wait()
    if slot.state is not _S.RETIRED:
        return  # destroyed: no dispose
    logger.debug("%r: disposing %r", owner, resource)
    with trio.CancelScope(deadline=deadline_after(options.dispose_timeout)) as slot.scope:
        try:
            await options.dispose(resource)
            slot.closed()
        except Exception as exc:
            owner.slot_failed(slot, exc)
    if slot.scope.cancelled_caught:
        owner.slot_failed(slot, None)


async def _run_opened(slot: Slot, owner: SlotOwner, options: PoolOptions[Any]) -> None:
    """The open= form: the context manager's exit must happen inside every scope its entry
    was inside, so both scopes enclose all of it: ``creation`` carries the acquire_timeout,
    ``slot.scope`` (inside it) is what destroy() and end() cancel and what carries the
    dispose_timeout. A creation that ignored its deadline returns into a ``creation`` scope
    that has fired for good; shielding ``slot.scope`` then lets the late resource's exit run
    as a real dispose, bounded by its own deadline (a teardown cancels ``slot.scope``
    directly, shield or not)."""
    assert options.open is not None
    deadline = deadline_after(options.acquire_timeout)
    with (
        trio.CancelScope(deadline=deadline) as creation,
        trio.CancelScope() as slot.scope,
    ):
        try:
            async with options.open() as resource:
                slot.created(resource)
                if owner.slot_created(slot, deadline):
                    creation.deadline = _INF
                    await slot.retired.wait()
                    logger.debug("%r: disposing %r", owner, resource)
                elif slot.state is _S.RETIRED:
                    slot.scope.shield = True
                slot.scope.deadline = deadline_after(options.dispose_timeout)
            if slot.state is _S.RETIRED:
                slot.closed()
        except Exception as exc:
            owner.slot_failed(slot, exc)
    if creation.cancelled_caught or slot.scope.cancelled_caught:
        owner.slot_failed(slot, None)
