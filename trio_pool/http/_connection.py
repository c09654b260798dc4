"""One HTTP/1.1 connection: a Trio stream plus an h11 state machine, and nothing else.

Theory of operation
-------------------
:class:`Connection` does the I/O of exactly one socket and maps every failure to the
library's errors, with the original as ``__cause__``: connect problems become
``ConnectError``/``ConnectTimeoutError``, a broken stream ``SocketError``, an h11
``RemoteProtocolError`` ``HTTPParserError`` (or ``HeadersOverflowError`` for h11's 431 hint,
or ``ResponseContentLengthMismatchError`` when the peer closed a content-length body early).
It owns no task and makes no policy decision: the exchange (``_exchange.py``) and the
connection's worker (``_worker.py``) decide when to write, read, reuse or close.

On a plain TCP connection the bytes go through a non-blocking duplicate of the socket
(the one :meth:`Connection.alive` peeks with) rather than ``SocketStream``: one system call
per write or read plus Trio's wait primitives, with the same cancellation points as
``send_all``/``receive_some`` but a fraction of their per-call Python overhead, which
dominates a small request's cost. TLS and custom streams (``connector=``) use the stream.

h11 cannot have a second request outstanding, so a request written while an earlier response
is still open (pipelining) is serialised by a throwaway h11 connection and later *replayed*
into the main one (its bytes discarded) when its response is due, so the main state machine
knows the method (HEAD) and connection semantics of the response it parses.
"""

from __future__ import annotations

import inspect
import math
import os
import socket
import ssl
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import h11
import trio

from .._errors import (
    ConnectTimeoutError,
    HeadersOverflowError,
    HTTPParserError,
    RequestContentLengthMismatchError,
    ResponseContentLengthMismatchError,
    SocketError,
    TrioPoolError,
    connect_error,
)
from ._request import Cancellable, Interrupted

if TYPE_CHECKING:
    from ._options import ClientOptions
    from ._origin import Origin
    from ._request import Request

__all__ = ["Connection", "Connector", "open_stream"]

Connector = Callable[["Origin"], Awaitable[trio.abc.Stream]]
"""A custom way to open the transport (the ``connector=`` option): e.g. in-memory streams."""

