"""One HTTP/1.1 connection: a :class:`Transport` plus a response :class:`Parser`, and nothing
else.

Theory of operation
-------------------
:class:`Connection` speaks HTTP/1.1 over exactly one transport (``_transport.py``, which does
every system call) and maps every failure to the library's errors, with the original as
``__cause__``: connect problems become ``ConnectError``/``ConnectTimeoutError``, a broken
stream ``SocketError``, a parser's (h11's) ``RemoteProtocolError`` ``HTTPParserError`` (or
``HeadersOverflowError`` for h11's 431 hint, or ``ResponseContentLengthMismatchError`` when
the peer closed a content-length body early). It owns no task and makes no policy decision:
the exchange (``_exchange.py``) and the pooled connection (``_pooled.py``) decide when to
write, read, reuse or close.

Requests are written as bytes: a prepared request's cached wire form, else
:func:`~._wire.request_bytes` (h11's bytes for a strictly valid request with a whole body),
else what a throwaway h11 connection serialises (its validation, its errors, chunked
bodies). Responses are read by
the :class:`~._parser.Parser` seam (the strict fast reader, h11 for anything else), told by
:meth:`Connection.expect` which request the next response answers (its method, its upgrade).
Persistence is decided here: a request is *complete* once its end is written
(``_written``), the first request with ``connection: close`` (``_close_at``) is the last,
and the parser says whether the server keeps the connection.

State and who changes it: every field is private and changed only by this class's methods.
The counters (``requests_started``, ``responses``, ``received_bytes``) only grow; the read
in progress (``reading``, ``read_deadline``) is set by :meth:`next_event` and cleared when its
read ends or by :meth:`expire_read` (the pooled connection's task, at the deadline);
:meth:`next_cycle` is the one place a response's end makes the connection reusable.
"""

from __future__ import annotations

import inspect
import math
import traceback
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import h11
import trio

from .._errors import (
    HeadersOverflowError,
    HTTPParserError,
    InformationalError,
    RequestContentLengthMismatchError,
    ResponseContentLengthMismatchError,
    SocketError,
    TrioPoolError,
)
from ._parser import H11_ONLY, NEED_DATA, Event, FastHead, Parser
from ._request import Cancellable, Interrupted
from ._transport import Connector, Transport, open_stream
from ._wire import request_bytes

if TYPE_CHECKING:
    from ._options import ClientOptions
    from ._origin import Origin
    from ._request import Request

__all__ = ["Connection", "Connector", "open_stream"]

