"""One request's exchange on a leased connection, run in the task of whoever made the
request (``request()``, ``stream()``, ``dispatch()``...).

Theory of operation
-------------------
An :class:`Exchange` writes the request (after the pipelined requests before it), reads
the response head and then the body in steps, so ``request()`` can drive it to the end
while a ``StreamResponse`` hands each step to its reader. Reads run under a cancel scope
given by the caller, whose deadline is set for each read (``headers_timeout`` as a total
from the request being written, ``body_timeout`` per gap); the same scope is what
``Controller.abort()`` cancels. ``request()`` gives no scope: its reads enter one only
while they wait for the socket (the fast read mode, see ``_dispatcher.py``).

The connection is seen through a :class:`Lease` (declared here, implemented by
``_pooled.PooledConnection``): the turns of pipelined requests, the connection's options,
giving the lease back. The exchange never sees the scheduler.

Every way out goes through :meth:`Exchange.close`, which gives the lease back: reusable
only after a complete response on a persistent connection; a request cut anywhere else
(error, timeout, cancellation of its caller, an unread stream) closes the connection, since
a half-read response cannot be resumed. :meth:`Exchange.retryable` says whether a failure
may be re-sent (API.md 1.6): the connection was reused, nothing of the response had
arrived, the request is idempotent and was not retried before.

A *duplex* exchange (``pipeline()``) writes only the head in the caller's task; a helper
task in a nursery the caller owns writes the streaming body while the caller reads the
response. The helper and the reader never touch the same half of the connection. The
lease must not be given back while the helper may still write, so :meth:`Exchange.close`
only cancels a running helper and the helper gives the lease back as it ends; a failed
write ends the request with its error and wakes the reader. Such an exchange is never
re-sent: the body it consumed cannot be produced again.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

import h11
import trio

from .._errors import (
    BodyTimeoutError,
    HeadersOverflowError,
    HeadersTimeoutError,
    HTTPParserError,
    InformationalError,
    ResponseExceededMaxSizeError,
    SocketError,
    TrioPoolError,
)
from ._body import replayable
from ._headers import Headers
from ._parser import NEED_DATA, End, FastHead
from ._request import State

if TYPE_CHECKING:
    from ._connection import Connection
    from ._options import ClientOptions
    from ._request import Request

__all__ = ["Broken", "Exchange", "Head", "Lease"]

Head = tuple[int, Headers, str]

_RUNNING = State.RUNNING  # see _request.py's _DONE
_CHEAP_DRAIN = 65536  # body bytes an unread stream may still drain to keep its connection
_NO_HEADERS = Headers()  # immutable, so every exchange may start with this one


class Broken(Exception):
    """Internal: the leased connection broke before this request's turn; re-send it."""


class Lease(Protocol):
    """What an exchange needs from the connection its request holds a lease on.

    Every method is synchronous and not a checkpoint, except the two ``wait_*`` methods.
    """

    @property
    def connection(self) -> Connection:
        """The connected HTTP/1.1 connection."""

    @property
    def options(self) -> ClientOptions:
        """The options the connection was opened with."""

    async def wait_to_write(self, request: Request) -> None:
        """Wait for ``request``'s turn to write. A checkpoint if it waits.

        Raises:
            Broken: the connection broke meanwhile (re-send the request elsewhere).
            Interrupted: the request was aborted meanwhile.
        """

    def write_turn(self, request: Request) -> tuple[bool, bool] | None:
        """None unless it is ``request``'s turn to write (the leases before it are written);
        then: are responses to earlier requests still due, and is the reader due first one
        of the fast read mode that is not reading yet (then the bytes may be deferred until
        it reads)."""

    def written(self, request: Request, *, last: bool) -> None:
        """``request`` is on the wire (``last``: the connection takes no request after it)."""

    def may_read(self, request: Request) -> bool:
        """It is ``request``'s turn to read (the responses before its own were read)."""

    async def wait_to_read(self, request: Request) -> None:
        """Wait for ``request``'s turn to read. A checkpoint if it waits. Raises like
        :meth:`wait_to_write`."""

    def will_close(self, reason: BaseException) -> None:
        """The connection will serve no other request after this response: ``reason`` why
        (it closes when the lease is given back)."""

    def release(
        self, request: Request, *, reusable: bool, reason: BaseException | None = None
    ) -> None:
        """``request`` gives its lease back (``reason``: why the connection must close)."""

    def hand_over(self) -> None:
        """The transport is the caller's now (``upgrade()``/``connect()``): never close it."""


