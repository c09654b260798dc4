"""Plain TCP connections do their I/O on the socket itself, not through ``SocketStream``
(``_transport.py``): large writes and reads, cancellation while waiting on the socket, a
server that hangs up, ``destroy()`` under a waiting read, and pipelining — over loopback."""

from __future__ import annotations

import socket
import struct

import pytest
import trio
import trio.testing
from _helpers import assert_idle

import trio_pool
from trio_pool import ClientDestroyedError, Pool
from trio_pool.testing import ServerConnection, ServerRequest, serve_h11

BIG = 4 * 1024 * 1024  # far beyond a socket buffer: the write has to wait for room


async def test_large_body_both_ways() -> None:
    async def mirror(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, body=request.body[::-1])

    body = bytes(range(256)) * (BIG // 256)
    async with serve_h11(mirror) as server, Pool(server.origin) as pool:
        with trio.fail_after(30):
            response = await pool.request("POST", "/", body=body)
            assert response.body == body[::-1]
            assert (await pool.request("POST", "/", body=b"ab")).body == b"ba"  # reused
        assert server.connections == 1


async def test_cancel_while_waiting_for_the_response() -> None:
    arrived = trio.Event()

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        if request.target == "/never":
            arrived.set()
            await trio.sleep_forever()
        await conn.respond(200, body=str(conn.number).encode())

    async with serve_h11(script) as server, Pool(server.origin) as pool:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def victim() -> None:
                    await pool.request("GET", "/never")

                nursery.start_soon(victim)
                await arrived.wait()
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
            assert_idle(pool)
            # The cut connection was closed, not reused.
            assert (await pool.request("GET", "/")).body == b"1"


async def test_server_hanging_up_mid_body() -> None:
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_head(200, [("content-length", "10")])
        await conn.send_data(b"12345")
        await conn.close()

    async with serve_h11(script) as server, Pool(server.origin) as pool:
        with trio.fail_after(10), pytest.raises(trio_pool.ResponseContentLengthMismatchError):
            await pool.request("GET", "/")
        assert_idle(pool)


async def test_destroy_under_a_waiting_read() -> None:
    arrived = trio.Event()

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        arrived.set()
        await trio.sleep_forever()

    errors: list[BaseException] = []
    async with serve_h11(script) as server, Pool(server.origin) as pool:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def run() -> None:
                    try:
                        await pool.request("GET", "/")
                    except trio_pool.TrioPoolError as exc:
                        errors.append(exc)

                nursery.start_soon(run)
                await arrived.wait()
                await trio.testing.wait_all_tasks_blocked()
                await pool.destroy()
    assert len(errors) == 1
    assert isinstance(errors[0], ClientDestroyedError)
    assert pool.statistics().connected == 0


async def test_pipelined_requests_share_one_connection() -> None:
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, body=request.target.encode())

    async with (
        serve_h11(script) as server,
        Pool(server.origin, connections=1, pipelining=5) as pool,
    ):
        results: dict[str, bytes] = {}

        async def get(path: str) -> None:
            results[path] = (await pool.request("GET", path)).body

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(get, f"/{i}")
        assert results == {f"/{i}": f"/{i}".encode() for i in range(20)}
        assert server.connections == 1
        assert_idle(pool)


async def test_a_reset_connection_is_a_socket_error() -> None:
    async def reset(request: ServerRequest, conn: ServerConnection) -> None:
        assert isinstance(conn.stream, trio.SocketStream)  # serve_h11: a TCP connection
        sock = conn.stream.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await conn.close()  # with linger 0: an RST, not a FIN

    async with serve_h11(reset) as server, Pool(server.origin) as pool:
        with trio.fail_after(10), pytest.raises(trio_pool.SocketError) as info:
            await pool.request("POST", "/")
        assert isinstance(info.value.__cause__, trio.BrokenResourceError)
        assert_idle(pool)


async def test_pipelined_requests_behind_a_hang_up() -> None:
    """Requests written behind the first wait in the connection's outbox or on the wire;
    the server answers one and hangs up. The others fail with SocketError (their own
    heads failed on a connection that was never reused: API.md 1.6), nothing hangs, and
    the pool is idle and usable afterwards."""

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, body=request.target.encode())
        if conn.number == 0:
            await conn.close()

    async with serve_h11(script) as server:
        async with Pool(server.origin, connections=1, pipelining=5) as pool:
            results: dict[str, object] = {}

            async def get(path: str) -> None:
                headers = [("x-path", path)]  # not a prepared request: a side serialiser
                try:
                    results[path] = (await pool.request("GET", path, headers=headers)).body
                except trio_pool.SocketError as exc:
                    results[path] = type(exc)

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for i in range(5):
                        nursery.start_soon(get, f"/{i}")
                        await trio.testing.wait_all_tasks_blocked()
            assert results.pop("/0") == b"/0"
            assert set(results) == {"/1", "/2", "/3", "/4"}
            assert all(
                r == trio_pool.SocketError or r == path.encode() for path, r in results.items()
            )
            assert_idle(pool)
            assert (await pool.request("GET", "/again")).body == b"/again"


