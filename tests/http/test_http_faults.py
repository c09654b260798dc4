"""One scripted server per fault; timeouts on the autojump clock over in-memory streams."""

from __future__ import annotations

import socket
from typing import Any

import h11
import pytest
import trio
import trio.testing

import trio_pool
from trio_pool import Client, Pool
from trio_pool.testing import Script, ServerConnection, ServerRequest, serve_h11, serve_memory


async def ok(request: ServerRequest, conn: ServerConnection) -> None:
    await conn.respond(200, body=f"{conn.number}".encode())


async def never(request: ServerRequest, conn: ServerConnection) -> None:
    await trio.sleep_forever()


def idle_stats(pool: Client | Pool) -> tuple[int, int, int, int]:
    stats = pool.statistics()
    return stats.pending, stats.queued, stats.running, stats.size


async def test_refused_port_is_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    errors: list[BaseException] = []
    async with Pool(f"http://127.0.0.1:{port}") as pool:
        pool.on("connection_error", lambda origin, targets, error: errors.append(error))
        with pytest.raises(trio_pool.ConnectError) as info:
            await pool.request("GET", "/")
        assert isinstance(info.value.__cause__, OSError)
        assert idle_stats(pool) == (0, 0, 0, 0)
    assert errors == [info.value]


async def test_refused_by_memory_server_then_recovers() -> None:
    async with serve_memory(ok) as server, Client(server.origin, connector=server.connector) as c:
        server.refuse = True
        with pytest.raises(trio_pool.ConnectError) as info:
            await c.request("GET", "/")
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        server.refuse = False
        assert (await c.request("GET", "/")).status == 200


async def test_connect_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_memory(ok) as server:
        async with Client(server.origin, connector=server.connector, connect_timeout=5) as c:
            server.hang = True
            start = trio.current_time()
            with pytest.raises(trio_pool.ConnectTimeoutError) as info:
                await c.request("GET", "/")
            assert trio.current_time() - start == pytest.approx(5)
            assert isinstance(info.value, trio.TooSlowError)
            assert isinstance(info.value, trio_pool.ConnectError)
            server.hang = False
            assert (await c.request("GET", "/")).status == 200


async def test_headers_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_memory(never) as server:
        async with Pool(server.origin, connector=server.connector, headers_timeout=10) as pool:
            start = trio.current_time()
            with pytest.raises(trio_pool.HeadersTimeoutError) as info:
                await pool.request("GET", "/")
            assert trio.current_time() - start == pytest.approx(10)
            assert isinstance(info.value, trio.TooSlowError)
            assert idle_stats(pool) == (0, 0, 0, 0)


