"""One connection: its lifetime task, its leases, and the turns of pipelined requests.

Theory of operation
-------------------
A :class:`Worker` is one connection. Its *task* runs in the dispatcher's nursery and owns
the connection's life — connecting (so a caller that gives up never orphans a connection
being made, httpcore#1093), the keep-alive and ``client_ttl`` deadlines, and closing — but
it does no request I/O: a request's own task *leases* the connection and does the exchange
itself (``_exchange.py``), so a request costs no task switch beyond waiting for the network
(the hand-written trio + h11 loop is the yardstick).

While the connection is idle the task sleeps in a cancel scope whose deadline is the idle
expiry. A release records the new expiry (re-arming the deadline only if it moved
earlier), so the task wakes only to close the connection, or at an outdated deadline,
to sleep on until the current one. The same task enforces the timeout of a read that
waits for response bytes (``headers_timeout``, ``body_timeout``): it cancels the
reader's scope when the read is due, so no request scope carries a deadline (a deadline
update per read was a tenth of a small request's cost) and a busy connection re-arms
nothing per request.
Whether an idle connection is still usable is checked when it is handed out
(:meth:`Connection.alive`, a non-blocking peek): a server's FIN or unsolicited bytes evict
it before any request touches it.

With ``pipelining > 1`` several requests hold leases at once. They write in lease order
(``to_write``) and read in the same order (``to_read``); a request waits for its turn on
an event its predecessor sets. If the connection breaks, every waiting holder is woken and
gives up its lease with :class:`Broken`, and the dispatcher re-sends it (API.md 1.6:
"pipelined requests behind a failed head are re-sent").
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

import h11
import trio

from .._errors import ConnectError, InformationalError
from ._connection import Connection
from ._request import Interrupted, State

if TYPE_CHECKING:
    from ._client import Client
    from ._dispatcher import OriginDispatcher
    from ._request import Request

__all__ = ["Broken", "Worker"]


class Broken(Exception):
    """Internal: the leased connection broke before this request's turn; re-send it."""