async def test_headers_timeout_due_while_the_read_is_not_yet_waiting() -> None:
    # request() enters a cancel scope only once its read has to wait for the socket; a
    # deadline that passed before (here: at once) must still end it, so the connection's
    # task, which found no read waiting, is woken again (real clock: 1 µs is always past).
    async def never(request: ServerRequest, conn: ServerConnection) -> None:
        await trio.sleep_forever()

    async with serve_h11(never) as server, Pool(server.origin, headers_timeout=1e-6) as pool:
        with trio.fail_after(20):  # the hang guard: without the re-arm a read waits forever
            for _ in range(20):
                with pytest.raises(trio_pool.HeadersTimeoutError):
                    await pool.request("GET", "/")
        assert_idle(pool)


@pytest.mark.parametrize("steps", range(12))
async def test_destroy_at_every_step_of_a_request(steps: int) -> None:
    # request() runs without a cancel scope: destroy() between its waits (e.g. at the
    # schedule point before a read) is noticed at the next one; the request still ends
    # with ClientDestroyedError unless it had already completed.
    async def ok(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_head(200, [("content-length", "5")])
        await conn.send_data(b"hello")
        await conn.send_end()

    outcomes: list[object] = []
    async with serve_h11(ok) as server, Pool(server.origin) as pool:
        await pool.request("GET", "/")  # a kept-alive connection: no connect step below
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def run() -> None:
                    try:
                        outcomes.append((await pool.request("GET", "/")).body)
                    except trio_pool.TrioPoolError as exc:
                        outcomes.append(exc)

                nursery.start_soon(run)
                for _ in range(steps):
                    await trio.lowlevel.checkpoint()
                await pool.destroy()
    assert len(outcomes) == 1
    assert outcomes[0] == b"hello" or isinstance(outcomes[0], ClientDestroyedError)
    assert_idle(pool)
    assert pool.statistics().connected == 0


async def test_a_64_kib_body_that_arrived_whole_is_read_whole() -> None:
    # The server's bytes are all in the client's socket before it reads: one read takes the
    # head and the whole 64 KiB body (one piece, not a 64 KiB read's two).
    body = bytes(range(256)) * 256
    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body)
    sent = trio.Event()

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        assert isinstance(conn.stream, trio.SocketStream)
        conn.stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        await conn.send_raw(head + body)
        sent.set()
        await trio.sleep_forever()

    async with serve_h11(script) as server, Pool(server.origin) as pool:
        with trio.fail_after(10):
            async with pool.stream("GET", "/") as response:
                await sent.wait()
                chunks = [chunk async for chunk in response.body]
        assert [len(chunk) for chunk in chunks] == [len(body)]
        assert chunks[0] == body
        assert_idle(pool)


async def test_cancel_while_the_write_waits_for_room() -> None:
    # The first connection's server never reads: the 4 MiB body fills both socket buffers
    # and the write waits for room (request()'s first send leaves only part of it).
    accepted: list[trio.SocketStream] = []
    blocked = trio.Event()
    response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def handler(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        if len(accepted) == 1:
            blocked.set()
            await trio.sleep_forever()
        received = b""
        while b"\r\n\r\n" not in received:
            received += await stream.receive_some(65536)
        await stream.send_all(response)
        await trio.sleep_forever()

    async with trio.open_nursery() as server:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        server.start_soon(trio.serve_listeners, handler, listeners)
        port = listeners[0].socket.getsockname()[1]
        async with Pool(f"http://127.0.0.1:{port}") as pool:

            async def post() -> None:
                await pool.request("POST", "/", body=b"x" * BIG)

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(post)
                    await blocked.wait()
                    await trio.testing.wait_all_tasks_blocked()
                    assert pool.statistics().running == 1
                    nursery.cancel_scope.cancel()
                assert_idle(pool)
                got = await pool.request("GET", "/")
                assert (got.status, got.body) == (200, b"ok")
            assert len(accepted) == 2  # the cut connection was closed, not reused
        server.cancel_scope.cancel()