class Exchange:
    """The I/O of one request on one leased connection (see the module docstring)."""

    __slots__ = (
        "_closing",
        "_duplex",
        "_fresh",
        "_held",
        "_mark",
        "_options",
        "_parsed",
        "_reason",
        "_reused",
        "_total",
        "_writer",
        "chunks",
        "complete",
        "conn",
        "head",
        "http_version",
        "keep",
        "lease",
        "request",
        "switched",
        "taken_over",
        "trailers",
    )

    def __init__(self, lease: Lease, request: Request) -> None:
        self.lease = lease
        self.conn: Connection = lease.connection
        self._options = lease.options
        self.request = request
        self._held = True  # the lease is not given back yet
        request.attempt = self.conn  # not self: no request <-> exchange cycle
        self.complete = False  # the whole response was read
        self.keep = False  # ...and the connection may serve another request
        self.switched = False  # 101 to an upgrade or 2xx to a CONNECT: hand the stream over
        self.trailers = _NO_HEADERS
        self.chunks: list[bytes] = []  # the body, for read_rest()
        self.taken_over: trio.abc.Stream | None = None  # the switched connection, detached
        self.head: Head | None = None
        self.http_version = "1.1"
        self._parsed: FastHead | None = None  # the response head, as the parser gave it
        self._total = 0
        self._reused = self._fresh = False
        self._mark = 0
        self._duplex = False  # the body is (or was) written by a helper task
        self._writer: trio.CancelScope | None = None  # that helper's, while it runs
        self._closing = False  # close() was called while the helper ran...
        self._reason: BaseException | None = None  # ...saying why

    async def send(self, nursery: trio.Nursery | None = None) -> None:
        """Write the request in its turn. A checkpoint.

        With a ``nursery`` (duplex), a streaming body is written by a helper task started
        there, and this returns once the head is written.
        """
        request = self.request
        lease = self.lease
        conn = self.conn
        request.move(_RUNNING)
        turn = lease.write_turn(request)
        if turn is None:  # pipelined: wait for it
            await lease.wait_to_write(request)
            turn = lease.write_turn(request)
            assert turn is not None
        pipelined, defer = turn
        self._reused, self._mark, _ = conn.progress()
        self._fresh = True  # a write failure happens before any response byte
        # defer: the reader due first will read (and send what waits) as soon as it runs.
        writer = await conn.send_request(
            request, pipelined=pipelined, duplex=nursery is not None, defer=defer
        )
        request.written_at = trio.current_time()
        limit = self._options.max_requests_per_client
        lease.written(
            request,
            last=conn.must_close() or (limit is not None and conn.requests_started >= limit),
        )
        if writer is not None:
            assert nursery is not None
            self._duplex = True
            # Set before the task starts, so a close() in between can already cancel it.
            self._writer = trio.CancelScope()
            nursery.start_soon(self._write_body, writer, self._writer)

    async def _write_body(self, writer: h11.Connection, scope: trio.CancelScope) -> None:
        """The duplex helper task: write the body, then give the lease back if the exchange
        was closed meanwhile. A write error ends the request (unless its response already
        did) and cancels the reader's wait, so it reaches the caller."""
        request = self.request
        written = False
        try:
            with scope:
                await self.conn.send_body(request, writer)
                written = True
        except Exception as exc:
            if not request.ended:
                request.finish(exc)
                if request.scope is not None:
                    request.scope.cancel()
            self._close_later(exc)
        finally:
            self._writer = None
            if not written:
                # h11 is in ERROR now, even if the whole response was read meanwhile.
                self.keep = False
            if self._closing:
                self.close(self._reason)

    async def receive_head(self, scope: trio.CancelScope | None) -> Head:
        """Read the response head, after the responses before it. A checkpoint.

        Raises:
            HeadersTimeoutError (as a cancellation of ``scope``, mapped by the caller; as
            itself without a scope), HeadersOverflowError, HTTPParserError, SocketError.
        """
        request = self.request
        conn = self.conn
        lease = self.lease
        if not lease.may_read(request):  # pipelined: wait for it
            await lease.wait_to_read(request)
        # For the 1.6 retry: nothing of this response yet, nothing left over before it. A
        # pipelined request was written before any response, but if a response before it
        # completed, its own is due on a reused connection: unanswered, it is retried like
        # one written on an idle kept-alive connection (RFC 9112 9.3.2).
        self._reused, self._mark, buffered, pending = conn.response_started(request)
        self._fresh = not buffered
        options = self._options
        timeout = options.headers_timeout
        deadline = math.inf if timeout is None else request.written_at + timeout
        # A pipelined head has often arrived with the response before it: parsed here, it
        # needs no read (and no coroutine); only a read awaits, as in read_rest. With
        # nothing buffered (the usual unpipelined case) the parser is not even asked.
        event = conn.buffered_event() if pending else NEED_DATA
        if event is NEED_DATA:
            event = await conn.next_event(
                scope,
                HeadersTimeoutError,
                timeout,
                deadline=deadline,
                read_first=True,
                request=request,
            )
        if type(event) is not FastHead or event.informational:  # the usual case needs no checks
            while type(event) is FastHead and event.informational:
                if conn.switched():  # 101 to an upgrade
                    break
                event = await conn.next_event(
                    scope, HeadersTimeoutError, timeout, deadline=deadline, request=request
                )
            if type(event) is not FastHead:
                raise SocketError(f"unexpected {event!r} instead of a response")
        raw = event.raw
        # h11 bounds only an *incomplete* head; one that arrived whole is measured here,
        # unless all the bytes it can be made of are few enough: those buffered when we
        # began to wait for it (a pipelined response's, usually) and those that came since.
        limit = options.max_header_size
        if buffered + conn.received_bytes - self._mark > limit:
            size = sum(len(name) + len(value) + 4 for name, value in raw)
            if size > limit:
                raise HeadersOverflowError(
                    f"response headers exceed max_header_size ({limit} bytes)"
                )
        headers = Headers._from_raw(raw)
        if request.upgrade and conn.switched():
            if event.status == 101 and headers._raw_get(b"upgrade") is None:
                # RFC 9110 15.2.2: a 101 names the protocol switched to (undici refuses one
                # that does not, and so does a server-side h11).
                raise HTTPParserError("a 101 (Switching Protocols) response without upgrade")
            self.switched = self.complete = True
        else:
            if event.conflicting:
                # h11 lets transfer-encoding win; RFC 9112 6.3 says to treat it as an error
                # (request smuggling, response splitting), as undici's parser does.
                raise HTTPParserError("the response has both content-length and transfer-encoding")
            self._parsed = event
            most = options.max_response_size
            if most is not None:
                self._check_announced_size(event, most)
            conn.response_framing(event)
        self.http_version = event.http_version.decode("ascii")
        self.head = (event.status, headers, event.reason.decode("latin-1"))
        return self.head

    def _check_announced_size(self, head: FastHead, limit: int) -> None:
        """A body announced larger than ``max_response_size`` fails at its head, before a
        byte of it is read (HEAD, 204 and 304 announce a size but carry no body)."""
        if self.request.method == b"HEAD" or head.status in (204, 304):
            return
        length = head.length  # the parser's framing: no header is scanned again
        if length is not None and length > limit:
            raise ResponseExceededMaxSizeError(
                f"the response announces {length} bytes, over max_response_size ({limit})"
            )

    async def receive_data(self, scope: trio.CancelScope) -> bytes | None:
        """The next piece of the body, or None at its end. A checkpoint when it has to read.

        Raises:
            BodyTimeoutError (as a cancellation of ``scope``), ResponseExceededMaxSizeError,
            ResponseContentLengthMismatchError, HTTPParserError, SocketError.
        """
        if self.complete:
            return None
        conn = self.conn
        event = conn.buffered_event()
        if event is NEED_DATA:
            event = await conn.next_event(
                scope, BodyTimeoutError, self._options.body_timeout, read_first=True
            )
        return self._body_event(event)

    def _body_event(self, event: object) -> bytes | None:
        """A body event: a chunk, or None at the end (trailers kept, lease made reusable)."""
        if type(event) is bytes:
            self._total += len(event)
            limit = self._options.max_response_size
            if limit is not None and self._total > limit:
                raise ResponseExceededMaxSizeError(
                    f"response body exceeds max_response_size ({limit} bytes)"
                )
            return event
        if type(event) is End:
            trailers = event.trailers
            if trailers:
                self.trailers = Headers._from_raw(trailers)
            self.complete = True
            self.keep = self._next_cycle()
            return None
        raise SocketError(f"unexpected {event!r} in a response body")

    async def read_rest(self, scope: trio.CancelScope | None) -> None:
        """Read the whole body into :attr:`chunks` and end the request. A checkpoint
        (unless the whole body had already arrived). Without a ``scope`` it raises like
        :meth:`receive_head`."""
        chunks = self.chunks
        conn = self.conn
        while not self.complete:
            # What has arrived is parsed here; only a read awaits (receive_data's work).
            event = conn.buffered_event()
            if event is NEED_DATA:
                event = await conn.next_event(
                    scope,
                    BodyTimeoutError,
                    self._options.body_timeout,
                    read_first=True,
                    request=self.request,
                )
            chunk = self._body_event(event)
            if chunk is not None:
                chunks.append(chunk)
        self.request.finish(None)

    def _next_cycle(self) -> bool:
        """After a complete response: may the connection serve another request?"""
        assert self._parsed is not None
        reason = self.conn.next_cycle(self._parsed)
        if reason is None:
            return True
        self.lease.will_close(reason)
        return False

    def retryable(self, error: BaseException) -> bool:
        """May ``request`` be re-sent after ``error`` (API.md 1.6)? Marks it retried."""
        request = self.request
        if (
            isinstance(error, SocketError)
            and self._reused
            and self._fresh
            and self.conn.received_bytes == self._mark
            and request.idempotent
            and not request.retried
            and self._options.retry_idempotent
            and not self._duplex
            and replayable(request.body)  # a generator's or a file's body is gone
        ):
            request.retried = True
            return True
        return False

    def drain_buffered(self) -> None:
        """Read the rest of the body if it has already arrived and is small (no I/O wait,
        not a checkpoint), so an unread stream keeps its connection when that is cheap."""
        if self.complete or not self._held:
            return
        limit = self._options.max_response_size
        budget = self._total + _CHEAP_DRAIN
        conn = self.conn
        try:
            while self._total <= budget:
                event = conn.buffered_event()
                if event is NEED_DATA:
                    if not conn.receive_nowait():
                        return
                elif type(event) is bytes:
                    self._total += len(event)
                    if limit is not None and self._total > limit:
                        return
                elif type(event) is End:
                    self.complete = True
                    self.keep = self._next_cycle()
                    return
                else:
                    return
        except TrioPoolError:
            return

    def close(self, reason: BaseException | None = None) -> None:
        """Give the lease back: reusable only after a complete, persistent response; else
        the connection closes, ``reason`` saying why (for ``"disconnect"`` listeners)."""
        if not self._held:
            return  # given back already
        if self._writer is not None:
            # The duplex helper may be mid-write: it gives the lease back as it ends.
            self._close_later(reason)
            self._writer.cancel()
            return
        if self.switched:
            self.lease.hand_over()
            reason = InformationalError("the connection was handed over")
        elif not self.keep and reason is None:
            reason = InformationalError("a request ended before its response did")
        self._held = False
        self.lease.release(self.request, reusable=self.keep, reason=reason)

    def _close_later(self, reason: BaseException | None) -> None:
        self._closing = True
        if self._reason is None:
            self._reason = reason
