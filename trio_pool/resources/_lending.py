"""Who holds which resource: the idle stack, the lent map and the queue of waiting acquirers.

Theory of operation
-------------------
:class:`Lending` is the pool's bookkeeping of placed resources, three containers that only its
synchronous methods change (decide and record with no ``await`` in between):

* ``idle``: a stack of IDLE slots (LIFO hand-out, so resources nobody needs age out; its bottom
  holds the longest-idle ones, which idle eviction takes);
* ``busy``: lent slots (BUSY, or DEAD ones whose holder has not given them back yet) by
  ``id(resource)`` (resources need not be hashable);
* ``waiters``: parked acquirers, a :class:`~trio_pool._handoff.HandoffQueue` of slots;
* ``resetting``: given-back slots whose ``reset`` runs (changed only by :mod:`._reset`): held
  by the pool, neither idle nor lent.

A free resource goes straight to the head waiter (:meth:`Lending.give`: ``HandoffQueue.hand``
is atomic with the wake-up, so a waiter being cancelled never loses it, aiohttp#9670), else to
the idle stack. So idle resources exist only while nobody waits, and an acquirer that finds the
stack empty parks on ``waiters`` ("try now, then park", as ``trio.MemoryReceiveChannel.receive``
does; see :mod:`._checkout`).

A :class:`~._cluster.Cluster` the pool is in adds a :class:`Spill` to ``spills``: the one hook
from a pool to its clusters. A resource that would go idle (no waiter of the pool's own) is
first offered to each spill (``claim()``: a cluster waiter that can take it, or None), and the
pool allocates for its spills' ``demand()`` as for waiters of its own. So a cluster's waiter is
served by the first capable pool that frees or creates a resource; the pool's own waiters come
first.

While the pool ends, :attr:`Lending.drained` is set once nobody holds, waits or resets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import trio

from .._errors import InvalidArgumentError
from .._handoff import HandoffQueue
from ._slot import Slot, SlotState

__all__ = ["Lending", "Spill"]

_INF = math.inf


class Spill(Protocol):
    """A cluster's hook into one pool (see the module docstring). Synchronous, no checkpoint."""

    def claim(self) -> Callable[[Slot], object] | None:
        """A function that hands a (lent) slot to a cluster waiter, or None if none can."""

    def demand(self) -> int:
        """How many cluster waiters this pool should allocate for."""

    def closed(self) -> None:
        """The pool stopped accepting acquirers (it ends, bailed or was destroyed)."""


