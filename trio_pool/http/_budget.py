"""``max_connections``: one budget of open connections shared by an ``Agent``'s pools.

Theory of operation
-------------------
A connection counts against the budget from the moment it is allowed to connect until it is
closed. The pools never see the budget: an ``Agent`` gives each of its pools a connector
(:func:`budgeted_connector`) that first takes a slot (:meth:`Budget.acquire`), then connects;
the pool's ``"disconnect"`` event of that connection gives the slot back
(:meth:`Budget.release`), and a connect that fails gives it back at once. So there are never
more sockets open, or being opened, than the budget.

When the budget is spent, connection attempts wait in one FIFO across every origin — a
:class:`~trio_pool._handoff.HandoffQueue` of tickets — and each waiter asks its owner to
close an *idle* connection of another origin (:meth:`Budget.make_room`, the owner's
``make_room(origin_key)`` callback), whose ``"disconnect"`` then frees the slot the head
waiter gets. A waiter asks for room once; ``_evicting`` counts the closings under way so one
waiter never closes two connections.

State, and who changes it: ``_used`` (slots taken: connections open or connecting) and
``_evicting`` change only in this class's methods, synchronously. Invariants: ``_used <=
limit``; a ticket in the queue names a task that holds no slot; a slot handed to a ticket is
that task's (the hand-off is cancellation-safe: a waiter cancelled while parked is gone
before anything is handed to it). A waiter that nobody needs any more (its request was
cancelled: :meth:`Budget.prune`) is woken with :class:`Unneeded` and holds no slot.

Why not the scheduler's ``ConnectionGate``
------------------------------------------
The scheduler has its own hook for an outside budget (``_scheduler.ConnectionGate``, a
Pool's internal ``_gate``: ``try_acquire(wake)`` before it opens a connection, ``release()``
when that connection's task ends). The budget does not use it, because it would change what
the Agent does, not only how:

* Where a request waits. Behind the connector, the Pool has already opened a connection for
  a request waiting for a slot (that connection's task is what waits): the request is
  usually ``ASSIGNED`` (``pending`` but not ``queued`` in ``statistics()``) and the attempt
  holds one of its Pool's ``connections``. Behind the gate the Pool would open nothing and
  the request would stay ``queued``, which the Agent's ``statistics()`` (API.md 1.4, 5)
  would show.
* Fairness. The budget serves one FIFO of attempts across every origin and hands a freed
  slot to its head. The gate only wakes refused pools "when a slot may have freed", and the
  first pool to ask again wins; a FIFO would need reservations the gate has no place for.
* Eviction and pruning. A waiter asks its owner to close an idle connection of another
  origin once (``make_room``, counted by ``_evicting``), and attempts whose requests were
  cancelled give up (:meth:`Budget.prune`, :class:`Unneeded`). The gate's ``wake`` carries
  neither who waits nor how many.

Making the gate carry all of that is a change to the scheduler's hot path for the Agent
alone; until that is wanted, the budget stays a connector wrapper, and this module defines
no gate protocol of its own (an earlier, unused twin of the scheduler's was removed).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import attrs
import trio

from .._errors import ConnectError
from .._handoff import HandoffQueue
from ._options import ClientOptions
from ._origin import Origin
from ._transport import Connector, open_stream

__all__ = ["Budget", "Unneeded", "budgeted_connector"]


class Unneeded(ConnectError):
    """Internal: a connection waiting for the budget is no longer needed (its request was
    cancelled), so it gives up without connecting."""


@attrs.define(eq=False)
class _Ticket:
    """One connection attempt waiting for a slot."""

    owner: Hashable


class Budget:
    """At most ``limit`` connections across pools (see the module docstring)."""

    __slots__ = ("_evicting", "_limit", "_make_room", "_used", "_waiters", "_waiting")

    def __init__(self, limit: int, make_room: Callable[[Hashable], bool]) -> None:
        self._limit = limit
        self._used = 0
        self._evicting = 0
        self._make_room = make_room
        self._waiters: HandoffQueue[_Ticket, None] = HandoffQueue()
        self._waiting: dict[Hashable, int] = {}  # owner -> its tickets in the queue

    @property
    def used(self) -> int:
        """Slots taken: connections open or being opened."""
        return self._used

    def waiting(self, owner: Hashable | None = None) -> int:
        """Connection attempts waiting for a slot (those of ``owner``, if given)."""
        if owner is None:
            return len(self._waiters)
        return self._waiting.get(owner, 0)

    def try_acquire(self) -> bool:
        """Take a slot now if one is free and nobody waits. Not a checkpoint."""
        if self._used < self._limit and not self._waiters:
            self._used += 1
            return True
        return False

    async def acquire(self, owner: Hashable) -> None:
        """Take a slot; while none is free, wait in line (FIFO across owners) and ask for an
        idle connection of another owner to be closed. A checkpoint.

        Raises:
            Unneeded: :meth:`prune` gave up this attempt (it holds no slot).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.try_acquire():
            return
        ticket = _Ticket(owner)
        self._waiting[owner] = self._waiting.get(owner, 0) + 1
        try:
            # Room for this waiter too, unless closings under way cover it already.
            if self._evicting <= len(self._waiters) and self._make_room(owner):
                self._evicting += 1
            await self._waiters.park(ticket)  # handed: the slot is ours (counted by _serve)
        finally:
            left = self._waiting[owner] - 1
            if left:
                self._waiting[owner] = left
            else:
                del self._waiting[owner]

    def release(self) -> None:
        """Give a slot back (a connection closed, or its connect failed), to the head waiter
        if any. Not a checkpoint."""
        self._used -= 1
        if self._evicting:
            self._evicting -= 1
        self._serve()

    def make_room(self) -> None:
        """Close idle connections of other owners for the waiters that have not asked yet.
        Not a checkpoint; the owner calls it again whenever a connection may have become
        idle (a request ended)."""
        waiters = self._waiters
        while len(waiters) > self._evicting:  # O(1) when closings cover every waiter
            if not self._make_room(waiters.head().owner):
                return  # nothing idle anywhere: a release will serve the head
            self._evicting += 1

    def prune(self, owner: Hashable, needed: int) -> None:
        """Keep at most ``needed`` of ``owner``'s waiting attempts (the newest go first),
        waking the others with :class:`Unneeded`. Not a checkpoint."""
        excess = self._waiting.get(owner, 0) - needed
        if excess <= 0:
            return
        for ticket in reversed(list(self._waiters)):
            if ticket.owner == owner:
                self._waiters.fail(Unneeded("the request it was opened for is gone"), ticket)
                excess -= 1
                if not excess:
                    break
        self._serve()

    def _serve(self) -> None:
        while self._waiters and self._used < self._limit:
            self._used += 1
            self._waiters.hand(None)


def budgeted_connector(
    budget: Budget, owner: Hashable, options: ClientOptions, connector: Connector | None
) -> Connector:
    """A connector that takes a slot of ``budget``, then opens the transport as the pool
    would (``connector``, or TCP/Unix + TLS per ``options``, within their
    ``connect_timeout``: the wait for a slot is not part of it). A connect that fails gives
    the slot back; a connected one gives it back through its ``"disconnect"`` event."""

    async def connect(origin: Origin) -> trio.abc.Stream:
        await budget.acquire(owner)
        try:
            return await open_stream(origin, options, connector)
        except BaseException:
            budget.release()
            raise

    return connect
