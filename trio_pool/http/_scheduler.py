"""The scheduler of one origin: which request gets which connection, and when to open one.

Theory of operation
-------------------
A :class:`Scheduler` owns a FIFO of waiting requests, the set of its connections
(:class:`~._pooled.PooledConnection`, at most ``limit`` of them) and the counters behind
``statistics()``. It implements :class:`~._pooled.ConnectionOwner`: connections report to
it, it never reaches into them. Every scheduling decision is a plain synchronous method —
nothing awaits between deciding and recording the decision — so a cancellation can never
strand a request half-moved (httpcore#830). :meth:`Scheduler.assign` lists the cases.

Waiting is the one hand-off primitive, :class:`~trio_pool._handoff.HandoffQueue`: a
``QUEUED`` request is parked in ``_queue``, one waiting for the connection being opened for
it (``ASSIGNED``) in ``_opening``. A lease is *handed* to its waiter with the connection as
the value; if that waiter's caller is cancelled at that instant, its cancellation gives the
lease back (:meth:`abort`) and the next waiter gets it (aiohttp#9670).

Containers and who changes them (all O(1) per step): ``_idle`` (connected, no lease, the last
is the most recently used: a LIFO, so the oldest connection is not always the one picked,
undici#3648), ``_spare`` (busy, room for a pipelined request), ``_conns`` (every connection
whose task has not ended). Only this class changes them; a connection's own state is its
own (``_pooled.py``).

Invariants (:meth:`Scheduler._check_invariants`): idle and spare connections are members of
``_conns``, disjoint, ``OPEN``; idle ones hold no lease and spare ones hold some and have
room; the counters equal the containers' sizes; ``len(_conns) <= limit``; no idle connection
while a request waits that could take it.

Requests are counted per state on every move (``Request.move``), so ``statistics()`` is O(1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import trio

from .._errors import ConnectError, InformationalError, RequestAbortedError, SocketError
from .._handoff import HandoffQueue
from ._budget import Unneeded
from ._models import PoolStats
from ._pooled import IDLE, SPARE, ConnState, PooledConnection
from ._request import State

if TYPE_CHECKING:
    from ._origin import Origin
    from ._request import Request
    from ._spec import ConnectionSpec

__all__ = ["ConnectionGate", "Scheduler"]

_log = logging.getLogger("trio_pool.pool")
_OPEN = ConnState.OPEN  # a module constant: cheaper than the enum's class attribute


def _accepted_after(seq: int) -> Callable[[Request], bool]:
    """Which waiters a re-send with acceptance number ``seq`` goes ahead of (``before`` of
    ``HandoffQueue.park``): those accepted after it, so re-sent requests keep their order."""
    return lambda other: other.seq > seq


class ConnectionGate(Protocol):
    """An outside budget of connections (the coming ``Agent``'s): a scheduler opens a
    connection only after :meth:`try_acquire` succeeded, and releases it when that
    connection's task ends."""

    def try_acquire(self, wake: Callable[[], None]) -> bool:
        """Take one connection slot; if none is free, return False and call ``wake()`` once
        (later, from any task, synchronously) when one may have freed. Not a checkpoint."""

    def release(self) -> None:
        """Give a slot back. Not a checkpoint."""


class Scheduler:
    """Requests and connections of one origin (see the module docstring)."""

    def __init__(
        self,
        origin: Origin,
        *,
        limit: int | None,
        ttl: float | None,
        make_spec: Callable[[], ConnectionSpec],
        start_soon: Callable[..., object],
        on_shut: Callable[[], None],
        gate: ConnectionGate | None = None,
    ) -> None:
        self._origin = origin
        self._limit = limit
        self._ttl = ttl
        self._make_spec = make_spec
        self._start_soon = start_soon
        self._on_shut = on_shut
        self._gate = gate
        self._queue: HandoffQueue[Request, PooledConnection | None] = HandoffQueue()
        self._opening: HandoffQueue[Request, PooledConnection | None] = HandoffQueue()
        self._idle: dict[PooledConnection, None] = {}  # no lease; last = most recent
        self._spare: dict[PooledConnection, None] = {}  # busy, room for a pipelined request
        self._conns: set[PooledConnection] = set()
        self._for_queue: set[PooledConnection] = set()  # opening for whoever waits first
        self._counts = [0] * len(State)  # requests per State, indexed by it (Request.move)
        self._errors = 0  # requests that ended with an error (Request.finish)
        self._connects = 0  # connections that connected (cumulative)
        self._connect_errors = 0  # connection attempts that failed with a ConnectError
        self._connected = 0
        self._seq = 0  # acceptance order of requests (Request.seq)
        self._need_drain = False
        self._closing = False
        self._destroyed = False
        self._destroy_error: BaseException | None = None

    # ------------------------------------------------------------------ reading

    def queueing(self) -> bool:
        """Whether requests wait in the queue. O(1), not a checkpoint (a BalancedPool's
        routing probe: no snapshot is made)."""
        return bool(self._queue)

    def takes_now(self) -> bool:
        """Whether a new request would start without waiting: nothing queued, and an idle
        or spare connection or room below ``limit`` for a new one (an outside gate aside).
        O(1), not a checkpoint."""
        if self._queue:
            return False
        return (
            bool(self._idle or self._spare) or self._limit is None or len(self._conns) < self._limit
        )

    def statistics(self) -> PoolStats:
        """A snapshot of the counters (see :class:`PoolStats`). O(1), not a checkpoint."""
        counts = self._counts
        queued = counts[State.QUEUED]
        pending = queued + counts[State.ASSIGNED]
        running = counts[State.RUNNING]
        return PoolStats(
            connected=self._connected,
            free=len(self._idle) + len(self._spare),
            pending=pending,
            queued=queued,
            running=running,
            size=pending + running,
            requests_total=counts[State.DONE],
            errors_total=self._errors,
            connects_total=self._connects,
            connect_errors_total=self._connect_errors,
        )

    def _check_invariants(self) -> None:
        """Assert the invariants of the module docstring (tests and soaks call it)."""
        conns = self._conns
        assert not (self._idle.keys() & self._spare.keys()), "a connection idle and spare"
        for conn in self._idle:
            assert conn in conns, "an idle connection that is not the scheduler's"
            assert conn.state is ConnState.OPEN, f"an idle connection {conn.state}"
            assert conn.is_idle(), "an idle connection holding a lease"
        for conn in self._spare:
            assert conn in conns, "a spare connection that is not the scheduler's"
            assert not conn.is_idle(), "a spare connection without a lease"
            assert conn.is_available(None), "a spare connection without room"
        assert self._counts[State.QUEUED] == len(self._queue), (
            f"queued: counted {self._counts[State.QUEUED]}, waiting {len(self._queue)}"
        )
        assert self._counts[State.ASSIGNED] >= len(self._opening), "assigned below opening"
        assert min(self._counts[State.QUEUED : State.DONE]) >= 0, f"negative counts {self._counts}"
        connected = sum(1 for conn in conns if conn.connected)
        assert self._connected == connected, f"connected: {self._connected} != {connected}"
        assert self._limit is None or len(conns) <= self._limit, "more connections than limit"
        if self._idle:
            assert all(request.retried for request in self._queue), (
                "an idle connection while a request waits that could take it"
            )

    # ------------------------------------------------------------------ assignment

    def assign(self, request: Request, *, front: bool) -> PooledConnection | None:
        """Lease a connection to ``request`` now, or arrange for it to get one; then the
        caller awaits :meth:`wait` (with no await in between). Not a checkpoint. O(1), but
        for ``front`` (a re-send, O(waiters)). The cases, in order:

        1. Others wait, and this is a new request: it queues behind them (FIFO).
        2. A re-send after a stale keep-alive (``request.retried``, API.md 1.6) needs a
           *fresh* connection — another kept-alive one may be just as stale (and a stream
           that is not a socket can't even be checked before reuse); at the limit an idle
           connection is closed to make room for it.
        3. The most recently used idle connection that is still alive (dead ones met on the
           way are retired).
        4. A busy connection with room for a pipelined request (``request.pipelineable``).
        5. Below the limit (and the gate, if any, allows it): a new connection is opened for
           it, and it waits for that one (``ASSIGNED``).
        6. Otherwise it queues (``QUEUED``); a re-send (``front``) goes ahead of the requests
           accepted after it, so re-sent pipelined requests keep their order.
        """
        if not front:
            self._seq += 1
            request.seq = self._seq
        if not self._queue.parked or front:
            fresh = request.retried
            conn = None
            spare = self._spare
            if not fresh:
                if self._idle:
                    conn = self._pick_idle()
                # A spare connection, looked up inline: the per-request case pipelining.
                if conn is None and spare and request.pipelineable:
                    conn = next(reversed(spare))
                    if not conn.room():  # FULL: a stale entry (it began to retire)
                        self._refile(conn)  # drops it
                        conn = None
            if conn is not None:
                # Not idle any more; if it was spare it is the last spare one, and stays
                # so while it has room, with no move (issue #16).
                if conn.lease(request):
                    if conn not in spare:
                        spare[conn] = None
                elif spare:
                    spare.pop(conn, None)
                return conn
            if fresh and self._idle and self._limit is not None and len(self._conns) >= self._limit:
                # When its task has ended, _pump opens the fresh one for the queue's head,
                # which this request is.
                self._idle.popitem()[0].retire(
                    InformationalError("closed to open a fresh one for a retry")
                )
            if self._may_open():
                self._open(request)
                return None
        request.move(State.QUEUED)  # wait() parks it in the queue
        self._need_drain = True
        return None

    async def wait(self, request: Request, *, front: bool = False) -> PooledConnection | None:
        """Wait for the lease :meth:`assign` arranged; None if the request ended meanwhile
        (its error is on it). A checkpoint (it waits); a cancelled caller aborts the request
        at once (giving back a lease it was handed in that instant)."""
        state = request.state
        if state is State.QUEUED:
            queue = self._queue
        elif state is State.ASSIGNED:
            queue = self._opening
        else:  # a failing factory: its error is on it
            return None
        try:
            # park(), not wait(): no coroutine frame of its own, and no closure is made here
            # (a cell would be, on every call): a queue of thousands stays lean (issue #16).
            if front:
                conn = await queue.park(request, front=True, before=_accepted_after(request.seq))
            else:
                conn = await queue.park(request)
            # Handed a lease, but cancelled in the same instant: give it to the next waiter
            # rather than start (and spoil) an exchange. Not a checkpoint otherwise.
            await trio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            self.abort(request, RequestAbortedError("the caller was cancelled"))
            raise
        return None if request.ended else conn

    def _pick_idle(self) -> PooledConnection | None:
        """The most recently used idle connection that is still alive (it leaves ``_idle``);
        dead ones met on the way are retired."""
        idle = self._idle
        while idle:
            conn, _ = idle.popitem()
            if conn.is_usable_idle():
                return conn
            conn.retire(SocketError("the server closed the idle connection (or sent bytes)"))
        return None

    def _may_open(self) -> bool:
        if self._destroyed:
            return False
        if self._limit is not None and len(self._conns) >= self._limit:
            return False
        return self._gate is None or self._gate.try_acquire(self._pump)

    def _open(self, request: Request | None) -> None:
        """Open a connection for ``request`` (None: for the queue). The caller took a gate
        slot, if gated."""
        try:
            spec = self._make_spec()
        except Exception as exc:  # a user factory failed: that is this request's error
            if self._gate is not None:
                self._gate.release()
            if request is None:
                request = self._queue.head()
                request.finish(exc)
                self._queue.hand(None, request)
            else:
                request.finish(exc)
            return
        conn = PooledConnection(self, spec, request, ttl=self._ttl)
        if request is None:
            self._for_queue.add(conn)
        else:
            request.move(State.ASSIGNED)
            if request.trace is not None:
                request.trace.connecting(trio.current_time())
        self._conns.add(conn)
        _log.debug("opening a connection to %s", self._origin.text)
        self._start_soon(conn.run, name=f"trio_pool: {self._origin.text}")

    def _refile(self, conn: PooledConnection) -> None:
        """File ``conn`` as idle, spare or neither after its leases or state changed (last
        in its container: the most recently used)."""
        self._idle.pop(conn, None)
        spare = self._spare
        spare.pop(conn, None)
        room = conn.room()
        if room == SPARE:
            spare[conn] = None
        elif room != IDLE:
            return
        elif self._closing and not self._queue:
            conn.retire()
        else:
            self._idle[conn] = None
            conn.armed_idle()

    def _feed(self, conn: PooledConnection) -> None:
        """Hand queued requests to ``conn`` while it can take them (FIFO)."""
        queue = self._queue
        while queue.parked:  # a truth test with no call (see HandoffQueue.parked)
            request = queue.head()
            if not conn.is_available(request):
                break
            conn.lease(request)
            queue.hand(conn, request)
        self._refile(conn)

    def _pump(self) -> None:
        """Open connections for the queue while the limit (and gate) allow: one per queued
        request not yet covered by a connection being opened for the queue."""
        while len(self._queue) > len(self._for_queue) and self._may_open():
            self._open(None)

    def abort(self, request: Request, error: BaseException) -> None:
        """End ``request`` with ``error`` now, wherever it is. Not a checkpoint. A running
        request's own task sees it (its scope or its read is cancelled) and closes the
        connection on the way out."""
        state = request.state
        if state is State.DONE:
            return
        request.finish(error)
        if state is State.QUEUED:
            if request in self._queue:
                self._queue.hand(None, request)
        elif state is State.ASSIGNED:
            if request in self._opening:
                self._opening.hand(None, request)
            seat = request.seat
            if seat is not None:
                seat.give_up(request)
        elif state is State.RUNNING and request.scope is not None:
            request.scope.cancel()
        self._check_shutdown()

    # ------------------------------------------------------------------ ConnectionOwner

    def on_connected(self, conn: PooledConnection) -> None:
        self._connected += 1
        self._connects += 1
        self._for_queue.discard(conn)
        _log.debug("connected to %s", self._origin.text)
        conn.emit("connect", self._origin.text)
        first = conn.take_first()
        if first is not None and first in self._opening:
            conn.lease(first)
            self._opening.hand(conn, first)
        self.on_released(conn)

    def on_released(self, conn: PooledConnection) -> None:
        if conn.state is _OPEN and not self._queue.parked and not self._need_drain:
            self._refile(conn)  # the usual case, in one call: nobody waits
            if self._closing:
                self._check_shutdown()
            return
        if conn.state is not _OPEN:
            self._idle.pop(conn, None)
            self._spare.pop(conn, None)
            if conn.is_idle():
                conn.retire()
            self._pump()
        else:
            self._feed(conn)
            if self._need_drain and not self._queue.parked:
                self._need_drain = False
                conn.emit("drain", self._origin.text)
        if self._closing:
            self._check_shutdown()

    def on_unavailable(self, conn: PooledConnection) -> None:
        self._idle.pop(conn, None)
        self._spare.pop(conn, None)

    def on_closed(self, conn: PooledConnection, reason: BaseException | None) -> None:
        self._conns.discard(conn)
        self._idle.pop(conn, None)
        self._spare.pop(conn, None)
        for_queue = conn in self._for_queue
        self._for_queue.discard(conn)
        if self._gate is not None:
            self._gate.release()
        if reason is None:
            reason = self._destroy_error or InformationalError("destroyed")
        if not conn.connected:
            _log.debug("connecting to %s failed: %r", self._origin.text, reason)
            first = conn.take_first()
            if isinstance(reason, ConnectError):
                if not isinstance(reason, Unneeded):
                    self._connect_errors += 1
                # The request it was opened for fails with it (for the queue: its head), as
                # each connect failure fails one request rather than retry for ever.
                if first is None and for_queue and self._queue:
                    first = self._queue.head()
                if first is not None:
                    if first.trace is not None:
                        first.trace.connecting(conn.opened_at)
                    self.abort(first, reason)
            conn.emit("connection_error", self._origin.text, reason)
        else:
            self._connected -= 1
            _log.debug("disconnected from %s: %r", self._origin.text, reason)
            conn.emit("disconnect", self._origin.text, reason)
        self._pump()
        self._check_shutdown()

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Take no new requests (the dispatcher refuses them); close the connections once
        the queued and running requests are done. Not a checkpoint."""
        self._closing = True
        self._check_shutdown()

    def destroy(self, error: Callable[[], BaseException], default: BaseException | None) -> None:
        """Fail every request with ``error()``, stop every connection. Not a checkpoint."""
        self._closing = self._destroyed = True
        self._destroy_error = default
        for request in list(self._queue):
            self.abort(request, error())
        for conn in list(self._conns):
            for request in conn.requests():
                self.abort(request, error())
            conn.cancel()
        self._check_shutdown()

    def _check_shutdown(self) -> None:
        if not self._closing:
            return
        counts = self._counts
        if counts[State.QUEUED] + counts[State.ASSIGNED] + counts[State.RUNNING]:
            return
        for conn in self._idle:
            conn.retire()
        self._idle.clear()
        if not self._conns:
            self._on_shut()

    def _close_one_idle(self) -> bool:
        """Close the least recently used idle connection, if there is one (for an outside
        budget that needs room: the coming ``Agent``). Not a checkpoint."""
        for conn in self._idle:
            del self._idle[conn]
            conn.retire(InformationalError("closed to make room for another origin"))
            return True
        return False
