"""``stream()``'s cheap paths: a head read without a request cancel scope (no request body
to produce) and body steps that have already arrived taken without one (issue #15's speed).
Each is cancelled, aborted, timed out and fed a broken body; afterwards ``statistics()`` is
idle and the next request succeeds."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from _helpers import assert_idle

from trio_pool import (
    Client,
    ClientDestroyedError,
    HeadersTimeoutError,
    HTTPParserError,
    Pool,
    StreamResponse,
)
from trio_pool.testing import H11Server, ServerConnection, ServerRequest, serve_h11, serve_memory


async def script(request: ServerRequest, conn: ServerConnection) -> None:
    """``/never`` never answers; ``/chunks`` sends a chunked body in one write (head and
    all; the server hangs up afterwards, not having framed it itself); ``/bad`` a chunked
    body whose second chunk size is not hex, in one write."""
    if request.target == "/never":
        await trio.sleep_forever()
    if request.target == "/chunks":
        await conn.send_raw(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        return
    if request.target == "/bad":
        await conn.send_raw(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"
        )
        await trio.sleep_forever()
    await conn.respond(200, body=str(conn.number).encode())


@pytest.fixture
async def server() -> AsyncIterator[H11Server]:
    async with serve_memory(script) as server:
        yield server


@pytest.fixture(params=["client", "pool"])
async def dispatcher(
    request: pytest.FixtureRequest, server: H11Server
) -> AsyncIterator[Client | Pool]:
    kind = Client if request.param == "client" else Pool
    async with kind(server.origin, connector=server.connector, headers_timeout=None) as d:
        yield d


async def _chunks(response: StreamResponse) -> list[bytes]:
    return [chunk async for chunk in response.body]


async def test_cancel_a_stream_waiting_for_its_head(
    autojump_clock: trio.testing.MockClock, dispatcher: Client | Pool
) -> None:
    with trio.move_on_after(5) as scope:
        async with dispatcher.stream("GET", "/never"):
            pytest.fail("the head never comes")
    assert scope.cancelled_caught
    assert_idle(dispatcher)
    async with dispatcher.stream("GET", "/") as response:
        assert await response.read() == b"1"  # the cut connection was closed (0-based)
    assert_idle(dispatcher)


async def test_cancel_a_stream_head_over_tcp() -> None:
    async with serve_h11(script) as server, Pool(server.origin) as pool:
        with trio.move_on_after(0.2) as scope:
            async with pool.stream("GET", "/never"):
                pytest.fail("the head never comes")
        assert scope.cancelled_caught
        assert_idle(pool)
        async with pool.stream("GET", "/") as response:
            assert await response.read() == b"1"


async def test_a_stream_head_times_out(
    autojump_clock: trio.testing.MockClock, server: H11Server
) -> None:
    async with Pool(server.origin, connector=server.connector, headers_timeout=3) as pool:
        with pytest.raises(HeadersTimeoutError):
            async with pool.stream("GET", "/never"):
                pytest.fail("the head never comes")
        assert_idle(pool)
        async with pool.stream("GET", "/") as response:
            assert await response.read() == b"1"


async def test_destroy_aborts_a_stream_waiting_for_its_head(
    autojump_clock: trio.testing.MockClock, server: H11Server
) -> None:
    async with Pool(server.origin, connector=server.connector) as pool:
        async with trio.open_nursery() as nursery:
            failed: list[BaseException] = []

            async def waiting() -> None:
                try:
                    async with pool.stream("GET", "/never"):
                        pytest.fail("the head never comes")
                except ClientDestroyedError as exc:
                    failed.append(exc)

            nursery.start_soon(waiting)
            await trio.sleep(1)
            await pool.destroy()
        assert len(failed) == 1
        assert_idle(pool)


async def test_a_body_that_arrived_with_its_head(dispatcher: Client | Pool) -> None:
    async with dispatcher.stream("GET", "/chunks") as response:
        assert response._ready()  # the first chunk is here: no read deadline needed
        assert await _chunks(response) == [b"abc", b"de"]
        assert response._ready()  # the end has been read
    assert_idle(dispatcher, all_free=True)
    assert dispatcher.statistics().free == 1  # kept: the whole body was read
    async with dispatcher.stream("GET", "/") as response:
        assert response.status == 200


async def test_a_broken_body_that_arrived_with_its_head(dispatcher: Client | Pool) -> None:
    async with dispatcher.stream("GET", "/bad") as response:
        body = response.body
        assert await body.__anext__() == b"abc"
        assert response._ready()  # the broken chunk has arrived: the error is the next step
        with pytest.raises(HTTPParserError):
            await body.__anext__()
        with pytest.raises(HTTPParserError):  # the request keeps its error
            await body.__anext__()
    assert_idle(dispatcher)
    async with dispatcher.stream("GET", "/") as response:
        assert await response.read() == b"1"  # the broken connection was closed


async def test_leaving_after_a_peek_keeps_the_connection(dispatcher: Client | Pool) -> None:
    async with dispatcher.stream("GET", "/chunks") as response:
        assert response._ready()  # a chunk taken ahead, never handed out
    assert_idle(dispatcher, all_free=True)
    assert dispatcher.statistics().free == 1  # the rest had arrived: drained, kept
    async with dispatcher.stream("GET", "/") as response:
        assert response.status == 200