async def test_headers_timeout_disabled_by_zero(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_memory(never) as server:
        async with Pool(server.origin, connector=server.connector, headers_timeout=0) as pool:
            with trio.move_on_after(10_000) as scope:
                await pool.request("GET", "/")
            assert scope.cancelled_caught


async def test_body_timeout_is_an_idle_gap(autojump_clock: trio.testing.MockClock) -> None:
    async def stalls(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_head(200, [("content-length", "10")])
        for _ in range(3):  # gaps shorter than body_timeout do not count
            await trio.sleep(5)
            await conn.send_data(b"x")
        await trio.sleep_forever()

    async with serve_memory(stalls) as server:
        async with Pool(server.origin, connector=server.connector, body_timeout=7) as pool:
            start = trio.current_time()
            with pytest.raises(trio_pool.BodyTimeoutError):
                await pool.request("GET", "/")
            assert trio.current_time() - start == pytest.approx(15 + 7)
            async with pool.stream("GET", "/") as response:
                with pytest.raises(trio_pool.BodyTimeoutError):
                    await response.read()
            assert idle_stats(pool) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("framing", "error"),
    [
        ([("content-length", "10")], trio_pool.ResponseContentLengthMismatchError),
        ([("transfer-encoding", "chunked")], trio_pool.SocketError),
    ],
)
async def test_server_closes_mid_body(
    framing: list[tuple[str, str]], error: type[Exception]
) -> None:
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_head(200, framing)
        await conn.send_data(b"abc")
        await conn.close()

    async with (
        serve_memory(script) as server,
        Pool(server.origin, connector=server.connector) as pool,
    ):
        with pytest.raises(error) as info:
            await pool.request("GET", "/")
        assert isinstance(info.value.__cause__, h11.RemoteProtocolError)
        assert len(server.requests) == 1  # never retried once a response byte came


async def test_garbage_is_parser_error() -> None:
    async def garbage(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_raw(b"SPAM / EGGS\r\n\r\n")

    async with serve_h11(garbage) as server, Pool(server.origin) as pool:
        with pytest.raises(trio_pool.HTTPParserError) as info:
            await pool.request("GET", "/")
        assert isinstance(info.value.__cause__, h11.RemoteProtocolError)
        assert idle_stats(pool) == (0, 0, 0, 0)


async def test_headers_overflow() -> None:
    async def big(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, [("x-big", "y" * 500)])

    async with serve_memory(big) as server:
        async with Pool(server.origin, connector=server.connector, max_header_size=200) as pool:
            with pytest.raises(trio_pool.HeadersOverflowError):
                await pool.request("GET", "/")
        async with Pool(server.origin, connector=server.connector, max_header_size=2000) as pool:
            assert (await pool.request("GET", "/")).headers["x-big"] == "y" * 500


async def test_max_response_size() -> None:
    async def body(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, body=b"x" * int(request.target[1:]))

    async with serve_memory(body) as server:
        async with Pool(server.origin, connector=server.connector, max_response_size=10) as pool:
            assert len((await pool.request("GET", "/10")).body) == 10
            with pytest.raises(trio_pool.ResponseExceededMaxSizeError):
                await pool.request("GET", "/11")
            assert idle_stats(pool) == (0, 0, 0, 0)


async def test_a_body_announced_over_max_response_size_fails_at_its_head() -> None:
    # The server announces 1 GB and sends its head only: the error comes from the head, with
    # no byte of the body awaited (a read of it would hang here), and the connection is
    # closed, not reused. HEAD, 204 and 304 announce a size without a body: not refused.
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        status = int(request.target[1:])
        await conn.send_head(status, [("content-length", str(10**9))])
        if request.method == "HEAD" or status in (204, 304):
            await conn.send_end()

    async with (
        serve_memory(script) as server,
        Pool(server.origin, connector=server.connector, max_response_size=10) as pool,
    ):
        for use_stream in (False, True):
            with trio.fail_after(5), pytest.raises(trio_pool.ResponseExceededMaxSizeError):
                if use_stream:
                    async with pool.stream("GET", "/200"):
                        pass  # pragma: no cover - the head is refused
                else:
                    await pool.request("GET", "/200")
        assert (await pool.request("HEAD", "/200")).status == 200
        assert (await pool.request("GET", "/304")).status == 304
        assert server.connections == 3  # each refused head closed its connection
        assert idle_stats(pool) == (0, 0, 0, 0)


def keep_alive_script(headers: list[tuple[str, str]]) -> Script:
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, headers, b"ok")

    return script


@pytest.mark.parametrize(
    ("headers", "options", "lifetime"),
    [
        ([], {}, 4.0),  # keep_alive_timeout default
        ([], {"keep_alive_timeout": 9}, 9.0),
        ([("keep-alive", "timeout=10")], {}, 8.0),  # hint minus threshold
        ([("keep-alive", "timeout=10, max=5")], {"keep_alive_timeout_threshold": 1}, 9.0),
        ([("keep-alive", "timeout=1000")], {}, 600.0),  # capped by keep_alive_max_timeout
        ([("keep-alive", "timeout=1000")], {"keep_alive_max_timeout": 30}, 30.0),
        ([("keep-alive", "timeout=abc")], {}, 4.0),  # malformed: the default
        # Issue 12 item 3: the leading integer counts, as in undici (servers send units).
        ([("keep-alive", "timeout=7s")], {}, 5.0),
        ([("keep-alive", "max=5, timeout=7.9")], {}, 5.0),
        ([("keep-alive", "timeout=s7")], {}, 4.0),  # no leading digit: ignored
        ([("keep-alive", "timeout=")], {}, 4.0),
        ([("keep-alive", "max=3")], {}, 4.0),
        ([("keep-alive", "timeout=2")], {}, 0.0),  # hint - threshold <= 0: close at once
        ([("connection", "close")], {}, 0.0),
    ],
)
async def test_keep_alive_lifetime(
    autojump_clock: trio.testing.MockClock,
    headers: list[tuple[str, str]],
    options: dict[str, Any],  # Any: each case sets a different option
    lifetime: float,
) -> None:
    disconnected: list[tuple[float, BaseException]] = []
    async with serve_memory(keep_alive_script(headers)) as server:
        async with Pool(server.origin, connector=server.connector, **options) as pool:
            pool.on("disconnect", lambda o, t, e: disconnected.append((trio.current_time(), e)))
            await pool.request("GET", "/")
            done = trio.current_time()
            await trio.sleep(1000)
            assert len(disconnected) == 1
            assert disconnected[0][0] - done == pytest.approx(lifetime)
            assert isinstance(disconnected[0][1], trio_pool.InformationalError)
            if lifetime:
                assert str(disconnected[0][1]) == "socket idle timeout"
            assert pool.statistics().connected == 0
            assert (await pool.request("GET", "/")).status == 200
            assert server.connections == 2


@pytest.mark.parametrize("unsolicited", [b"", b"HTTP/1.1 200 OK\r\n\r\n"])
async def test_idle_connection_closed_by_server_is_not_reused(unsolicited: bytes) -> None:
    hung_up = trio.Event()

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, body=b"x")
        if request.connection == 0:
            if unsolicited:
                await conn.send_raw(unsolicited)
                hung_up.set()
                await trio.sleep_forever()
            await conn.close()
            hung_up.set()

    # Real TCP: the FIN (or the bytes) is in the client's kernel once the server is done.
    async with serve_h11(script) as server, Pool(server.origin) as pool:
        errors: list[BaseException] = []
        pool.on("disconnect", lambda o, t, e: errors.append(e))
        await pool.request("GET", "/")
        await hung_up.wait()
        # A POST is never re-sent: it succeeds only if the dead connection was not used.
        assert (await pool.request("POST", "/")).status == 200
        assert server.connections == 2
        assert len(server.requests) == 2  # evicted before hand-out: nothing was sent twice
        assert pool.statistics().connected == 1
        await trio.testing.wait_all_tasks_blocked()
        assert len(errors) == 1
        assert isinstance(errors[0], trio_pool.SocketError)