_RECEIVE_SIZE = 65536
_END = h11.EndOfMessage()  # immutable: one for every request
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class Connection:
    """The I/O of one connection. No method here is safe to call from two tasks at once,
    except :meth:`send_body` alongside the reads (see there)."""

    __slots__ = (
        "_interrupt",
        "_options",
        "_probe",
        "_raw",
        "_received_eof",
        "connected_at",
        "h11",
        "idle_deadline",
        "leftover",
        "on_read",
        "outbox",
        "read_deadline",
        "reader",
        "received_bytes",
        "requests_started",
        "response_head",
        "responses",
        "stream",
        "waiting_for",
        "waiting_timeout",
    )

    def __init__(self, stream: trio.abc.Stream, options: ClientOptions) -> None:
        self.stream = stream
        self._options = options
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=options.max_header_size)
        self.connected_at = trio.current_time()
        self.requests_started = 0
        self.responses = 0  # complete responses: a connection with any is "reused"
        self.received_bytes = 0  # total, so "no response byte yet" is a cheap comparison
        # The raw headers of the response being read (whether a content-length frames it).
        self.response_head: list[tuple[bytes, bytes]] = []
        self.idle_deadline = math.inf
        self.leftover = False  # bytes arrived with the last response (an EOF ends reuse)
        self.waiting_for: type[TrioPoolError] = SocketError  # the error of an expired read
        self.waiting_timeout: float | None = None
        # The cancel scope of the read waiting for bytes, and when it times out; the worker
        # (told by on_read) cancels the scope then. No scope deadline is set per read.
        self.reader: Cancellable | None = None
        self.read_deadline = math.inf
        self.on_read: Callable[[float], None] | None = None
        # Pipelined requests written but not yet sent (see send_request's ``defer``).
        self.outbox: list[bytes] = []
        self._received_eof = False
        self._probe = _probe_socket(stream)
        # Plain TCP: do the I/O on the probe (see the module docstring).
        self._raw = self._probe if isinstance(stream, trio.SocketStream) else None
        self._interrupt = None if self._raw is None else _SocketInterrupt(self._raw)

    def alive(self) -> bool:
        """False if the peer closed the connection or sent bytes nobody asked for while it
        was idle (RFC 9112 9.3.1 makes a request on it a lost cause). Not a checkpoint: a
        non-blocking ``MSG_PEEK`` on the TCP socket, one system call.

        Streams that are not (TLS over) a trio socket — e.g. in-memory test streams — cannot
        be probed and count as alive; their failure then shows on the next request (and an
        idempotent one is retried).
        """
        if self.leftover:
            return False
        if self._probe is None:
            return True
        try:
            self._probe.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        # b"" is a FIN; anything else is unsolicited (for TLS: possibly a close_notify or a
        # late session ticket; either way this connection is not worth the risk).
        return False

    @classmethod
    async def open(
        cls, origin: Origin, options: ClientOptions, connector: Connector | None
    ) -> Connection:
        """:func:`open_stream`, as a connection. A checkpoint; raises like it."""
        return cls(await open_stream(origin, options, connector), options)

    def receive_nowait(self) -> bool:
        """Feed h11 with whatever a plain TCP socket already holds (no I/O wait, not a
        checkpoint); False if nothing could be read that way (empty, TLS, not a socket)."""
        if self._probe is None or not isinstance(self.stream, trio.SocketStream):
            return False
        try:
            data = self._probe.recv(_RECEIVE_SIZE)
        except OSError:  # BlockingIOError: nothing there
            return False
        if data:
            self.received_bytes += len(data)
        else:
            self._received_eof = True
        self.h11.receive_data(data)
        return True

    async def aclose(self) -> None:
        """Close the transport at once (no graceful TLS goodbye). A checkpoint."""
        if self._probe is not None:
            trio.lowlevel.notify_closing(self._probe)  # a task waiting on it gets an error
            self._probe.close()
        await trio.aclose_forcefully(self.stream)

    def detach(self) -> trio.abc.Stream:
        """Stop owning the transport (``upgrade()``/``connect()`` hand it over)."""
        if self._probe is not None:
            trio.lowlevel.notify_closing(self._probe)
            self._probe.close()
        leftover, _ = self.h11.trailing_data
        return PrefixedStream(self.stream, leftover) if leftover else self.stream

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
        about to run and will read until it has to wait, so the bytes go to :attr:`outbox`
        and leave with the next write or before that read waits (:meth:`next_event`):
        pipelined requests made meanwhile share one system call.
        """
        self.requests_started += 1
        request.replay = pipelined
        writer = None
        try:
            if pipelined and request.wire is not None:
                # Its bytes are known: no side serialiser needed (the replay updates h11).
                if defer:
                    self.outbox.append(request.wire)
                    return None
                await self._send_all(request.wire)
                return None
            writer = h11.Connection(h11.CLIENT) if pipelined else self.h11
            head = writer.send(request.h11_event())
            assert head is not None
            body = request.body
            if body is None or isinstance(body, bytes):
                data = head + _send(writer, h11.Data(data=body)) if body else head
                data += _send(writer, _END)
                if defer:
                    self.outbox.append(data)
                    return None
                await self._send_all(data)
                return None
            await self._send_all(head)
            if duplex:
                return writer
            await self._send_body(writer, body)
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

    async def _send_chunk(self, writer: h11.Connection, chunk: bytes) -> None:
        if chunk:
            await self._send_all(_send(writer, h11.Data(data=chunk)))

    async def _send_all(self, data: bytes) -> None:
        """Write :attr:`outbox`, then ``data``, whole. Checks for cancellation first; waits
        (a checkpoint) only while the socket's buffer is full. A broken socket raises
        ``BrokenResourceError``, as ``SocketStream`` does."""
        if self.outbox:
            self.outbox.append(data)
            data = b"".join(self.outbox)
            self.outbox = []
        raw = self._raw
        if raw is None:
            await self.stream.send_all(data)
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        total = len(data)
        sent = 0
        try:
            while True:
                try:
                    sent += raw.send(memoryview(data)[sent:] if sent else data)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(raw)
                    continue
                if sent >= total:
                    return
                await trio.lowlevel.wait_writable(raw)
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    async def _receive(self) -> bytes:
        """The next bytes from the server (b"" at EOF). A checkpoint, like
        ``receive_some``: a read that has to wait waits for the socket, one that does not
        is still a schedule point."""
        raw = self._raw
        if raw is None:
            data = await self.stream.receive_some(_RECEIVE_SIZE)
            return bytes(data) if type(data) is not bytes else data
        # The schedule point first: the request was usually just written, and while the
        # other tasks run the server answers, so the read then finds the bytes there
        # instead of failing (a system call and an exception) and waiting for the socket
        # (an epoll registration and a wake-up), as a hand-written send/receive loop does.
        await trio.lowlevel.checkpoint()
        try:
            while True:
                try:
                    return raw.recv(_RECEIVE_SIZE)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(raw)
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    async def _receive_unscoped(self, request: Request) -> bytes | None:
        """:meth:`_receive` for a request without a cancel scope (a cancel scope costs
        more than the rest of a small request's bookkeeping). A read that has to wait can
        be interrupted (a timeout, an abort): on plain TCP through the socket (the
        connection is closed afterwards anyway), else in a cancel scope entered for it.
        None if it would wait while deferred requests are unsent."""
        raw = self._raw
        if raw is None:
            with trio.CancelScope() as scope:
                self._waiting(request, scope)
                try:
                    return await self._receive()
                finally:
                    self.reader = request.scope = None
        else:
            await trio.lowlevel.checkpoint()  # see _receive: first, so the bytes are there
            if request.ended:  # aborted during the schedule point
                raise Interrupted
            interrupt = self._interrupt
            assert interrupt is not None
            try:
                try:
                    return raw.recv(_RECEIVE_SIZE)
                except BlockingIOError:
                    if self.outbox:
                        return None
                interrupt.fired = False
                self._waiting(request, interrupt)
                try:
                    while True:
                        await trio.lowlevel.wait_readable(raw)
                        try:
                            data = raw.recv(_RECEIVE_SIZE)
                        except BlockingIOError:
                            continue
                        if not interrupt.fired:  # else it fired as the bytes came: too late
                            return data
                        break
                finally:
                    self.reader = request.scope = None
            except trio.ClosedResourceError:
                if not interrupt.fired:
                    raise
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        if request.ended:  # aborted
            raise Interrupted
        raise self.timeout_error()

    def _waiting(self, request: Request, interrupt: Cancellable) -> None:
        """A read without a request scope is about to wait: let a timeout or an abort
        interrupt it."""
        self.reader = request.scope = interrupt
        if request.ended:
            interrupt.cancel()
        elif self.on_read is not None and self.read_deadline < math.inf:
            # The worker found no read waiting when it last looked: re-arm it.
            self.on_read(self.read_deadline)

    def timeout_error(self) -> TrioPoolError:
        """The error of the read whose deadline expired."""
        return self.waiting_for(f"no response data within {self.waiting_timeout} s")

    def replay(self, request: Request) -> None:
        """Tell the main h11 machine about a request written through a side serialiser."""
        self.h11.send(request.h11_event())
        body = request.body
        if body:
            assert isinstance(body, bytes)
            self.h11.send(h11.Data(data=body))
        self.h11.send(_END)

    # ------------------------------------------------------------------ reading

    def buffered_event(self) -> h11.Event | type[h11.NEED_DATA]:
        """The next h11 event from what has arrived, or ``h11.NEED_DATA``. Not a checkpoint.

        Raises:
            HTTPParserError and the like (see :meth:`next_event`).
        """
        try:
            return self.h11.next_event()  # type: ignore[return-value]
        except h11.RemoteProtocolError as exc:
            raise self._protocol_error(exc) from exc

    async def next_event(
        self,
        scope: trio.CancelScope | None,
        on_timeout: type[TrioPoolError],
        timeout: float | None,
        *,
        deadline: float | None = None,
        read_first: bool = False,
        request: Request | None = None,
    ) -> h11.Event:
        """The next h11 event of the response. A checkpoint only when it has to read;
        ``read_first``: the caller just got ``NEED_DATA`` from :meth:`buffered_event`.

        Each read times out at ``deadline`` (a total, for headers) or else ``timeout`` from
        now (an idle gap, for the body): the worker then cancels ``scope``, the caller's
        request scope, and the caller raises ``waiting_for`` (``on_timeout``).

        Without a ``scope`` (``request()``: its ``request`` runs without one), a scope is
        entered only around a read that has to wait for the socket; this raises the timeout
        error itself, and ``Interrupted`` if the request was aborted meanwhile.
        """
        while True:
            if read_first:
                read_first = False
            else:
                event = self.buffered_event()
                if event is not h11.NEED_DATA:
                    return event  # type: ignore[return-value]
            if timeout is None:
                self.read_deadline = math.inf
            else:
                when = trio.current_time() + timeout if deadline is None else deadline
                self.read_deadline = when
                self.waiting_for = on_timeout
                self.waiting_timeout = timeout
                if self.on_read is not None:
                    self.on_read(when)
            while self.outbox:  # deferred pipelined requests leave before this read waits
                try:
                    await self._send_all(b"")
                except _STREAM_ERRORS as exc:
                    raise SocketError(f"writing the request failed: {exc!r}") from exc
            try:
                if scope is None:
                    assert request is not None
                    data = await self._receive_unscoped(request)
                    if data is None:
                        continue  # requests were deferred meanwhile: send them first
                else:
                    self.reader = scope
                    try:
                        data = await self._receive()
                    finally:
                        self.reader = None
            except _STREAM_ERRORS as exc:
                raise SocketError(f"reading the response failed: {exc!r}") from exc
            if data:
                self.received_bytes += len(data)
            else:
                self._received_eof = True
            self.h11.receive_data(data)

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> TrioPoolError:
        if exc.error_status_hint == 431:
            return HeadersOverflowError(
                f"response headers exceed max_header_size ({self._options.max_header_size} bytes)"
            )
        if self._received_eof:
            if any(name.lower() == b"content-length" for name, _ in self.response_head):
                return ResponseContentLengthMismatchError(
                    f"the server closed the connection before the whole body: {exc}"
                )
            return SocketError("other side closed")
        return HTTPParserError(f"the server violated HTTP/1.1: {exc}")


class _SocketInterrupt:
    """Interrupts a read waiting on a plain TCP socket without a cancel scope: it wakes
    with ``ClosedResourceError`` (the connection is closed afterwards, as after a cancel)."""

    __slots__ = ("fired", "socket")

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.fired = False

    def cancel(self) -> None:
        if not self.fired:
            self.fired = True
            trio.lowlevel.notify_closing(self.socket)


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


_default_context: ssl.SSLContext | None = None


async def open_stream(
    origin: Origin, options: ClientOptions, connector: Connector | None
) -> trio.abc.Stream:
    """Open the transport to ``origin`` within ``connect_timeout``: ``connector``'s stream,
    or TCP (``local_address``, ``happy_eyeballs_delay``) or the Unix socket ``socket_path``,
    then TLS for https (the server name is the origin's host either way). A checkpoint.

    Raises:
        ConnectTimeoutError: the timeout expired.
        ConnectError: refused, unreachable, DNS, TLS handshake or verification failed
            (or the ``connector`` raised), with that error as ``__cause__``. A connector that
            raises a library error (a ``ProxyError``, a timeout of its own) raises it as is.
    """
    stream: trio.abc.Stream | None = None
    with trio.move_on_after(options.connect_timeout or math.inf) as scope:
        try:
            if connector is not None:
                stream = await connector(origin)
            else:
                if options.socket_path is not None:
                    stream = await trio.open_unix_socket(options.socket_path)
                else:
                    stream = await trio.open_tcp_stream(
                        origin.host,
                        origin.port,
                        happy_eyeballs_delay=options.happy_eyeballs_delay,
                        local_address=options.local_address,
                    )
                if origin.is_https:
                    context = options.ssl_context or _default_ssl_context()
                    stream = trio.SSLStream(
                        stream, context, server_hostname=origin.host, https_compatible=True
                    )
                    await stream.do_handshake()
        except TrioPoolError:
            if stream is not None:  # pragma: no cover - a connector's own error, nothing open
                await trio.aclose_forcefully(stream)
            raise
        except Exception as exc:  # OSError, TLS, or whatever a custom connector raised
            if stream is not None:
                await trio.aclose_forcefully(stream)
            raise connect_error(origin.text, exc)  # noqa: B904 - it sets its own cause
        except BaseException:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            raise
    if scope.cancelled_caught:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        raise ConnectTimeoutError(
            f"connecting to {origin.text} took longer than {options.connect_timeout} s"
        )
    assert stream is not None
    return stream


def _default_ssl_context() -> ssl.SSLContext:
    # Building a context loads the trust store (milliseconds): do it once per process.
    global _default_context
    if _default_context is None:
        _default_context = ssl.create_default_context()
    return _default_context


class PrefixedStream(trio.abc.Stream):
    """A handed-over connection: bytes h11 had already read come first."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


def _probe_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """A non-blocking duplicate of the TCP socket under ``stream``, for :meth:`alive`."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if not isinstance(stream, trio.SocketStream):
        return None
    probe = socket.socket(fileno=os.dup(stream.socket.fileno()))
    probe.setblocking(False)
    return probe
