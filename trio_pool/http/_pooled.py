"""One pooled connection: its state, its lifetime task, its leases, the turns of pipelined
requests.

Theory of operation
-------------------
A :class:`PooledConnection` is one connection of a scheduler (``_scheduler.py``). Its *task*
runs in the dispatcher's nursery and owns the connection's life — connecting (so a caller
that gives up never orphans a connection being made, httpcore#1093), the keep-alive and
``client_ttl`` deadlines, and closing — but it does no request I/O: a request's own task
*leases* the connection and does the exchange itself (``_exchange.py``, through the
:class:`~._exchange.Lease` protocol this class implements), so a request costs no task switch
beyond waiting for the network.

While the connection is idle the task sleeps in a cancel scope whose deadline is the idle
expiry. A release records the new expiry (re-arming the deadline only if it moved earlier),
so the task wakes only to close the connection, or at an outdated deadline, to sleep on
until the current one. The same task enforces the timeout of a read that waits for response
bytes (``headers_timeout``, ``body_timeout``, :meth:`Connection.expire_read`), so no request
scope carries a deadline (a deadline update per read was a tenth of a small request's cost).

That sleep's is the one cancel scope of a connected task (each active scope costs ~600 bytes
of Trio state per idle connection, issue #16): connecting runs in a scope of its own, left
once connected; after that :meth:`PooledConnection.cancel` sets ``_destroyed`` and wakes the
sleep, and the task ends where a cancelled scope around it would have raised.

With ``pipelining > 1`` several requests hold leases at once. They write in lease order
(``_to_write``) and read in the same order (``_to_read``); a request waits for its turn on its
own park/wake (``Request.park``), set by its predecessor. If the connection breaks, every
waiting holder is woken and gives up its lease with :class:`~._exchange.Broken`, and the
dispatcher re-sends it (API.md 1.6).

States (:class:`ConnState`) and their rules
-------------------------------------------
Only this class's methods change ``state``; the owner (a :class:`ConnectionOwner`, the
scheduler) hears of every change that matters to it through that protocol.

* ``CONNECTING`` — the task is opening the transport; the request it is opened for (its
  *first*) waits for it. → ``OPEN`` (``owner.on_connected``) or ``CLOSED``.
* ``OPEN`` — connected and taking leases (idle when it holds none). → ``RETIRING``,
  ``BROKEN``, ``HANDED_OVER``.
* ``RETIRING`` — takes no new lease; closes once the leases are given back (``retire()``:
  expired, ``connection: close``, ``max_requests_per_client``, the pool closing, an abandoned
  pipelined response). → ``BROKEN``, ``HANDED_OVER``, ``CLOSED``.
* ``BROKEN`` — unusable: holders waiting for a turn give up and are re-sent (a lease was
  given back non-reusable). → ``CLOSED``.
* ``HANDED_OVER`` — ``upgrade()``/``connect()`` took the transport: it is never closed here.
  → ``CLOSED`` (the task ends without closing it).
* ``CLOSED`` — the task ended (``owner.on_closed``). Final.

Rule 1: a lease is granted only in ``OPEN``. Rule 2: only the task leaves ``CONNECTING`` and
enters ``CLOSED``. Rule 3: ``BROKEN`` and ``HANDED_OVER`` are never left except for
``CLOSED``; ``retire()`` never moves a connection back towards ``OPEN``.
"""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING, Protocol

import trio

from .._errors import ConnectError, InformationalError
from ._connection import Connection
from ._events import emit_along
from ._exchange import Broken
from ._request import Interrupted, State

if TYPE_CHECKING:
    from ._events import Emitter
    from ._options import ClientOptions
    from ._request import Request
    from ._spec import ConnectionSpec

__all__ = ["ConnState", "ConnectionOwner", "PooledConnection"]


class ConnState(enum.Enum):
    """Where a pooled connection is in its life (see the module docstring for the rules)."""

    CONNECTING = "connecting"
    OPEN = "open"
    RETIRING = "retiring"
    BROKEN = "broken"
    HANDED_OVER = "handed over"
    CLOSED = "closed"


# The members the hot path tests, as module constants (see _request.py's _DONE).
_OPEN = ConnState.OPEN
_GONE = (ConnState.BROKEN, ConnState.HANDED_OVER)
_ASSIGNED = State.ASSIGNED
_DONE = State.DONE
_NOT_PIPELINED = (False, False)

# What :meth:`PooledConnection.room` answers: how the scheduler files the connection.
FULL = 0
"""It takes no lease now (not ``OPEN``, at a limit, or holding an unpipelineable lease)."""
IDLE = 1
"""It holds no lease and takes one."""
SPARE = 2
"""It holds leases and has room for a pipelined request."""