async def test_stale_keep_alive_race_retries_idempotent_once() -> None:
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        if request.index == 1:  # the server gave up on the connection as this arrived
            await conn.close()
            return
        await conn.respond(200, body=request.method.encode())

    async with (
        serve_memory(script) as server,
        Pool(server.origin, connector=server.connector) as pool,
    ):
        await pool.request("GET", "/")
        response = await pool.request("GET", "/")
        assert response.body == b"GET"
        assert server.connections == 2
        assert [r.connection for r in server.requests] == [0, 0, 1]
        # POST is not idempotent: never re-sent.
        with pytest.raises(trio_pool.SocketError):
            await pool.request("POST", "/")
        assert len(server.requests) == 4
        # unless the caller says it is.
        await pool.request("GET", "/")
        assert (await pool.request("POST", "/", idempotent=True)).body == b"POST"


async def test_the_retry_goes_to_a_fresh_connection_not_another_idle_one() -> None:
    # Two kept-alive connections that the server has (silently, in memory) given up on: the
    # retry must not try the second stale one, it opens a fresh connection (API.md 1.6).
    both_in = trio.Event()
    arrived = 0

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        nonlocal arrived
        if request.index == 1:  # every connection dies at its second request
            await conn.close()
            return
        arrived += 1
        if arrived == 2:
            both_in.set()
        await both_in.wait()  # hold the first two requests: two connections exist
        await conn.respond(200, body=str(request.connection).encode())

    async with (
        serve_memory(script) as server,
        Pool(server.origin, connector=server.connector, connections=2) as pool,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.request, "GET", "/")
            nursery.start_soon(pool.request, "GET", "/")
        assert pool.statistics().connected == 2
        response = await pool.request("GET", "/")
        assert response.body == b"2"  # served by a third, new connection
        assert server.connections == 3
        assert len(server.requests) == 4  # the two, the stale try, the retry
        await trio.testing.wait_all_tasks_blocked()
        assert idle_stats(pool) == (0, 0, 0, 0)