_END = h11.EndOfMessage()  # immutable: one for every request
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class Connection:
    """HTTP/1.1 over one transport. No method here is safe to call from two tasks at once,
    except :meth:`send_body` alongside the reads (see there)."""

    __slots__ = (
        "_close_at",
        "_connected_at",
        "_flushing",
        "_idle_deadline",
        "_leftover",
        "_on_read",
        "_options",
        "_outbox",
        "_parser",
        "_read_deadline",
        "_reader",
        "_received_bytes",
        "_received_eof",
        "_requests_started",
        "_response_head",
        "_responses",
        "_transport",
        "_waiting_for",
        "_waiting_timeout",
        "_written",
    )

    def __init__(
        self,
        transport: Transport,
        options: ClientOptions,
        on_read: Callable[[float], None] | None = None,
    ) -> None:
        self._transport = transport
        self._options = options
        self._parser = Parser(options.max_header_size)
        self._written = 0  # requests whose end was written (or queued in the outbox)
        self._close_at: int | None = None  # index of the first request with connection: close
        self._connected_at = trio.current_time()
        self._requests_started = 0
        self._responses = 0  # complete responses: a connection with any is "reused"
        self._received_bytes = 0  # total, so "no response byte yet" is a cheap comparison
        # The head of the response being read (whether a content-length frames it).
        self._response_head: FastHead | None = None
        self._idle_deadline = math.inf
        self._leftover = False  # bytes arrived with the last response (an EOF ends reuse)
        self._waiting_for: type[TrioPoolError] = SocketError  # the error of an expired read
        self._waiting_timeout: float | None = None
        # What interrupts the read waiting for bytes, and when it times out; the pooled
        # connection's task (told by on_read) calls expire_read() then. No scope deadline is
        # set per read.
        self._reader: Cancellable | None = None
        self._read_deadline = math.inf
        self._on_read = on_read
        # Pipelined requests written but not yet sent (see send_request's ``defer``).
        self._outbox: list[bytes] = []
        self._flushing = False  # a reader is sending the outbox
        self._received_eof = False

    @classmethod
    async def open(
        cls,
        origin: Origin,
        options: ClientOptions,
        connector: Connector | None,
        on_read: Callable[[float], None] | None = None,
    ) -> Connection:
        """Open the transport (:meth:`Transport.open`). A checkpoint. ``on_read(deadline)`` is
        called when a read with a deadline starts waiting.

        Raises:
            ConnectTimeoutError, ConnectError: see :meth:`Transport.open`.
        """
        return cls(await Transport.open(origin, options, connector), options, on_read)

    # ------------------------------------------------------------------ predicates, counters

    @property
    def connected_at(self) -> float:
        """Trio time the connection was established."""
        return self._connected_at

    @property
    def requests_started(self) -> int:
        """Requests written (or being written) on this connection."""
        return self._requests_started

    @property
    def received_bytes(self) -> int:
        """Bytes received in total (so "no response byte yet" is a cheap comparison)."""
        return self._received_bytes

    @property
    def idle_deadline(self) -> float:
        """When the connection expires if idle (set by :meth:`next_cycle`)."""
        return self._idle_deadline

    @property
    def reading(self) -> bool:
        """A read is waiting for bytes (and can be interrupted)."""
        return self._reader is not None

    @property
    def read_deadline(self) -> float:
        """When the read in progress times out (inf: never, or no read)."""
        return self._read_deadline

    def must_close(self) -> bool:
        """A request written asked to close the connection (``connection: close``)."""
        return self._close_at is not None

    def switched(self) -> bool:
        """The server switched protocols (101 to an upgrade, 2xx to a CONNECT)."""
        return self._parser.switched()

    def alive(self) -> bool:
        """False if the peer closed the connection or sent bytes nobody asked for while it
        was idle (RFC 9112 9.3.1 makes a request on it a lost cause). Not a checkpoint (see
        :meth:`Transport.alive`)."""
        return not self._leftover and self._transport.alive()

    def expire_read(self) -> None:
        """The read in progress is past its deadline: interrupt it (its caller raises the
        timeout error). Not a checkpoint."""
        reader = self._reader
        if reader is not None and trio.current_time() >= self._read_deadline:
            self._read_deadline = math.inf
            reader.cancel()

    def next_cycle(self, head: FastHead) -> BaseException | None:
        """After a complete response (with ``head``): get ready for the next one and set
        the idle lifetime (honouring the head's ``Keep-Alive: timeout=N`` hint). Returns why
        the connection must close instead, or None."""
        index = self._responses  # the request this response answers
        persistent, leftover, closed = self._parser.finish(head)
        # The response's head and request mattered only while it was read: an idle
        # connection keeping them (a header list, a request and its body) cost ~1.2 KiB and
        # more (issue #16). The next response's reader calls expect() first.
        self._response_head = None
        self._parser.forget()
        close_at = self._close_at
        if not persistent or self._written <= index or (close_at is not None and close_at <= index):
            return InformationalError("the connection is not persistent")
        if closed:
            # The server closed the connection: with this response (its EOF-delimited body
            # ended there), or right behind it. Requests pipelined behind it are re-sent.
            return InformationalError("the server closed the connection")
        self._responses += 1
        self._leftover = leftover
        options = self._options
        lifetime = options.keep_alive_timeout
        hint = None if head.hint is None else keep_alive_hint(head.hint)
        if hint is not None:
            lifetime = hint - options.keep_alive_timeout_threshold
            if lifetime <= 0:
                return InformationalError("the server's keep-alive timeout is too short")
            if options.keep_alive_max_timeout is not None:
                lifetime = min(lifetime, options.keep_alive_max_timeout)
        self._idle_deadline = math.inf if lifetime is None else trio.current_time() + lifetime
        return None

    def receive_nowait(self) -> bool:
        """Feed h11 with whatever the socket already holds (no I/O wait, not a
        checkpoint); False if nothing could be read that way (empty, not a socket)."""
        try:
            data = self._transport.receive_ready()
        except trio.BrokenResourceError:
            return False
        if data is None:
            return False
        self._received(data)
        return True

    def _received(self, data: bytes) -> None:
        if data:
            self._received_bytes += len(data)
        else:
            self._received_eof = True
        self._parser.receive_data(data)

    async def aclose(self) -> None:
        """Close the transport at once (no graceful TLS goodbye). A checkpoint."""
        # A closed connection is dropped by its owner: let go first of what refers back to
        # it (its owner's wake_by, the request it was reading) so nothing is left in a
        # reference cycle (issue #16).
        self._on_read = None
        self._parser.forget()
        await self._transport.aclose()

    def detach(self) -> trio.abc.Stream:
        """Stop owning the transport (``upgrade()``/``connect()`` hand it over)."""
        return self._transport.detach(self._parser.leftover())

    # ------------------------------------------------------------------ writing

    async def send_request(
        self, request: Request, *, pipelined: bool, duplex: bool = False, defer: bool = False
    ) -> h11.Connection | None:
        """Write the request; ``pipelined``: responses to earlier ones are still due. A
        checkpoint, unless deferred.

        With ``duplex`` a streaming body is left to :meth:`send_body` (another task may read
        the response meanwhile) and the h11 machine to pass it is returned; otherwise the
        whole request is written and None returned. An interrupted write (error or
        cancellation) leaves the connection unusable; h11 is told so with ``send_failed()``.

        ``defer`` (pipelined, whole body): the task that reads the response due first is
        about to run and will read until it has to wait, so the bytes go to :attr:`_outbox`
        and leave with the next write or before that read waits (:meth:`next_event`):
        pipelined requests made meanwhile share one system call. While a reader sends the
        outbox, a request written joins it too (one sender at a time).
        """
        self._requests_started += 1
        if self._close_at is None and request.closes:
            self._close_at = self._requests_started - 1
        writer = None
        try:
            data = None if H11_ONLY else request.wire or request_bytes(request)
            if data is None:
                # Validated and framed by h11 (its state is thrown away: the response is
                # the parser's).
                writer = h11.Connection(h11.CLIENT)
                head = writer.send(request.h11_event())
                assert head is not None
                body = request.body
                if body is not None and not isinstance(body, bytes):
                    await self._send_all(head)
                    if duplex:
                        return writer
                    await self._send_body(writer, body)
                    return None
                data = head + _send(writer, h11.Data(data=body)) if body else head
                data += _send(writer, _END)
            if defer or self._flushing:
                self._outbox.append(data)
                self._written += 1
                return None
            await self._send_all(data)
            self._written += 1
        except BaseException as exc:
            _write_failed(writer, exc)
            raise
        return None

    async def send_body(self, request: Request, writer: h11.Connection) -> None:
        """Write the streaming body of a request whose head :meth:`send_request` wrote
        (``duplex``), then its end. A checkpoint. The one method that may run while another
        task reads the response: Trio streams allow one sender and one receiver at once.
        """
        try:
            await self._send_body(writer, request.body)
        except BaseException as exc:
            _write_failed(writer, exc)
            raise

    async def _send_body(self, writer: h11.Connection, body: object) -> None:
        if isinstance(body, AsyncIterable):
            chunks = aiter(body)
            try:
                async for chunk in chunks:
                    await self._send_chunk(writer, chunk)
            finally:
                # Stopped mid-way (an error, a cancellation, the caller left): finish an
                # async generator now, in this task, rather than leave it to the garbage
                # collector (which warns, and runs its cleanup outside any cancel scope).
                if inspect.isasyncgen(chunks):
                    await chunks.aclose()
        else:
            assert isinstance(body, Iterable)
            for chunk in body:
                await self._send_chunk(writer, chunk)
        await self._send_all(_send(writer, _END))
        self._written += 1

    async def _send_chunk(self, writer: h11.Connection, chunk: bytes) -> None:
        if chunk:
            await self._send_all(_send(writer, h11.Data(data=chunk)))

    def _send_all(self, data: bytes) -> Awaitable[None]:
        """Write :attr:`_outbox`, then ``data``, whole (see :meth:`Transport.send_all`; the
        awaitable is the transport's: no coroutine frame of its own)."""
        if self._outbox:
            self._outbox.append(data)
            data = b"".join(self._outbox)
            self._outbox = []
        return self._transport.send_all(data)

    async def _receive_unscoped(self, request: Request) -> bytes | None:
        """The next bytes for a request without a cancel scope (a cancel scope costs more
        than the rest of a small request's bookkeeping). A read that has to wait can be
        interrupted (a timeout, an abort): on plain TCP through the socket (the connection
        is closed afterwards anyway), else in a cancel scope entered for it. None if it
        would wait while deferred requests are unsent. A checkpoint.

        Raises:
            Interrupted: the request was aborted meanwhile.
            TrioPoolError: the read's timeout (:meth:`timeout_error`).
        """
        transport = self._transport
        if not transport.raw:  # a custom stream (TLS on a socket is raw too)
            with trio.CancelScope() as scope:
                self._waiting(request, scope)
                try:
                    return await transport.receive()
                finally:
                    self._reader = request.scope = None
        else:
            await trio.lowlevel.checkpoint()  # first, so the bytes are there (see receive)
            if request.ended:  # aborted during the schedule point
                raise Interrupted
            data = transport.receive_ready()
            if data is not None:
                return data
            if self._outbox:
                return None
            self._waiting(request, transport.arm_interrupt())
            try:
                data = await transport.wait_receive()
            finally:
                self._reader = request.scope = None
            if data is not None:
                return data
        if request.ended:  # aborted
            raise Interrupted
        raise self.timeout_error()

    def _waiting(self, request: Request, interrupt: Cancellable) -> None:
        """A read without a request scope is about to wait: let a timeout or an abort
        interrupt it."""
        self._reader = request.scope = interrupt
        if request.ended:
            interrupt.cancel()
        elif self._on_read is not None and self._read_deadline < math.inf:
            # The pooled connection found no read waiting when it last looked: re-arm it.
            self._on_read(self._read_deadline)

    def timeout_error(self) -> TrioPoolError:
        """The error of the read whose deadline expired."""
        return self._waiting_for(f"no response data within {self._waiting_timeout} s")

    # ------------------------------------------------------------------ reading

    def progress(self) -> tuple[bool, int, bool]:
        """Whether any response completed (the connection is *reused*), the bytes received so
        far, and whether bytes arrived behind the last response: what an exchange remembers
        for the retry rule (API.md 1.6), read in one call."""
        return self._responses > 0, self._received_bytes, self._leftover

    def response_started(self, request: Request) -> tuple[bool, int, int, bool]:
        """The response to ``request`` is next: tell the parser, forget the last one's
        framing. Returns :meth:`progress` with the buffered bytes counted, and whether
        :meth:`buffered_event` may find an event (bytes buffered, or the peer's EOF)."""
        self._parser.expect(request)
        self._response_head = None
        buffered = len(self._parser.leftover())
        pending = buffered > 0 or self._received_eof
        return self._responses > 0, self._received_bytes, buffered, pending

    def response_framing(self, head: FastHead) -> None:
        """The head of the response being read (whether a content-length frames it, for
        the error of an early EOF)."""
        self._response_head = head

    def buffered_event(self) -> Event:
        """The next parser event from what has arrived, or ``NEED_DATA``. Not a checkpoint.

        Raises:
            HTTPParserError and the like (see :meth:`next_event`).
        """
        try:
            return self._parser.next_event()
        except h11.RemoteProtocolError as exc:
            raise _protocol_error(
                exc, self._options.max_header_size, self._received_eof, self._response_head
            ) from exc

    async def next_event(
        self,
        scope: trio.CancelScope | None,
        on_timeout: type[TrioPoolError],
        timeout: float | None,
        *,
        deadline: float | None = None,
        read_first: bool = False,
        request: Request | None = None,
    ) -> Event:
        """The next parser event of the response (``_parser.py``). A checkpoint only when it
        has to read; ``read_first``: the caller just got ``NEED_DATA`` from :meth:`buffered_event`.

        Each read times out at ``deadline`` (a total, for headers) or else ``timeout`` from
        now (an idle gap, for the body): the pooled connection then cancels ``scope``, the
        caller's request scope, and the caller raises ``timeout_error()`` (``on_timeout``).

        Without a ``scope`` (the fast read mode: its ``request`` runs without one), a read
        that has to wait is interrupted through the transport; this raises the timeout
        error itself, and ``Interrupted`` if the request was aborted meanwhile.

        Raises:
            SocketError, HTTPParserError, HeadersOverflowError,
            ResponseContentLengthMismatchError; without a scope also ``on_timeout`` and
            ``Interrupted``. The connection is unusable after any of them.
        """
        while True:
            if read_first:
                read_first = False
            else:
                event = self.buffered_event()
                if event is not NEED_DATA:
                    return event
            if timeout is None:
                self._read_deadline = math.inf
            else:
                when = trio.current_time() + timeout if deadline is None else deadline
                self._read_deadline = when
                self._waiting_for = on_timeout
                self._waiting_timeout = timeout
                if self._on_read is not None:
                    self._on_read(when)
            if self._outbox:  # deferred pipelined requests leave before this read waits
                # Requests written meanwhile join the outbox rather than send alongside
                # (one sender at a time: a reader of the general mode is not deferred to).
                self._flushing = True
                try:
                    while self._outbox:
                        await self._send_all(b"")
                except _STREAM_ERRORS as exc:
                    raise SocketError(f"writing the request failed: {exc!r}") from exc
                finally:
                    self._flushing = False
            try:
                if scope is None:
                    assert request is not None
                    data = await self._receive_unscoped(request)
                    if data is None:
                        continue  # requests were deferred meanwhile: send them first
                else:
                    self._reader = scope
                    try:
                        data = await self._transport.receive()
                    finally:
                        self._reader = None
            except _STREAM_ERRORS as exc:
                raise SocketError(f"reading the response failed: {exc!r}") from exc
            if data:
                self._received_bytes += len(data)
            else:
                self._received_eof = True
            self._parser.receive_data(data)