class Lending:
    """The idle stack, the lent map and the waiter queue (see the module docstring)."""

    __slots__ = ("busy", "clock", "drained", "idle", "resetting", "spills", "waiters")

    def __init__(self) -> None:
        self.idle: list[Slot] = []
        self.busy: dict[int, Slot] = {}
        self.waiters: HandoffQueue[object, Slot] = HandoffQueue()
        self.resetting: dict[int, Slot] = {}
        self.spills: list[Spill] = []  # the clusters' hooks (only Cluster changes it)
        self.drained: trio.Event | None = None  # made when the pool starts ending
        # The run's clock, set when the pool is entered: every release that idles a resource
        # stamps it, and one call to the clock is cheaper than trio.current_time()'s three.
        self.clock: trio.abc.Clock | None = None

    def demand(self) -> int:
        """Resources wanted for waiters: the pool's own and its clusters'."""
        return len(self.waiters) + sum(spill.demand() for spill in self.spills)

    def placed(self) -> int:
        """How many created resources the pool holds: idle, lent or resetting."""
        return len(self.idle) + len(self.busy) + len(self.resetting)

    def lend(self, slot: Slot) -> Slot:
        """Record ``slot`` as lent (a new lease) and return it. Not a checkpoint."""
        slot.lend()
        self.busy[id(slot.resource)] = slot
        return slot

    def lend_idle(self) -> Slot:
        """Lend the most recently idle slot (the stack must not be empty)."""
        slot = self.idle.pop()
        slot.lend()
        self.busy[id(slot.resource)] = slot
        return slot

    def give(self, slot: Slot, *, may_idle: bool, now: float | None = None) -> bool:
        """A resource is free: hand it to the head waiter, else (if ``may_idle``) stack it,
        stamped ``now`` (the clock, if the caller read it already; else read here).

        Returns False when nobody took it: the caller retires it.
        """
        if self.waiters.parked:  # no __bool__ call: every release runs this
            slot.lend()  # lend(), inlined: every hand-off runs this
            self.busy[id(slot.resource)] = slot
            self.waiters.hand(slot)
        elif may_idle:
            for spill in self.spills:
                hand = spill.claim()
                if hand is not None:
                    self.lend(slot)
                    hand(slot)
                    return True
            if now is None:  # the caller did not read the clock already
                assert self.clock is not None  # nothing is given before the pool is entered
                now = self.clock.current_time()
            slot.park_idle(now)
            self.idle.append(slot)
        else:
            return False
        return True

    def take_back(self, resource: Any, verb: str, *, idle_too: bool = False) -> Slot:
        """Un-lend ``resource`` (``idle_too``: or take it off the idle stack).

        Raises:
            InvalidArgumentError: it is not lent (or idle) here: foreign, or given back.
        """
        slot = self.busy.get(id(resource))
        if slot is not None and slot.resource is resource:
            del self.busy[id(resource)]
            return slot
        if idle_too:
            for index, slot in enumerate(self.idle):  # O(idle); removing idle ones is rare
                if slot.resource is resource:
                    del self.idle[index]
                    return slot
        where = "checked out from" if not idle_too else "in"
        raise InvalidArgumentError(f"cannot {verb} {resource!r}: it is not {where} this pool")

    def untake(self, slot: Slot) -> bool:
        """Un-lend ``slot`` if it is still lent (a teardown may have dropped it); say so."""
        if self.busy.get(id(slot.resource)) is not slot:
            return False
        del self.busy[id(slot.resource)]
        return True

    def drop_idle(self, slot: Slot) -> None:
        """Take one slot off the idle stack (its resource died there)."""
        self.idle.remove(slot)

    def stale(self, cutoff: float, spare: int) -> list[Slot]:
        """Take off (at most ``spare``) the slots idle since before ``cutoff``, oldest first."""
        idle = self.idle
        count = 0
        while count < spare and count < len(idle) and idle[count].idle_since <= cutoff:
            count += 1
        taken, idle[:count] = idle[:count], []
        return taken

    def take_idle_if(self, predicate: Callable[[Slot], bool]) -> list[Slot]:
        """Take off the idle slots for which ``predicate`` holds; return them."""
        taken = [slot for slot in self.idle if predicate(slot)]
        if taken:
            self.idle = [slot for slot in self.idle if not predicate(slot)]
        return taken

    def take_all_idle(self) -> list[Slot]:
        """Empty the idle stack; return what it held."""
        idle, self.idle = self.idle, []
        return idle

    def start_draining(self) -> trio.Event:
        """The pool is ending: :attr:`drained` will be set once nobody holds or waits."""
        self.drained = trio.Event()
        self.check_drained()
        return self.drained

    def check_drained(self) -> None:
        """Set :attr:`drained` if the pool is ending and nobody holds, waits or resets."""
        if self.drained is not None and not self.waiters and not self.busy and not self.resetting:
            self.drained.set()

    def check_invariants(self) -> None:
        """Assert the containers agree with the slots' states (for tests)."""
        idle, busy = self.idle, self.busy
        assert not (idle and self.waiters), "a resource idles while someone waits"
        assert all(slot.state is SlotState.IDLE for slot in idle), idle
        for key, slot in busy.items():
            assert key == id(slot.resource), slot
            assert slot.state in (SlotState.BUSY, SlotState.DEAD), slot
        for key, slot in self.resetting.items():
            assert key == id(slot.resource), slot
            assert slot.state in (SlotState.BUSY, SlotState.DEAD), slot
        held = [id(slot.resource) for slot in idle] + list(busy) + list(self.resetting)
        assert len(set(held)) == len(held), "a resource is idle or lent twice"