def _abort_sleep(_: object) -> trio.lowlevel.Abort:
    """The idle sleep's abort function: a cancellation (its wake-up) always succeeds."""
    return trio.lowlevel.Abort.SUCCEEDED


class ConnectionOwner(Protocol):
    """How a pooled connection reports to its scheduler. Each call is synchronous, made with
    no ``await`` between the change and the report."""

    def on_connected(self, conn: PooledConnection) -> None:
        """``CONNECTING`` → ``OPEN``: give it its first request, or other work."""

    def on_released(self, conn: PooledConnection) -> None:
        """A lease was given back: re-file the connection and serve the queue from it."""

    def on_unavailable(self, conn: PooledConnection) -> None:
        """It stopped taking leases (``RETIRING``) while the owner may list it as free."""

    def on_closed(self, conn: PooledConnection, reason: BaseException | None) -> None:
        """→ ``CLOSED``; ``reason`` why (None: the task was cancelled)."""


class PooledConnection:
    """One connection of a scheduler (see the module docstring)."""

    __slots__ = (
        "_conn",
        "_destroyed",
        "_expiry",
        "_first",
        "_max_requests",
        "_owner",
        "_pipelining",
        "_reason",
        "_scope",
        "_targets",
        "_to_read",
        "_to_write",
        "_ttl",
        "_unpipelineable",
        "_wake",
        "connection",
        "opened_at",
        "options",
        "spec",
        "state",
    )

    connection: Connection
    """The HTTP/1.1 connection, set once when the transport is open (read-only)."""

    def __init__(
        self,
        owner: ConnectionOwner,
        spec: ConnectionSpec,
        first: Request | None,
        *,
        ttl: float | None = None,
    ) -> None:
        self._owner = owner
        self.spec = spec
        self.options: ClientOptions = spec.options  # read-only
        # The two options the per-request checks read, copied once: each request's
        # is_available/room() would otherwise look them up through the spec (issue #16).
        self._pipelining = spec.options.pipelining
        self._max_requests = spec.options.max_requests_per_client
        self.state = ConnState.CONNECTING
        self._ttl = ttl  # client_ttl: retired this long after connecting
        self._first = first  # the request this connection is opened for (None: the queue)
        if first is not None:
            first.seat = self
        self._conn: Connection | None = None
        # Lists, not deques: a deque's first block is ~700 bytes, on every idle connection,
        # and these hold at most ``pipelining`` requests (pop(0) of a few is cheap).
        self._to_write: list[Request] = []  # leased, not yet written, in order
        self._to_read: list[Request] = []  # written, response not finished, in order
        self._unpipelineable = 0  # leases that nothing may be pipelined with
        self._reason: BaseException | None = None
        self._expiry = math.inf
        self._scope: trio.CancelScope | None = None  # while connecting
        self._wake: trio.CancelScope | None = None  # while connected and asleep
        self._destroyed = False  # cancel() was called
        self.opened_at = 0.0  # Trio time its task began to connect (read-only)
        # The events' targets once the spec's identity was made (see emit).
        self._targets: tuple[Emitter, ...] | None = None

    # ------------------------------------------------------------------ predicates

    @property
    def connected(self) -> bool:
        """The transport was opened (the connection counts as connected until ``CLOSED``)."""
        return self._conn is not None

    def is_available(self, request: Request | None) -> bool:
        """Can it take ``request`` (any request if None) now? ``OPEN``, below
        ``max_requests_per_client``, and either idle or with room for a pipelined request
        (below ``pipelining``, no unpipelineable lease, ``request`` pipelineable)."""
        if self.state is not _OPEN:
            return False
        to_write = self._to_write
        limit = self._max_requests
        if limit is not None and self.connection.requests_started + len(to_write) >= limit:
            return False
        load = len(to_write) + len(self._to_read)
        if not load:
            return True
        return (
            load < self._pipelining
            and not self._unpipelineable
            and (request is None or request.pipelineable)
        )

    def room(self) -> int:
        """How the scheduler files it: :data:`IDLE`, :data:`SPARE` (room for a pipelined
        request) or :data:`FULL` — :meth:`is_available` for any request and :meth:`is_idle`
        in one call, as each lease and release asks (issue #16). Not a checkpoint."""
        if self.state is not _OPEN:
            return FULL
        to_write = self._to_write
        limit = self._max_requests
        if limit is not None and self.connection.requests_started + len(to_write) >= limit:
            return FULL
        load = len(to_write) + len(self._to_read)
        if not load:
            return IDLE
        return SPARE if load < self._pipelining and not self._unpipelineable else FULL

    def is_idle(self) -> bool:
        """No lease is held."""
        return not self._to_write and not self._to_read

    def is_usable_idle(self) -> bool:
        """Idle, and the server did not close it (or send bytes) meanwhile (a non-blocking
        peek, not a checkpoint)."""
        conn = self._conn
        assert conn is not None
        return conn.alive()

    def requests(self) -> list[Request]:
        """The unfinished requests that wait for or hold this connection."""
        waiting = [] if self._first is None else [self._first]
        return [r for r in (*waiting, *self._to_write, *self._to_read) if not r.ended]

    def lease_count(self) -> int:
        """Leases held (placeholders of abandoned pipelined responses included)."""
        return len(self._to_write) + len(self._to_read)

    # ------------------------------------------------------------------ scheduler side
    # Synchronous: the scheduler calls these without an await in between.

    def emit(self, event: str, origin: str, *extra: object) -> None:
        """Emit the connection event ``event`` along the spec's ``targets`` (see
        :func:`~._events.emit_along`). Not a checkpoint.

        A spec with an ``identity`` maker gets its innermost target (a ``Pool``'s ``Client``)
        made the first time one of its targets hears an event (:meth:`~._events.Emitter._listens`),
        and kept: every later event of this connection names the same one. Until then nobody
        could know it: the event goes to the listeners that pass it on unheard (relays: an
        ``Agent``'s budget, a ``BalancedPool``'s weights) without it."""
        targets = self._targets
        if targets is None:
            spec = self.spec
            targets = spec.targets
            if spec.identity is not None and any(target._listens(event) for target in targets):
                targets = self._targets = (*targets, spec.identity())
        emit_along(targets, event, origin, *extra)

    def take_first(self) -> Request | None:
        """The request the connection was opened for, if it still waits; it no longer does."""
        first, self._first = self._first, None
        return first

    def lease(self, request: Request) -> bool:
        """Give ``request`` a lease (it writes after the leases before it). Rule 1: only
        while ``OPEN`` (the caller checked :meth:`is_available`). Not a checkpoint.

        Returns:
            Whether it still has room for a pipelined request (:meth:`room` is ``SPARE``),
            answered here, where the lease's own numbers are at hand, so the scheduler
            files it without asking again (issue #16).
        """
        request.seat = self
        request.move(_ASSIGNED)
        to_write = self._to_write
        to_write.append(request)
        if not request.pipelineable:
            self._unpipelineable += 1
            return False
        # The idle deadline stays armed: should it fire during the lease, the task wakes
        # once, sees the lease and sleeps on (cheaper than re-arming twice per request).
        if len(to_write) + len(self._to_read) >= self._pipelining or self._unpipelineable:
            return False
        limit = self._max_requests
        return limit is None or self.connection.requests_started + len(to_write) < limit

    def give_up(self, request: Request) -> None:
        """``request`` (``ASSIGNED``) ended before using its place (``Seat``)."""
        if self._first is request:
            self._first = None  # the connection carries on, for someone else
        else:
            self.release(request, reusable=True)  # an unused lease goes on

    def retire(self, reason: BaseException | None = None) -> None:
        """Take no new lease; close once the leases are given back."""
        if self.state is ConnState.OPEN or self.state is ConnState.CONNECTING:
            self.state = ConnState.RETIRING
        if self._reason is None:
            self._reason = reason
        if self.is_idle() and self._wake is not None:
            self._wake.cancel()

    def cancel(self) -> None:
        """Stop the task and close the connection now (``destroy()``)."""
        self.retire()
        self._destroyed = True
        if self._scope is not None:
            self._scope.cancel()
        if self._wake is not None:
            self._wake.cancel()

    def armed_idle(self) -> None:
        """The scheduler filed the connection as idle: arm its expiry."""
        conn = self._conn
        assert conn is not None
        expiry = conn.idle_deadline
        if self._ttl is not None:
            expiry = min(expiry, conn.connected_at + self._ttl)
        self._expiry = expiry
        self.wake_by(expiry)

    def wake_by(self, when: float) -> None:
        """Make sure the task wakes by ``when`` (an idle expiry, or a read's deadline).

        Only an earlier time re-arms the sleeping task's deadline; a later one (the usual
        case: each release and each read pushes it forward) is found when the old one
        fires, so a busy connection costs no deadline update per request."""
        if self._wake is not None and when < self._wake.deadline:
            self._wake.deadline = when

    # ------------------------------------------------------------------ Lease (the exchange)

    async def wait_to_write(self, request: Request) -> None:
        while self.state not in _GONE and self._to_write[0] is not request:
            await request.park()
            if request.ended:  # aborted: woken (and, with a scope, cancelled)
                raise Interrupted
        if self.state in _GONE:
            raise Broken

    def write_turn(self, request: Request) -> tuple[bool, bool] | None:
        if self.state in _GONE or self._to_write[0] is not request:
            return None
        to_read = self._to_read
        if not to_read:
            return _NOT_PIPELINED
        conn = self._conn
        assert conn is not None
        return True, to_read[0].reads_whole and not conn.reading

    def written(self, request: Request, *, last: bool) -> None:
        self._to_write.pop(0)
        self._to_read.append(request)
        if self._to_write:
            self._to_write[0].wake()
        if last:
            self.retire()
            self._owner.on_unavailable(self)  # no more pipelined requests on it

    def may_read(self, request: Request) -> bool:
        return self.state not in _GONE and self._to_read[0] is request

    async def wait_to_read(self, request: Request) -> None:
        while self.state not in _GONE and self._to_read[0] is not request:
            await request.park()
            if request.ended:
                raise Interrupted
        if self.state in _GONE:
            raise Broken

    def will_close(self, reason: BaseException) -> None:
        self._reason = reason

    def hand_over(self) -> None:
        self.state = ConnState.HANDED_OVER

    def release(
        self, request: Request, *, reusable: bool, reason: BaseException | None = None
    ) -> None:
        if not request.pipelineable:
            self._unpipelineable -= 1
        to_read = self._to_read
        # The usual case first: the response just read was the head of the line.
        if to_read and to_read[0] is request:
            del to_read[0]
            if to_read:
                # The next response is due; one whose caller gave up cannot be skipped.
                following = to_read[0]
                if following.state is _DONE:
                    reusable = False
                else:
                    following.wake()
        elif request in self._to_write:
            # Never written: nothing of it is on the wire.
            to_write = self._to_write
            head = to_write[0] is request
            to_write.remove(request)
            if head and to_write:
                to_write[0].wake()
        elif request in to_read:
            if self.state not in _GONE:
                # Its caller gave up while it waited for its turn to read: its response
                # will still come, so it stays as a placeholder and the connection ends
                # when the responses before it are read.
                self.retire()
                request.seat = None
                self._owner.on_released(self)
                return
            to_read.remove(request)
        request.seat = None
        if not reusable:
            self._break(reason)
        self._owner.on_released(self)

    def _break(self, reason: BaseException | None) -> None:
        if self.state in _GONE:
            return
        self.state = ConnState.BROKEN
        if self._reason is None:
            self._reason = reason
        for waiting in (*self._to_write, *self._to_read):
            if waiting.state is State.DONE:  # a placeholder (see release): nobody to wake
                self._to_read.remove(waiting)
            else:
                waiting.wake()

    # ------------------------------------------------------------------ the task

    async def run(self) -> None:
        """The connection's life. A background task; never raises (but ``Cancelled``)."""
        spec = self.spec
        reason: BaseException | None = None
        self.opened_at = trio.current_time()
        try:
            with trio.CancelScope() as self._scope:
                try:
                    self._conn = self.connection = await Connection.open(
                        spec.origin, spec.options, spec.connector, self.wake_by
                    )
                except ConnectError as exc:
                    reason = exc
                    return
            self._scope = None
            if not self.connected:
                return  # cancel() interrupted the connect
            if self.state is ConnState.CONNECTING:
                self.state = ConnState.OPEN
            self._owner.on_connected(self)
            reason = await self._live()
        finally:
            handed_over = self.state is ConnState.HANDED_OVER
            self.state = ConnState.CLOSED
            self._owner.on_closed(self, reason)
            # The reason may be an error whose traceback holds frames that hold this
            # connection (a connect error's holds this very frame): once told, it is let go,
            # here and in this frame's local (no reference cycle, issue #16).
            self._reason = reason = None
            if self._conn is not None and not handed_over:
                await self._conn.aclose()

    async def _live(self) -> BaseException | None:
        """Sleep until the connection is retired or its idle time is up; None: ``cancel()``."""
        conn = self.connection
        while True:
            # retire() can wake this task only while it sleeps, so look before sleeping: a
            # connection retired as it connected (the pool closing, its request gone) would
            # otherwise sleep until an expiry that was never set, and close() wait forever.
            if self.state is not ConnState.OPEN and self.is_idle():
                return self._reason or InformationalError("connection retired")
            if not self._destroyed:
                deadline = self._expiry if self.is_idle() else math.inf
                if conn.reading:
                    deadline = min(deadline, conn.read_deadline)
                with trio.CancelScope(deadline=deadline) as self._wake:
                    # trio.sleep_forever() without its own coroutine frame and lambda.
                    await trio.lowlevel.wait_task_rescheduled(_abort_sleep)
                self._wake = None
            if self._destroyed:
                return None  # where a cancelled scope around the task would have raised
            conn.expire_read()  # a read's timeout: its caller maps the interruption
            if not self.is_idle():
                continue  # leased as the deadline fired
            if self.state is not ConnState.OPEN:
                return self._reason or InformationalError("connection retired")
            if trio.current_time() >= self._expiry:
                self.retire()
                self._owner.on_unavailable(self)
                if self._ttl is not None and self._expiry == conn.connected_at + self._ttl:
                    return InformationalError("client_ttl expired")
                return InformationalError("socket idle timeout")