def _protocol_error(
    exc: h11.RemoteProtocolError, max_header_size: int, eof: bool, head: FastHead | None
) -> TrioPoolError:
    """The error a response that h11 refused is reported as (``eof``: the server closed
    the connection; ``head``: the response's, if it got that far)."""
    # h11 turns a LocalProtocolError into ``exc`` by raising it from a frame that holds it:
    # a cycle (the error, its traceback, that frame) that would keep the connection's
    # frames and request alive until a collection (issue #16). The frames below the
    # catcher have finished: their locals can go (the traceback still prints).
    traceback.clear_frames(exc.__traceback__)
    if exc.error_status_hint == 431:
        return HeadersOverflowError(
            f"response headers exceed max_header_size ({max_header_size} bytes)"
        )
    if eof:
        if head is not None and head.length is not None:
            return ResponseContentLengthMismatchError(
                f"the server closed the connection before the whole body: {exc}"
            )
        return SocketError("other side closed")
    return HTTPParserError(f"the server violated HTTP/1.1: {exc}")


def keep_alive_hint(raw: bytes | None) -> int | None:
    """The ``timeout=N`` of a ``Keep-Alive`` header in seconds, or None (absent or malformed).

    As undici does, the leading integer of the value counts (``timeout=5s`` and
    ``timeout=5.9`` are 5 s); a value that does not start with a digit is ignored."""
    if not raw:
        return None
    for part in raw.decode("latin-1").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "timeout":
            value = value.strip()
            digits = len(value) - len(value.lstrip("0123456789"))
            return int(value[:digits]) if digits else None
    return None


def _write_failed(writer: h11.Connection | None, exc: BaseException) -> None:
    """An interrupted write: tell h11 (``writer``), and raise the library's error for
    ``exc`` (the original as ``__cause__``), or return to let it propagate as it is."""
    if writer is not None:
        writer.send_failed()
    if isinstance(exc, h11.LocalProtocolError):
        raise RequestContentLengthMismatchError(
            f"request body does not match its content-length: {exc}"
        ) from exc
    if isinstance(exc, _STREAM_ERRORS):
        raise SocketError(f"writing the request failed: {exc!r}") from exc


def _send(writer: h11.Connection, event: h11.Event) -> bytes:
    data = writer.send(event)
    assert data is not None
    return data
