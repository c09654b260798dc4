"""Scripted in-process HTTP/1.1 servers on h11, for testing code that uses ``trio_pool``
(public as ``trio_pool.testing``).

A test gives a *script*, an async function called once per request with the parsed
:class:`ServerRequest` and the :class:`ServerConnection` it arrived on; the script decides
what the server does: answer (:meth:`ServerConnection.respond`), answer piecewise
(``send_head``/``send_data``/``send_end``), stall (``await trio.sleep_forever()``), send raw
bytes (:meth:`ServerConnection.send_raw`) or hang up (:meth:`ServerConnection.close`).

Two transports run the same scripts:

* :func:`serve_h11` — a real TCP server on ``127.0.0.1``, port 0 (never on the autojump
  clock: real sockets and a mock clock do not mix);
* :func:`serve_memory` — in-memory streams (``trio.testing.memory_stream_pair``): pass
  ``server.connector`` as the ``connector=`` option of ``Client``/``Pool``. Timeouts can then
  be tested on ``autojump_clock`` without waiting.

Both record every request (:attr:`H11Server.requests`) and count connections. With
``streaming=True`` the script is called as soon as a request's head arrived (its
``body`` is then empty) and reads the body itself with :meth:`ServerConnection.receive_data`,
so it can answer while the client is still sending (duplex, ``pipeline()``).

Example::

    async def script(request, conn):
        await conn.respond(200, body=b"hi")

    async with serve_memory(script) as server:
        async with Pool(server.origin, connector=server.connector) as pool:
            assert (await pool.request("GET", "/")).body == b"hi"
"""

from __future__ import annotations

import errno
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, final

import attrs
import h11
import trio
import trio.testing

from .._supervisor import Supervisor

__all__ = [
    "H11Server",
    "Script",
    "ServerConnection",
    "ServerRequest",
    "serve_h11",
    "serve_memory",
]

_Headers = Sequence[tuple[str | bytes, str | bytes]]


@final
@attrs.define
class ServerRequest:
    """A request as the server received it (body read completely, unless ``streaming``).

    Attributes:
        method: e.g. ``"GET"``.
        target: the request target, e.g. ``"/path?q=1"``.
        headers: ``(name, value)`` pairs, names lower-cased.
        body: the whole request body (empty with ``streaming=True``).
        connection: the number of the connection it arrived on (0, 1, ...).
        index: its position on that connection (0 = first request).
    """

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int
    index: int

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        name = name.lower()
        return next((v for n, v in self.headers if n == name), None)


def _raw(headers: _Headers) -> list[tuple[bytes, bytes]]:
    return [
        (n if isinstance(n, bytes) else n.encode(), v if isinstance(v, bytes) else v.encode())
        for n, v in headers
    ]


