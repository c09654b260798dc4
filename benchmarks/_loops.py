"""The bare loops: what a client could reach on the same I/O path as ``Pool``, with no pool.

Theory of operation
-------------------
Each loop is one keep-alive connection per worker (opened by its first GET), no pool, no
queue, no request or response objects. The three share the byte path (:class:`LoopIO`), which
is the one ``Pool`` uses (``trio_pool/http/_transport.py``): on plain TCP a non-blocking
duplicate of the trio socket, one ``send``/``recv`` system call per write or read, a schedule
point before each read and ``trio.lowlevel.wait_readable``/``wait_writable`` only when the
socket has nothing to give or take; over TLS the ``trio.SSLStream`` itself. They differ only in
how a response is recognised:

* ``raw loop`` (:func:`raw_loop`): writes a fixed request and reads until the response's
  known length (learnt once, from the first response, with :func:`parse_head`). No parsing at
  all: the ceiling of the I/O path, which no HTTP client on it can beat.
* ``fast loop`` (:func:`fast_loop`): a minimal HTTP/1.1 response parser written here with
  ``bytes.find`` (status line, ``content-length``, body), to show what a strict fast parser
  could reach; it handles only what the benchmark's servers send (a ``content-length`` body).
* ``h11 loop`` (:func:`h11_loop`): the same requests through ``h11.Connection``: the ceiling
  for a client that parses with h11.

Every GET returns ``(status, body bytes)`` so the measurement checks it like any client's.
The connection is closed by the caller's ``AsyncExitStack``. A loop's state belongs to its one
worker task: nothing here is shared between tasks.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import trio

RECEIVE_SIZE = 65536
Get = Callable[[], Awaitable[tuple[int, int]]]
"""One GET; returns (status, body bytes)."""


class LoopIO:
    """The byte path of one loop connection: ``Pool``'s (see the module docstring)."""

    __slots__ = ("_raw", "_stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._raw: socket.socket | None = None
        if isinstance(stream, trio.SocketStream):
            raw = socket.socket(fileno=os.dup(stream.socket.fileno()))
            raw.setblocking(False)
            self._raw = raw

    @classmethod
    async def open(
        cls, stack: AsyncExitStack, host: str, port: int, context: ssl.SSLContext | None
    ) -> LoopIO:
        """Connect (TLS when ``context`` is given); closed with ``stack``. A checkpoint."""
        if context is None:
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        else:
            stream = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=context, https_compatible=True
            )
        io = cls(stream)
        stack.push_async_callback(io.aclose)
        return io

    async def aclose(self) -> None:
        if self._raw is not None:
            self._raw.close()
        await self._stream.aclose()

    async def send_all(self, data: bytes) -> None:
        """Write ``data`` whole. A checkpoint only while the socket buffer is full (plain TCP)."""
        raw = self._raw
        if raw is None:
            await self._stream.send_all(data)
            return
        sent = 0
        while sent < len(data):
            try:
                sent += raw.send(memoryview(data)[sent:] if sent else data)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(raw)

    async def receive(self) -> bytes:
        """The next bytes (b"" at EOF). A checkpoint: a schedule point first, as ``Pool``'s."""
        raw = self._raw
        if raw is None:
            data = await self._stream.receive_some(RECEIVE_SIZE)
            return bytes(data) if type(data) is not bytes else data
        await trio.lowlevel.checkpoint()
        while True:
            try:
                return raw.recv(RECEIVE_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(raw)


def request_bytes(host: str, port: int, path: str) -> bytes:
    """The fixed GET every loop sends."""
    return f"GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\n\r\n".encode("ascii")


def parse_head(buffer: bytes) -> tuple[int, int, int] | None:
    """``(status, head length, content-length)`` of a response head in ``buffer``, or None
    if the head is incomplete. Only what the benchmark's servers send: a status line, headers,
    a ``content-length``."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    status = int(buffer[9:12])
    lowered = buffer[:end].lower()
    at = lowered.find(b"\r\ncontent-length:")
    if at < 0:
        raise RuntimeError("fast loop: the response has no content-length")
    at += 17
    stop = lowered.find(b"\r\n", at)
    length = int(lowered[at : stop if stop >= 0 else end])
    return status, end + 4, length


class _Connection:
    """One worker's connection, opened lazily by the first GET."""

    __slots__ = ("context", "host", "io", "port", "request", "stack")

    def __init__(self, stack: AsyncExitStack, origin: str, path: str, cafile: str | None) -> None:
        host, port = origin.rsplit("/", 1)[1].rsplit(":", 1)
        self.stack = stack
        self.host = host
        self.port = int(port)
        self.context = None if cafile is None else ssl.create_default_context(cafile=cafile)
        self.request = request_bytes(host, self.port, path)
        self.io: LoopIO | None = None

    async def connected(self) -> LoopIO:
        if self.io is None:
            self.io = await LoopIO.open(self.stack, self.host, self.port, self.context)
        return self.io


async def _fast_get(io: LoopIO, request: bytes) -> tuple[int, int, int]:
    """Send ``request`` and read one response with :func:`parse_head`: (status, body, total)."""
    await io.send_all(request)
    buffer = b""
    while (head := parse_head(buffer)) is None:
        data = await io.receive()
        if not data:
            raise RuntimeError("fast loop: the server closed the connection")
        buffer += data
    status, head_size, length = head
    total = head_size + length
    while len(buffer) < total:
        data = await io.receive()
        if not data:
            raise RuntimeError("fast loop: the server closed the connection")
        buffer += data
    if len(buffer) != total:
        raise RuntimeError("fast loop: bytes after the response")
    return status, length, total


def raw_loop(stack: AsyncExitStack, origin: str, path: str, cafile: str | None) -> Get:
    """The I/O ceiling: a fixed request, then read until the known response length."""
    conn = _Connection(stack, origin, path, cafile)
    known: list[tuple[int, int, int]] = []  # (status, body, total) of the first response

    async def get() -> tuple[int, int]:
        io = await conn.connected()
        if not known:
            known.append(await _fast_get(io, conn.request))
            return known[0][0], known[0][1]
        status, body, total = known[0]
        await io.send_all(conn.request)
        received = 0
        while received < total:
            data = await io.receive()
            if not data:
                raise RuntimeError("raw loop: the server closed the connection")
            received += len(data)
        # A response of another length (the Date header never changes length) would leave
        # the count off; it shows as an error because the sizes no longer add up.
        return status, body if received == total else -1

    return get


def fast_loop(stack: AsyncExitStack, origin: str, path: str, cafile: str | None) -> Get:
    """A bytes.find-based parser (:func:`parse_head`) over the same I/O."""
    conn = _Connection(stack, origin, path, cafile)

    async def get() -> tuple[int, int]:
        status, body, _ = await _fast_get(await conn.connected(), conn.request)
        return status, body

    return get


def h11_loop(stack: AsyncExitStack, origin: str, path: str, cafile: str | None) -> Get:
    """h11 over the same I/O: the ceiling for a client that parses with h11."""
    import h11

    conn = _Connection(stack, origin, path, cafile)
    parser = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target=path, headers=[("host", f"{conn.host}:{conn.port}")])
    end = h11.EndOfMessage()

    async def get() -> tuple[int, int]:
        io = await conn.connected()
        await io.send_all(parser.send(request) + parser.send(end))
        status = size = 0
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                parser.receive_data(await io.receive())
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                size += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise RuntimeError(f"h11 loop: unexpected {event!r}")
        parser.start_next_cycle()
        return status, size

    return get


LOOPS: dict[str, Callable[[AsyncExitStack, str, str, str | None], Get]] = {
    "raw loop": raw_loop,
    "fast loop": fast_loop,
    "h11 loop": h11_loop,
}
"""Client name -> the factory of one worker's GET."""