async def test_stale_keep_alive_not_retried_when_disabled() -> None:
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        if request.index == 1:
            await conn.close()
            return
        await conn.respond(200)

    async with serve_memory(script) as server:
        async with Pool(server.origin, connector=server.connector, retry_idempotent=False) as pool:
            await pool.request("GET", "/")
            with pytest.raises(trio_pool.SocketError):
                await pool.request("GET", "/")


async def test_retry_happens_only_once() -> None:
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        if request.connection == 0 and request.index == 0:
            await conn.respond(200)
        else:
            await conn.close()

    async with (
        serve_memory(script) as server,
        Pool(server.origin, connector=server.connector) as pool,
    ):
        await pool.request("GET", "/")
        with pytest.raises(trio_pool.SocketError):
            await pool.request("GET", "/")
        assert len(server.requests) == 3  # the first, the stale try, the one retry


async def test_max_requests_per_client_recycles() -> None:
    async with serve_memory(ok) as server:
        async with Client(
            server.origin, connector=server.connector, max_requests_per_client=2
        ) as c:
            bodies = [(await c.request("GET", "/")).body for _ in range(5)]
    assert bodies == [b"0", b"0", b"1", b"1", b"2"]


async def test_pipelining_zero_closes_every_connection() -> None:
    async with serve_memory(ok) as server:
        async with Client(server.origin, connector=server.connector, pipelining=0) as c:
            bodies = [(await c.request("GET", "/")).body for _ in range(3)]
    assert bodies == [b"0", b"1", b"2"]
    assert all(r.header("connection") == "close" for r in server.requests)


async def test_client_ttl_retires_connections(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_memory(ok) as server:
        pool = Pool(
            server.origin, connector=server.connector, client_ttl=10, keep_alive_timeout=100
        )
        async with pool:
            reasons: list[str] = []
            pool.on("disconnect", lambda o, t, e: reasons.append(str(e)))
            assert (await pool.request("GET", "/")).body == b"0"
            await trio.sleep(6)
            assert (await pool.request("GET", "/")).body == b"0"
            await trio.sleep(6)
            assert reasons == ["client_ttl expired"]
            assert (await pool.request("GET", "/")).body == b"1"


async def test_body_without_timeout_after_headers_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow_body(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_head(200, [("content-length", "2")])
        await trio.sleep(50)
        await conn.send_data(b"ok")
        await conn.send_end()

    async with serve_memory(slow_body) as server:
        async with Pool(
            server.origin, connector=server.connector, headers_timeout=10, body_timeout=None
        ) as pool:
            assert (await pool.request("GET", "/")).body == b"ok"


async def test_async_handler_backpressure_is_not_a_body_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def body(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, body=b"x" * 10)

    async with serve_memory(body) as server:
        async with Pool(server.origin, connector=server.connector, body_timeout=5) as pool:
            async with pool.stream("GET", "/") as response:
                await trio.sleep(60)  # a slow reader is not a slow server
                assert await response.read() == b"x" * 10


async def test_a_failing_connector_is_a_connect_error_for_the_request() -> None:
    async def connector(origin: object) -> trio.abc.Stream:
        raise RuntimeError("no route in this test")

    async with Pool("http://example.test", connector=connector) as pool:
        with pytest.raises(trio_pool.ConnectError) as info:
            await pool.request("GET", "/")
        assert isinstance(info.value.__cause__, RuntimeError)
        assert pool.statistics().size == 0