@final
class ServerConnection:
    """The server side of one connection, as the script sees it.

    The sending methods are checkpoints; they raise ``trio.BrokenResourceError`` (or
    ``trio.ClosedResourceError``) when the client has gone, which ends the connection
    quietly if the script lets it propagate.

    Attributes:
        stream: the connection's ``trio.abc.Stream`` (after :meth:`switch_protocols`, it
            carries the new protocol).
        number: the connection's number on its server (0, 1, ...).
        h11: the ``h11.Connection`` (server role) that frames the traffic.
        closed: True once :meth:`close` was called.
    """

    def __init__(self, stream: trio.abc.Stream, number: int) -> None:
        self.stream = stream
        self.number = number
        self.h11 = h11.Connection(h11.SERVER)
        self.closed = False

    async def respond(
        self, status: int = 200, headers: _Headers = (), body: bytes = b"", reason: bytes = b""
    ) -> None:
        """Send a whole response. A checkpoint.

        Args:
            status: the status code.
            headers: ``(name, value)`` pairs; ``content-length`` is added unless a
                ``content-length`` or ``transfer-encoding`` header frames the body.
            body: the whole body.
            reason: the reason phrase (h11 sends none by default).
        """
        raw = _raw(headers)
        names = {name.lower() for name, _ in raw}
        if b"content-length" not in names and b"transfer-encoding" not in names:
            raw.append((b"content-length", str(len(body)).encode()))
        await self.send_head(status, raw, reason=reason)
        if body:
            await self.send_data(body)
        await self.send_end()

    async def send_head(self, status: int, headers: _Headers = (), reason: bytes = b"") -> None:
        """Send the status line and ``headers`` (which must frame the body: give a
        ``content-length``, or ``transfer-encoding: chunked`` for trailers). A checkpoint."""
        event = h11.Response(status_code=status, headers=_raw(headers), reason=reason)
        await self._send(event)

    async def send_data(self, data: bytes) -> None:
        """Send a piece of the body. A checkpoint."""
        await self._send(h11.Data(data=data))

    async def send_end(self, trailers: _Headers = ()) -> None:
        """End the body, with ``trailers`` if the response is chunked. A checkpoint."""
        await self._send(h11.EndOfMessage(headers=_raw(trailers)))

    async def switch_protocols(self, status: int = 101, headers: _Headers = ()) -> bytes:
        """Accept an upgrade (101) or a CONNECT (a 2xx ``status``): afterwards :attr:`stream`
        carries the new protocol. A checkpoint.

        Returns:
            The bytes the client sent after its request, already read from the stream.
        """
        event: h11.Event
        if status == 101:
            event = h11.InformationalResponse(status_code=101, headers=_raw(headers))
        else:
            event = h11.Response(status_code=status, headers=_raw(headers))
        await self._send(event)
        return self.h11.trailing_data[0]

    async def send_raw(self, data: bytes) -> None:
        """Send ``data`` as it is, bypassing HTTP framing (to script protocol violations).
        A checkpoint."""
        await self.stream.send_all(data)

    async def close(self) -> None:
        """Close the connection: the client sees a FIN. A checkpoint."""
        self.closed = True
        await self.stream.aclose()

    async def _send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send_all(data)

    async def receive_data(self) -> bytes | None:
        """With ``streaming=True``: the next piece of the request body as it arrives. A
        checkpoint.

        Returns:
            The piece, or None at the end of the body (or if the client hung up or broke
            the protocol).
        """
        event = await self._next_event()
        return bytes(event.data) if isinstance(event, h11.Data) else None

    async def _next_event(self) -> h11.Event | None:
        """The next h11 event, reading as needed; None if the client hung up or erred."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:
                return None
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            self.h11.receive_data(bytes(data))

    async def _receive_request(self, index: int, *, streaming: bool) -> ServerRequest | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Request):
                request = event
                if streaming:
                    break
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # hung up, ConnectionClosed or PAUSED
                return None
        assert request is not None
        return ServerRequest(
            request.method.decode(),
            request.target.decode(),
            [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.headers],
            bytes(body),
            self.number,
            index,
        )


Script = Callable[[ServerRequest, ServerConnection], Awaitable[None]]
"""What the server does with one request: ``async def script(request, conn)``. It runs in a
task of the server, once per request, in order on each connection; when it returns without
having finished a response, or after :meth:`ServerConnection.close`, the connection ends."""


@final
@attrs.define(eq=False)
class H11Server:
    """A running scripted server, as :func:`serve_h11` and :func:`serve_memory` yield it.

    Its flags may be changed at any time to script connection failures.

    Attributes:
        origin: the origin to give to ``Client``/``Pool``.
        requests: every request received, in arrival order.
        connections: how many connections were accepted.
        refuse: while True, the in-memory connector refuses connections (``ECONNREFUSED``).
        hang: while True, the in-memory connector never completes a connect.
        connect_delay: seconds the in-memory connector takes to connect.
        streaming: call the script once a request's head arrived; it reads the body with
            :meth:`ServerConnection.receive_data`.
    """

    script: Script
    nursery: TaskStarter
    origin: str = "http://testserver"
    requests: list[ServerRequest] = attrs.Factory(list)
    connections: int = 0
    refuse: bool = False
    hang: bool = False
    connect_delay: float = 0.0
    streaming: bool = False

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until either side closes it (used by both transports; call it
        to serve a stream of your own). A checkpoint."""
        conn = ServerConnection(stream, self.connections)
        self.connections += 1
        index = 0
        try:
            while not conn.closed:
                request = await conn._receive_request(index, streaming=self.streaming)
                if request is None:
                    break
                self.requests.append(request)
                index += 1
                await self.script(request, conn)
                if conn.closed or conn.h11.our_state is not h11.DONE:
                    break
                try:
                    conn.h11.start_next_cycle()
                except h11.LocalProtocolError:
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up (or the TLS handshake failed)
        finally:
            await trio.aclose_forcefully(stream)

    async def connector(self, origin: object) -> trio.abc.Stream:
        """The ``connector=`` option for ``Client``/``Pool``: a new in-memory connection,
        served by a task of the server. A checkpoint.

        Raises:
            ConnectionRefusedError: while :attr:`refuse` is set (the pool reports it as
                ``ConnectError``).
        """
        if self.hang:
            await trio.sleep_forever()
        if self.connect_delay:
            await trio.sleep(self.connect_delay)
        if self.refuse:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "connection refused (test)")
        client_end, server_end = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.serve_stream, server_end)
        return client_end


