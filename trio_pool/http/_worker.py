"""The connection task: one connection's whole life, run in its owner's nursery.

Theory of operation
-------------------
A :class:`Worker` is created by a dispatcher (``Client`` or ``Pool``) together with the
request that needed it, and its :meth:`Worker.run` is started as a background task of the
dispatcher. The task connects, then loops: write every request it has been assigned (more
than one only with ``pipelining > 1``, each only after the previous responses' heads were
seen or while they are read), read the oldest response, tell the dispatcher it has capacity
again, and when it has nothing to do, wait *idle*, reading the socket: a FIN or unsolicited
bytes then end the connection before it is handed out again, and the keep-alive deadline
(or ``client_ttl``) ends it after its idle lifetime.

All I/O of a connection happens in its own task, so a caller never does I/O on a pooled
socket: a cancelled caller only marks its request ``DONE`` (synchronously) and cancels the
scope this task runs that request in; the task then closes the socket (a half-read response
cannot be resumed) and ends. A connection being created belongs to the dispatcher, never to
the caller, so nothing is orphaned when the caller gives up (httpcore#1093).

The task never raises: each failure is delivered to the request it affects (``finish``),
and requests it had not finished are handed back to the dispatcher (``worker_ended``) to be
re-sent — the idempotent retry of 1.6 and "pipelined requests behind a failed head".
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import TYPE_CHECKING

import h11
import trio

from .._errors import (
    BodyTimeoutError,
    ConnectError,
    HeadersOverflowError,
    HeadersTimeoutError,
    InformationalError,
    ResponseExceededMaxSizeError,
    SocketError,
    TrioPoolError,
)
from ._connection import _RECEIVE_SIZE, _STREAM_ERRORS, Connection, PrefixedStream
from ._dispatch import UpgradeHandler, start_call
from ._headers import Headers
from ._request import State

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._client import Client
    from ._dispatcher import Dispatcher
    from ._request import Request

__all__ = ["Worker"]

_log = logging.getLogger("trio_pool.client")


class _HandlerFailed(Exception):
    """A handler method raised; carries what it raised (delivered to the request as is)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class Worker:
    """One connection: its task, its assigned and in-flight requests."""

    __slots__ = (
        "_idle_scope",
        "_scope",
        "assigned",
        "client",
        "conn",
        "handed_over",
        "inflight",
        "owner",
        "retiring",
        "unpipelineable",
    )

    def __init__(self, owner: Dispatcher, client: Client) -> None:
        self.owner = owner
        self.client = client
        self.assigned: deque[Request] = deque()  # ASSIGNED: to be written, in order
        self.inflight: deque[Request] = deque()  # RUNNING: written, responses in order
        self.unpipelineable = 0  # requests in the two deques that nothing may follow
        self.conn: Connection | None = None
        self.retiring = False  # takes no more requests; closes once its work is done
        self.handed_over = False  # upgrade()/connect(): the socket is the caller's now
        self._scope: trio.CancelScope | None = None
        self._idle_scope: trio.CancelScope | None = None

    # ------------------------------------------------------------------ scheduler side
    # Called synchronously by the dispatcher, never across an await.

    def capacity(self, request: Request | None) -> bool:
        """Can this connection take ``request`` (any request if None) right now?"""
        if self.conn is None or self.retiring:
            return False
        load = len(self.assigned) + len(self.inflight)
        if load == 0:
            return True
        return (
            load < self.client._options.pipelining
            and self.unpipelineable == 0
            and (request is None or request.pipelineable)
        )

    def idle(self) -> bool:
        """Connected with nothing to do."""
        return not self.assigned and not self.inflight

    def take(self, request: Request) -> None:
        """Own ``request``; wakes the task if it waits idle."""
        request.worker = self
        request.move(State.ASSIGNED)
        self.assigned.append(request)
        if not request.pipelineable:
            self.unpipelineable += 1
        if self._idle_scope is not None:
            self._idle_scope.cancel()

    def drop(self, request: Request) -> None:
        """Forget an ASSIGNED request its caller gave up on."""
        self.assigned.remove(request)
        if not request.pipelineable:
            self.unpipelineable -= 1

    def retire(self) -> None:
        """Finish the work at hand, then close (idle: close now)."""
        self.retiring = True
        if self._idle_scope is not None:
            self._idle_scope.cancel()

    def cancel(self) -> None:
        """Stop the task now (``destroy()``)."""
        self.retiring = True
        if self._scope is not None:
            self._scope.cancel()

    def leftovers(self) -> list[Request]:
        """Requests not finished, in the order they were to be sent."""
        return [r for r in (*self.inflight, *self.assigned) if r.state is not State.DONE]

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
                    self._fail_all(exc)
                    return
                self.owner._worker_connected(self)
                reason = await self._serve(self.conn)
        finally:
            if self.conn is not None and not self.handed_over:
                await self.conn.aclose()
            self.owner._worker_ended(self, reason)

    def _fail_all(self, error: BaseException) -> None:
        for request in self.leftovers():
            request.finish(error)
        self.assigned.clear()
        self.inflight.clear()
        self.unpipelineable = 0

    async def _serve(self, conn: Connection) -> BaseException:
        """Serve requests until the connection must close; return why it closed."""
        while True:
            if not self.assigned and not self.inflight:
                if self.retiring:
                    return InformationalError("connection retired")
                # A caller that just got its response usually sends the next request in the
                # same scheduling batch: give it that chance before arming the idle watch
                # (a socket registration and a cancellation per request otherwise).
                await trio.lowlevel.checkpoint()
                if self.assigned or self.retiring:
                    continue
                reason = await self._wait_idle(conn)
                if reason is not None:
                    return reason
                continue
            while self.assigned:
                request = self.assigned.popleft()
                self.inflight.append(request)
                # Alone on the connection (the usual case): write and read in one go.
                alone = len(self.inflight) == 1 and not self.assigned
                failure = await self._process(conn, request, write=True, read=alone)
                if failure is not None:
                    return failure
                if alone:
                    self._done_with_head()
                    break
            else:
                head = self.inflight[0]
                if head.state is State.DONE:
                    # Its caller gave up after it was written: its response would be read
                    # for nothing, and what follows it cannot be read before it.
                    return InformationalError("a pipelined request was aborted")
                failure = await self._process(conn, head, write=False, read=True)
                if failure is not None:
                    return failure
                self._done_with_head()

    def _done_with_head(self) -> None:
        head = self.inflight.popleft()
        if not head.pipelineable:
            self.unpipelineable -= 1
        self.owner._worker_ready(self)

    async def _process(
        self, conn: Connection, request: Request, *, write: bool, read: bool
    ) -> BaseException | None:
        """Write and/or read ``request`` in one cancel scope, which its caller's abort
        cancels and whose deadline is the current read's timeout. None = the connection
        can go on."""
        # The 1.6 retry needs "reused, and no response byte yet": nothing received since
        # this point, nothing left over from the previous response.
        reused = conn.responses > 0
        fresh = not conn.leftover
        mark = conn.received_bytes
        with trio.CancelScope() as scope:
            request.scope = scope
            try:
                if write:
                    await self._write(conn, request)
                if read:
                    if request.replay:
                        conn.replay(request)
                    return await self._exchange(conn, request, scope)
            except _HandlerFailed as exc:
                request.finish(exc.error)
                return exc.error
            except TrioPoolError as exc:
                nothing = fresh and conn.received_bytes == mark
                return self._failed(
                    request, exc, retryable=reused and nothing and isinstance(exc, SocketError)
                )
            except Exception as exc:  # the caller's body iterable raised
                request.finish(exc)
                return exc
        if not scope.cancelled_caught:  # written ahead; its response is read later
            request.scope = None
            return None
        if request.state is State.DONE:  # aborted by its caller (the scope was cancelled)
            return InformationalError("request aborted")
        timeout = conn.waiting_for  # the read deadline expired
        request.finish(timeout(f"no response data within {conn.waiting_timeout} s"))
        return request.error

    async def _write(self, conn: Connection, request: Request) -> None:
        request.move(State.RUNNING)
        await conn.send_request(request, pipelined=len(self.inflight) > 1)
        request.written_at = trio.current_time()
        options = self.client._options
        if conn.h11.our_state is h11.MUST_CLOSE or (
            options.max_requests_per_client is not None
            and conn.requests_started >= options.max_requests_per_client
        ):
            self.retiring = True

    def _failed(self, request: Request, error: BaseException, *, retryable: bool) -> BaseException:
        """Deliver ``error`` to ``request``, unless it is retried once (it stays unfinished and
        the dispatcher re-sends it on a fresh connection)."""
        if (
            retryable
            and request.idempotent
            and not request.retried
            and self.client._options.retry_idempotent
        ):
            request.retried = True
            _log.debug("retrying %s on a new connection after: %r", request.method, error)
        else:
            request.finish(error)
        return error

    async def _exchange(
        self, conn: Connection, request: Request, scope: trio.CancelScope
    ) -> BaseException | None:
        options = self.client._options
        handler = request.handler
        controller = request.controller
        assert handler is not None
        assert controller is not None
        timeout = options.headers_timeout
        deadline = math.inf if timeout is None else request.written_at + timeout
        conn.expected_length = None
        event = await conn.next_event(scope, HeadersTimeoutError, timeout, deadline=deadline)
        while isinstance(event, h11.InformationalResponse):
            if conn.h11.their_state is h11.SWITCHED_PROTOCOL:  # 101 to an upgrade
                return self._hand_over(conn, request, event)
            event = await conn.next_event(scope, HeadersTimeoutError, timeout, deadline=deadline)
        if not isinstance(event, h11.Response):
            return SocketError(f"unexpected {event!r} instead of a response")
        if conn.h11.their_state is h11.SWITCHED_PROTOCOL:  # 2xx to a CONNECT
            return self._hand_over(conn, request, event)
        # h11 bounds only an *incomplete* head; one that arrived whole is measured here.
        size = sum(len(name) + len(value) + 4 for name, value in event.headers.raw_items())
        if size > options.max_header_size:
            raise HeadersOverflowError(
                f"response headers exceed max_header_size ({options.max_header_size} bytes)"
            )
        headers = Headers._from_raw(event.headers)
        length = headers.get("content-length")
        conn.expected_length = int(length) if length is not None else None
        await _call(
            scope,
            handler.on_response_start,
            controller,
            event.status_code,
            headers,
            event.reason.decode("latin-1"),
        )
        total = 0
        limit = options.max_response_size
        gap = options.body_timeout
        while True:
            event = await conn.next_event(scope, BodyTimeoutError, gap)
            if type(event) is h11.Data:
                total += len(event.data)
                if limit is not None and total > limit:
                    raise ResponseExceededMaxSizeError(
                        f"response body exceeds max_response_size ({limit} bytes)"
                    )
                await _call(scope, handler.on_response_data, controller, bytes(event.data))
            elif type(event) is h11.EndOfMessage:
                break
            else:
                return SocketError(f"unexpected {event!r} in a response body")
        reason = self._keep_alive(conn, headers)
        await _call(scope, handler.on_response_end, controller, Headers._from_raw(event.headers))
        request.finish(None)
        return reason

    def _hand_over(
        self, conn: Connection, request: Request, event: h11.InformationalResponse | h11.Response
    ) -> BaseException:
        """Give the connection to the caller of ``upgrade()``/``connect()``."""
        handler = request.handler
        assert isinstance(handler, UpgradeHandler)
        if request.state is State.DONE:  # its caller gave up as the switch arrived
            return InformationalError("request aborted while its response was read")
        leftover, _ = conn.h11.trailing_data
        stream = PrefixedStream(conn.stream, leftover) if leftover else conn.stream
        handler.on_upgrade(event.status_code, Headers._from_raw(event.headers), stream)
        self.handed_over = self.retiring = True
        request.finish(None)
        return InformationalError("the connection was handed over (upgrade or CONNECT)")

    def _keep_alive(self, conn: Connection, headers: Headers) -> BaseException | None:
        """After a response: start h11's next cycle and set the idle lifetime, or say why the
        connection must close."""
        h = conn.h11
        if h.our_state is not h11.DONE or h.their_state is not h11.DONE:
            return InformationalError("the connection is not persistent (connection: close)")
        h.start_next_cycle()
        conn.responses += 1
        leftover, closed = h.trailing_data
        conn.leftover = bool(leftover) or closed
        options = self.client._options
        lifetime = options.keep_alive_timeout
        hint = _keep_alive_hint(headers.get("keep-alive"))
        if hint is not None:
            lifetime = hint - options.keep_alive_timeout_threshold
            if lifetime <= 0:
                return InformationalError("the server's keep-alive timeout is too short to reuse")
            if options.keep_alive_max_timeout is not None:
                lifetime = min(lifetime, options.keep_alive_max_timeout)
        conn.idle_deadline = math.inf if lifetime is None else trio.current_time() + lifetime
        return None

    async def _wait_idle(self, conn: Connection) -> BaseException | None:
        """Wait for work while watching the socket; None when work arrived."""
        ttl = self.owner._client_ttl
        deadline = conn.idle_deadline
        if ttl is not None:
            deadline = min(deadline, conn.connected_at + ttl)
        if conn.leftover:  # bytes or a FIN arrived with the last response
            self.retiring = True
            return SocketError("unsolicited bytes or FIN after the last response")
        while True:
            received: bytes | bytearray | BaseException | None = None
            with trio.CancelScope(deadline=deadline) as self._idle_scope:
                try:
                    received = await conn.stream.receive_some(_RECEIVE_SIZE)
                except _STREAM_ERRORS as exc:
                    received = exc
            self._idle_scope = None
            if received is not None:
                break
            if self.assigned:
                return None
            if self.retiring:
                return InformationalError("connection retired")
            if trio.current_time() >= deadline:
                if ttl is not None and deadline == conn.connected_at + ttl:
                    return InformationalError("client_ttl expired")
                return InformationalError("socket idle timeout")
            # Woken for a request whose caller gave up before it was written: keep waiting.
        # A FIN, an error or bytes nobody asked for: this connection is unusable. Requests
        # assigned in the meantime were not written; the dispatcher re-sends them.
        self.retiring = True
        if isinstance(received, BaseException):
            error: BaseException = SocketError(f"idle connection failed: {received!r}")
            error.__cause__ = received
            return error
        return SocketError("unsolicited bytes" if received else "other side closed")


async def _call(scope: trio.CancelScope, method: Callable[..., object], *args: object) -> None:
    """Call a handler method from the connection task; what it raises becomes
    :class:`_HandlerFailed`. An async method runs with no read deadline on ``scope``."""
    try:
        pending = start_call(method, *args)
        if pending is not None:
            scope.deadline = math.inf
            await pending
    except Exception as exc:
        raise _HandlerFailed(exc) from exc


def _keep_alive_hint(value: str | None) -> float | None:
    """The ``timeout=N`` of a ``Keep-Alive`` header, or None (absent or malformed)."""
    if not value:
        return None
    for part in value.split(","):
        key, _, number = part.strip().partition("=")
        if key.strip().lower() == "timeout":
            try:
                seconds = float(number.strip())
            except ValueError:
                return None
            return seconds if math.isfinite(seconds) and seconds >= 0 else None
    return None