class Worker:
    """One connection (see the module docstring)."""

    __slots__ = (
        "_expiry",
        "_reason",
        "_scope",
        "_wake",
        "broken",
        "client",
        "conn",
        "first",
        "handed_over",
        "owner",
        "retiring",
        "to_read",
        "to_write",
        "unpipelineable",
    )

    def __init__(self, owner: OriginDispatcher, client: Client, first: Request) -> None:
        self.owner = owner
        self.client = client
        self.first: Request | None = first  # the request this connection is opened for
        self.conn: Connection | None = None
        self.to_write: deque[Request] = deque()  # leased, not yet written, in order
        self.to_read: deque[Request] = deque()  # written, response not finished, in order
        self.unpipelineable = 0  # leases that nothing may be pipelined with
        self.retiring = False  # takes no new lease; closes once the leases are given back
        self.broken = False  # unusable: lease holders give up and are re-sent
        self.handed_over = False  # upgrade()/connect(): the transport is the caller's now
        self._reason: BaseException | None = None
        self._expiry = math.inf
        self._scope: trio.CancelScope | None = None
        self._wake: trio.CancelScope | None = None

    # ------------------------------------------------------------------ scheduler side
    # Synchronous: the dispatcher calls these without an await in between.

    def capacity(self, request: Request | None) -> bool:
        """Can this connection take ``request`` (any request if None) now?"""
        if self.conn is None or self.retiring:
            return False
        options = self.client._options
        limit = options.max_requests_per_client
        if limit is not None and self.conn.requests_started + len(self.to_write) >= limit:
            return False
        load = len(self.to_write) + len(self.to_read)
        if load == 0:
            return True
        return (
            load < options.pipelining
            and self.unpipelineable == 0
            and (request is None or request.pipelineable)
        )

    def idle(self) -> bool:
        """No lease is held."""
        return not self.to_write and not self.to_read

    def lease(self, request: Request) -> None:
        """Give ``request`` a lease (it writes after the leases before it)."""
        request.worker = self
        request.move(State.ASSIGNED)
        self.to_write.append(request)
        if not request.pipelineable:
            self.unpipelineable += 1
        # The idle deadline stays armed: should it fire during the lease, the task wakes
        # once, sees the lease and sleeps on (cheaper than re-arming twice per request).

    def retire(self, reason: BaseException | None = None) -> None:
        """Take no new lease; close once the leases are given back."""
        self.retiring = True
        if self._reason is None:
            self._reason = reason
        if self.idle() and self._wake is not None:
            self._wake.cancel()

    def cancel(self) -> None:
        """Stop the task and close the connection now (``destroy()``)."""
        self.retiring = True
        if self._scope is not None:
            self._scope.cancel()

    def requests(self) -> list[Request]:
        """The unfinished requests that wait for or hold this connection."""
        waiting = [] if self.first is None else [self.first]
        return [r for r in (*waiting, *self.to_write, *self.to_read) if not r.ended]

    def _set_expiry(self, when: float) -> None:
        self._expiry = when
        self.wake_by(when)

    def wake_by(self, when: float) -> None:
        """Make sure the task wakes by ``when`` (an idle expiry, or a read's deadline).

        Only an earlier time re-arms the sleeping task's deadline; a later one (the usual
        case: each release and each read pushes it forward) is found when the old one
        fires, so a busy connection costs no deadline update per request."""
        if self._wake is not None and when < self._wake.deadline:
            self._wake.deadline = when

    # ------------------------------------------------------------------ lease holder side

    async def write_turn(self, request: Request) -> None:
        """Wait until the leases before ``request`` are written. A checkpoint only if it
        has to wait. Raises :class:`Broken` if the connection broke meanwhile."""
        while not self.broken and self.to_write[0] is not request:
            await request.park()
            if request.ended:  # aborted: woken (and, with a scope, cancelled)
                raise Interrupted
        if self.broken:
            raise Broken

    def written(self, request: Request) -> None:
        """``request`` is on the wire: the next lease may write, and it reads in turn."""
        self.to_write.popleft()
        self.to_read.append(request)
        if self.to_write:
            self.to_write[0].wake()

    async def read_turn(self, request: Request) -> None:
        """Wait until the responses before ``request``'s have been read. A checkpoint only
        if it has to wait. Raises :class:`Broken` if the connection broke meanwhile."""
        while not self.broken and self.to_read[0] is not request:
            await request.park()
            if request.ended:
                raise Interrupted
        if self.broken:
            raise Broken

    def release(
        self, request: Request, *, reusable: bool, reason: BaseException | None = None
    ) -> None:
        """``request`` gives its lease back; ``reusable`` says the connection is fine, else
        ``reason`` says why it must close."""
        if not request.pipelineable:
            self.unpipelineable -= 1
        if request in self.to_write:
            # Never written: nothing of it is on the wire.
            head = self.to_write[0] is request
            self.to_write.remove(request)
            if head and self.to_write:
                self.to_write[0].wake()
        elif self.to_read and self.to_read[0] is request:
            self.to_read.popleft()
            if self.to_read:
                # The next response is due; one whose caller gave up cannot be skipped.
                if self.to_read[0].state is State.DONE:
                    reusable = False
                else:
                    self.to_read[0].wake()
        elif request in self.to_read:
            if not self.broken:
                # Its caller gave up while it waited for its turn to read: its response
                # will still come, so it stays as a placeholder and the connection ends
                # when the responses before it are read.
                self.retiring = True
                request.worker = None
                self.owner._released(self)
                return
            self.to_read.remove(request)
        request.worker = None
        if not reusable:
            self._break(reason)
        self.owner._released(self)

    def _break(self, reason: BaseException | None) -> None:
        if self.broken:
            return
        self.broken = self.retiring = True
        if self._reason is None:
            self._reason = reason
        for waiting in (*self.to_write, *self.to_read):
            if waiting.state is State.DONE:  # a placeholder (see release): nobody to wake
                self.to_read.remove(waiting)
            else:
                waiting.wake()

    # ------------------------------------------------------------------ the task

    async def run(self) -> None:
        """The connection's life. A background task; never raises (but ``Cancelled``)."""
        client = self.client
        reason: BaseException | None = None
        try:
            with trio.CancelScope() as self._scope:
                try:
                    self.conn = await Connection.open(
                        client._origin, client._options, client._connector
                    )
                except ConnectError as exc:
                    reason = exc
                    if self.first is not None:
                        self.first.finish(exc)
                    return
                self.conn.on_read = self.wake_by
                self.owner._worker_connected(self)
                reason = await self._live()
        finally:
            self.owner._worker_ended(self, reason)
            if self.conn is not None and not self.handed_over:
                await self.conn.aclose()

    async def _live(self) -> BaseException:
        """Sleep until the connection is retired or its idle time is up."""
        ttl = self.owner._client_ttl
        conn = self.conn
        assert conn is not None
        while True:
            # retire() can wake this task only while it sleeps, so look before sleeping: a
            # connection retired as it connected (the pool closing, its request gone) would
            # otherwise sleep until an expiry that was never set, and close() wait forever.
            if self.retiring and self.idle():
                return self._reason or InformationalError("connection retired")
            deadline = self._expiry if self.idle() else math.inf
            if conn.reader is not None:
                deadline = min(deadline, conn.read_deadline)
            with trio.CancelScope(deadline=deadline) as self._wake:
                await trio.sleep_forever()
            self._wake = None
            if conn.reader is not None and trio.current_time() >= conn.read_deadline:
                # A read's timeout: its caller maps the cancellation of its scope.
                conn.read_deadline = math.inf
                conn.reader.cancel()
            if not self.idle():
                continue  # leased as the deadline fired
            if self.retiring:
                return self._reason or InformationalError("connection retired")
            if trio.current_time() >= self._expiry:
                self.retiring = True
                self.owner._refresh(self)
                assert self.conn is not None
                if ttl is not None and self._expiry == self.conn.connected_at + ttl:
                    return InformationalError("client_ttl expired")
                return InformationalError("socket idle timeout")

    def keep_alive(self, hint_header: bytes | None) -> bool:
        """After a complete response: start h11's next cycle and set the idle lifetime
        (honouring a ``Keep-Alive: timeout=N`` hint, ``hint_header`` being the response's
        keep-alive header); False if the connection must close."""
        conn = self.conn
        assert conn is not None
        h = conn.h11
        if h.our_state is not h11.DONE or h.their_state is not h11.DONE:
            self._reason = InformationalError("the connection is not persistent")
            return False
        leftover, closed = h.trailing_data
        if closed:
            # The server closed the connection: with this response (its EOF-delimited body
            # ended there), or right behind it. Requests pipelined behind it are re-sent.
            self._reason = InformationalError("the server closed the connection")
            return False
        h.start_next_cycle()
        conn.responses += 1
        conn.leftover = bool(leftover)
        options = self.client._options
        lifetime = options.keep_alive_timeout
        hint = _keep_alive_hint(hint_header)
        if hint is not None:
            lifetime = hint - options.keep_alive_timeout_threshold
            if lifetime <= 0:
                self._reason = InformationalError("the server's keep-alive timeout is too short")
                return False
            if options.keep_alive_max_timeout is not None:
                lifetime = min(lifetime, options.keep_alive_max_timeout)
        conn.idle_deadline = math.inf if lifetime is None else trio.current_time() + lifetime
        return True

    def released_idle(self) -> None:
        """Called by the dispatcher when the connection went back to idle: arm the expiry."""
        conn = self.conn
        assert conn is not None
        expiry = conn.idle_deadline
        ttl = self.owner._client_ttl
        if ttl is not None:
            expiry = min(expiry, conn.connected_at + ttl)
        self._set_expiry(expiry)


def _keep_alive_hint(raw: bytes | None) -> float | None:
    """The ``timeout=N`` of a ``Keep-Alive`` header, or None (absent or malformed)."""
    if not raw:
        return None
    for part in raw.decode("latin-1").split(","):
        key, _, number = part.strip().partition("=")
        if key.strip().lower() == "timeout":
            try:
                seconds = float(number.strip())
            except ValueError:
                return None
            return seconds if math.isfinite(seconds) and seconds >= 0 else None
    return None
