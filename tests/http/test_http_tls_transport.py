"""TLS on the transport's own socket (``_tls.py``): bodies, EOFs, timeouts, cancellation,
post-handshake messages, the hand-over of a TLS connection, one file descriptor each."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
import trustme
from _helpers import assert_idle

import trio_pool
from trio_pool import Pool
from trio_pool.testing import ServerConnection, ServerRequest, serve_h11

Handler = Callable[[trio.SocketStream, int], Awaitable[None]]


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@asynccontextmanager
async def serve_raw(handler: Handler) -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 that runs ``handler(stream, number)`` per connection;
    yields its https origin."""
    count = 0

    async def serve(stream: trio.SocketStream) -> None:
        nonlocal count
        count += 1
        async with stream:
            await handler(stream, count - 1)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"https://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def answer_ok(tls: trio.SSLStream[trio.SocketStream]) -> None:
    """Read one request head and answer ``200 ok`` with a content-length."""
    head = b""
    while b"\r\n\r\n" not in head:
        data = await tls.receive_some()
        if not data:
            return
        head += data
    await tls.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


async def echo(request: ServerRequest, conn: ServerConnection) -> None:
    if request.target == "/never":
        await trio.sleep_forever()
    await conn.respond(200, body=request.body or b"ok")


async def test_large_bodies_both_ways(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    body = os.urandom(3 * 1024 * 1024 + 7)  # many TLS records, not a multiple of one
    async with (
        serve_h11(echo, ssl_context=server_context) as server,
        Pool(server.origin, ssl_context=client_context) as pool,
    ):
        for _ in range(2):
            assert (await pool.request("POST", "/", body=body)).body == body
            async with pool.stream("POST", "/", body=body) as response:
                assert await response.read() == body
        assert server.connections == 1


async def test_a_peer_that_closes_without_close_notify(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    body = os.urandom(200_000)

    async def handler(stream: trio.SocketStream, number: int) -> None:
        tls = trio.SSLStream(stream, server_context, server_side=True)
        if number == 0:  # a body delimited by the EOF, which comes without close_notify
            await tls.do_handshake()
            await tls.receive_some()
            await tls.send_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + body)
        else:  # framed, then the TCP connection just closes
            await answer_ok(tls)
        await stream.aclose()  # the TCP stream: no close_notify

    async with serve_raw(handler) as origin, Pool(origin, ssl_context=client_context) as pool:
        assert (await pool.request("GET", "/")).body == body
        assert (await pool.request("GET", "/")).body == b"ok"
        await trio.sleep(0.1)  # the EOF arrives: the connection is not picked again
        assert (await pool.request("GET", "/")).body == b"ok"
        assert pool.statistics().connects_total == 3
        assert_idle(pool)


async def test_the_handshake_times_out_on_a_silent_server(
    autojump_clock: trio.testing.MockClock, client_context: ssl.SSLContext
) -> None:
    async def silent(stream: trio.SocketStream, number: int) -> None:
        await trio.sleep_forever()

    async with serve_raw(silent) as origin:
        async with Pool(origin, ssl_context=client_context, connect_timeout=7) as pool:
            start = trio.current_time()
            with pytest.raises(trio_pool.ConnectTimeoutError):
                await pool.request("GET", "/")
            assert trio.current_time() - start == pytest.approx(7)
            assert_idle(pool)
            assert pool.statistics().connected == 0


async def test_cancelled_during_the_handshake(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    hello = trio.Event()

    async def handler(stream: trio.SocketStream, number: int) -> None:
        if number == 0:  # takes the ClientHello, never answers it
            await stream.receive_some()
            hello.set()
            await trio.sleep_forever()
        await answer_ok(trio.SSLStream(stream, server_context, server_side=True))

    # The cut handshake goes on without its request until connect_timeout (it would serve
    # the next request had it completed); the next request then connects anew.
    async with (
        serve_raw(handler) as origin,
        Pool(origin, ssl_context=client_context, connect_timeout=1) as pool,
    ):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool.request, "GET", "/")
                await hello.wait()
                nursery.cancel_scope.cancel()
        assert_idle(pool)
        assert pool.statistics().connected == 0
        assert (await pool.request("GET", "/")).body == b"ok"


@pytest.mark.parametrize("mode", ["request", "stream", "timeout"])
async def test_cancelled_during_a_tls_read(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, mode: str
) -> None:
    timeout = 0.2 if mode == "timeout" else None
    async with (
        serve_h11(echo, ssl_context=server_context) as server,
        Pool(server.origin, ssl_context=client_context, headers_timeout=timeout) as pool,
    ):
        assert (await pool.request("GET", "/")).body == b"ok"  # a connection, reused next
        if mode == "timeout":  # the read is interrupted through the socket
            with pytest.raises(trio_pool.HeadersTimeoutError):
                await pool.request("GET", "/never")
        else:
            with trio.move_on_after(0.1) as scope:
                if mode == "request":
                    await pool.request("GET", "/never")
                else:
                    async with pool.stream("GET", "/never"):
                        pass  # pragma: no cover - never answered
            assert scope.cancelled_caught
        assert_idle(pool)
        assert (await pool.request("GET", "/")).body == b"ok"
        assert server.connections == 2  # the cut connection was closed, not reused


async def test_post_handshake_messages_while_idle(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    # A TLS 1.3 server sends its session tickets when it reads the client's Finished: after
    # the client's handshake. A connection whose request left during the handshake waits
    # idle in the pool and receives them then; they are no reason to drop it (a liveness
    # peek takes them for unsolicited bytes). This server sends them at once (OpenSSL
    # puts them out with the handshake's end; trio.SSLStream holds them back).
    sent_tickets = trio.Event()
    release = trio.Event()
    holding = trio.Event()
    connections = 0

    async def handler(stream: trio.SocketStream, number: int) -> None:
        nonlocal connections
        connections += 1
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = server_context.wrap_bio(incoming, outgoing, server_side=True)
        first = True
        while True:
            try:
                tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            if first:  # the server's flight waits until the request has left
                holding.set()
                await release.wait()
                first = False
            await stream.send_all(outgoing.read())
            if done:
                break
            incoming.write(await stream.receive_some())
        assert tls.version() == "TLSv1.3"
        sent_tickets.set()
        while True:
            try:
                head = tls.read(65536)
            except ssl.SSLWantReadError:
                data = await stream.receive_some()
                if not data:  # the client closed
                    return
                incoming.write(data)
                continue
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                return
            if not head:  # the client closed
                return
            tls.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await stream.send_all(outgoing.read())

    async with serve_raw(handler) as origin, Pool(origin, ssl_context=client_context) as pool:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool.request, "GET", "/")
                await holding.wait()
                nursery.cancel_scope.cancel()  # the request leaves mid-handshake
            assert_idle(pool)
            release.set()
            await sent_tickets.wait()
            await trio.sleep(0.1)  # they have arrived at the idle connection
        assert pool.statistics().connected == 1
        for _ in range(3):
            assert (await pool.request("GET", "/")).body == b"ok"
        assert connections == 1  # the same connection throughout


async def test_upgrade_hands_over_the_tls_connection(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async def switching(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.switch_protocols(101, [("upgrade", "echo"), ("connection", "upgrade")])
        await conn.send_raw(b"hello")
        while data := await conn.stream.receive_some():
            await conn.send_raw(bytes(data).upper())

    async with (
        serve_h11(switching, ssl_context=server_context) as server,
        Pool(server.origin, ssl_context=client_context) as pool,
    ):
        async with pool.upgrade("/", protocol="echo") as up:
            received = b""
            while len(received) < 5:
                received += await up.stream.receive_some()
            assert received == b"hello"
            await up.stream.send_all(b"abc")
            assert await up.stream.receive_some() == b"ABC"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("tls", [True, False])
async def test_one_file_descriptor_per_connection(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, tls: bool
) -> None:
    n = 8
    arrived = 0
    all_there = trio.Event()

    async def together(request: ServerRequest, conn: ServerConnection) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == n:
            all_there.set()
        await all_there.wait()  # so the pool opens n connections
        await conn.respond(200, body=b"ok")

    async with serve_h11(together, ssl_context=server_context if tls else None) as server:
        before = open_fds()
        async with Pool(server.origin, ssl_context=client_context, connections=n) as pool:
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    nursery.start_soon(pool.request, "GET", "/")
            assert pool.statistics().connected == n
            # n on our side, n on the server's (it runs in this process too).
            assert open_fds() - before == 2 * n
        assert open_fds() - before <= n  # ours are closed (the server's may be closing)