@asynccontextmanager
async def serve_h11(
    script: Script, *, ssl_context: ssl.SSLContext | None = None, streaming: bool = False
) -> AsyncIterator[H11Server]:
    """Run ``script`` behind a TCP server on ``127.0.0.1`` for the block.

    The port is chosen by the system (port 0); :attr:`H11Server.origin` says which. Real
    sockets do not mix with ``autojump_clock``: use :func:`serve_memory` to test timeouts.

    Args:
        script: what the server does with each request (see :data:`Script`).
        ssl_context: a server-side ``ssl.SSLContext`` (e.g. from ``trustme``); the server
            then speaks https and the origin is ``https://127.0.0.1:PORT``.
        streaming: call the script as soon as a request's head arrived (see
            :class:`H11Server`).

    Yields:
        The running :class:`H11Server`. Leaving the block stops it and closes its
        connections; an exception from the block leaves as itself.
    """
    async with _supervised() as supervisor:
        server = H11Server(script, supervisor, streaming=streaming)
        tcp = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = tcp[0].socket.getsockname()[1]
        listeners: list[trio.abc.Listener[Any]] = list(tcp)
        if ssl_context is not None:
            listeners = [trio.SSLListener(listener, ssl_context) for listener in tcp]
        supervisor.start_soon(trio.serve_listeners, server.serve_stream, listeners)
        scheme = "http" if ssl_context is None else "https"
        server.origin = f"{scheme}://127.0.0.1:{port}"
        yield server


@asynccontextmanager
async def serve_memory(script: Script, *, streaming: bool = False) -> AsyncIterator[H11Server]:
    """Run ``script`` over in-memory streams for the block: no sockets, so it works on
    ``autojump_clock``.

    Give :meth:`H11Server.connector` as the ``connector=`` option of ``Client``, ``Pool`` or
    ``BalancedPool``, with :attr:`H11Server.origin` (``http://testserver``) as the origin.

    Args:
        script: what the server does with each request (see :data:`Script`).
        streaming: call the script as soon as a request's head arrived (see
            :class:`H11Server`).

    Yields:
        The running :class:`H11Server`. Leaving the block stops it and closes its
        connections; an exception from the block leaves as itself.
    """
    async with _supervised() as supervisor:
        yield H11Server(script, supervisor, streaming=streaming)


class TaskStarter(Protocol):
    """Where an :class:`H11Server` starts its connection tasks: a :class:`trio.Nursery`,
    or anything else with its ``start_soon``."""

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Start ``async_fn(*args)`` as a task. Not a checkpoint."""


@asynccontextmanager
async def _supervised() -> AsyncIterator[_Tasks]:
    # The library's Supervisor, so an exception from the test's block leaves it unwrapped.
    supervisor = Supervisor()
    await supervisor.enter()
    try:
        yield _Tasks(supervisor)
    except BaseException as exc:
        await supervisor.exit(exc, graceful=trio.lowlevel.checkpoint, abort=lambda: None)
        raise
    await supervisor.exit(None, graceful=trio.lowlevel.checkpoint, abort=lambda: None)


@attrs.define
class _Tasks:
    """Starts the server's tasks in the supervisor's nursery."""

    supervisor: Supervisor

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        self.supervisor.start_soon(fn, *args, name="trio_pool.testing server")
