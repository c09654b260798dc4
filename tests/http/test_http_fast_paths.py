"""The shortcuts of the request path must not change what a request does.

Requests without headers, body or query are prepared once per (method, path, reset) and
copied afterwards (``_request.Prepared``): the copies must be the same requests, errors must
stay errors, and nothing of one request may leak into the next. Response headers are decoded
lazily, and the ``max_header_size`` check is skipped when too few bytes arrived to exceed it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

import trio_pool
from trio_pool import HeadersOverflowError, InvalidArgumentError, Pool
from trio_pool.testing import H11Server, ServerConnection, ServerRequest, serve_memory


async def answer(request: ServerRequest, conn: ServerConnection) -> None:
    await conn.respond(200, body=f"{request.method} {request.target}".encode())


@pytest.fixture
async def pool() -> AsyncIterator[tuple[Pool, H11Server]]:
    async with serve_memory(answer) as server:
        async with Pool(server.origin, connector=server.connector, connections=1) as pool:
            yield pool, server


async def test_repeated_requests_are_identical_on_the_wire(pool: tuple[Pool, H11Server]) -> None:
    dispatcher, server = pool
    for _ in range(3):
        assert (await dispatcher.request("GET", "/a")).body == b"GET /a"
        assert (await dispatcher.request("DELETE", "/a")).body == b"DELETE /a"
    heads = {(r.method, r.target, tuple(r.headers)) for r in server.requests}
    assert len(heads) == 2
    assert len(server.requests) == 6


async def test_reset_is_part_of_the_shape(pool: tuple[Pool, H11Server]) -> None:
    dispatcher, server = pool
    await dispatcher.request("GET", "/")
    await dispatcher.request("GET", "/", reset=True)
    await dispatcher.request("GET", "/")
    closes = [r.header("connection") for r in server.requests]
    assert closes == [None, "close", None]
    assert server.connections == 2  # the reset one closed its connection


async def test_more_shapes_than_the_cache_holds(pool: tuple[Pool, H11Server]) -> None:
    dispatcher, server = pool
    paths = [f"/{i}" for i in range(150)]
    for path in paths + paths[:5]:
        assert (await dispatcher.request("GET", path)).body == f"GET {path}".encode()
    assert [r.target for r in server.requests] == paths + paths[:5]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("G T", "/"),
        ("GET", "no-slash"),
        ("GET", "/a b"),
        (b"GET", "/"),
        ("GET", b"/"),
        ("GET", None),
    ],
)
async def test_bad_arguments_fail_every_time(
    pool: tuple[Pool, H11Server], method: object, path: object
) -> None:
    dispatcher, server = pool
    for _ in range(2):  # a refusal is never remembered as a prepared request
        with pytest.raises(InvalidArgumentError):
            await dispatcher.request(method, path)  # type: ignore[arg-type]
    assert server.requests == []


def raw_response(headers: bytes = b"", body: bytes = b"ok") -> bytes:
    length = b"content-length: %d\r\n" % len(body)
    return b"HTTP/1.1 200 OK\r\n" + headers + length + b"\r\n" + body


async def test_an_oversized_head_that_came_with_the_previous_response(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Pipelined: the second head is already buffered when its turn comes, so no byte
    arrives while it is read, and it must still be measured."""
    big = raw_response(b"x-big: " + b"y" * 500 + b"\r\n")

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        if request.index == 0:
            await trio.sleep(1)  # the second request is written meanwhile
            await conn.send_raw(raw_response() + big)

    async with serve_memory(script) as server:
        async with Pool(
            server.origin,
            connector=server.connector,
            connections=1,
            pipelining=2,
            max_header_size=200,
        ) as pool:
            results: list[object] = []

            async def get() -> None:
                try:
                    results.append((await pool.request("GET", "/")).body)
                except HeadersOverflowError as exc:
                    results.append(type(exc))

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(get)
                    await trio.testing.wait_all_tasks_blocked()
                    nursery.start_soon(get)
                    await trio.testing.wait_all_tasks_blocked()
                    assert pool.statistics().running == 2  # both written
    assert results == [b"ok", HeadersOverflowError]


async def test_response_headers_as_sent() -> None:
    """Mixed-case names from the wire: lookups, iteration, equality and the keep-alive hint
    (a 1-second ``Keep-Alive`` timeout is below the 2-second threshold: not reused)."""
    head = b"X-One: a\r\nX-ONE: b\r\nKEEP-ALIVE: timeout=1\r\n"

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_raw(raw_response(head))

    async with serve_memory(script) as server:
        async with Pool(server.origin, connector=server.connector) as pool:
            response = await pool.request("GET", "/")
            await trio.testing.wait_all_tasks_blocked()
            assert pool.statistics().connected == 0  # the hint closed it
    headers = response.headers
    assert len(headers) == 4
    assert headers["x-one"] == "a"
    assert headers.get_all("X-One") == ["a", "b"]
    assert "keep-alive" in headers
    assert list(headers)[:2] == [("x-one", "a"), ("x-one", "b")]
    assert headers == trio_pool.Headers(
        [("x-one", "a"), ("x-one", "b"), ("keep-alive", "timeout=1"), ("content-length", "2")]
    )
    assert response.trailers == trio_pool.Headers()


async def answers_once(request: ServerRequest, conn: ServerConnection) -> None:
    """The first request on a connection is answered; the next never is."""
    if request.index > 0:
        await trio.sleep_forever()
    await conn.respond(200, body=b"ok")


async def test_a_read_timeout_after_the_connection_task_rearmed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The connection task enforces read timeouts lazily: asleep until the idle expiry
    (t=4) when the read begins (t=1, due t=11), it re-arms for the read and fires on time."""
    async with serve_memory(answers_once) as server:
        async with Pool(
            server.origin, connector=server.connector, keep_alive_timeout=4, headers_timeout=10
        ) as pool:
            await pool.request("GET", "/")
            await trio.sleep(1)
            start = trio.current_time()
            with pytest.raises(trio_pool.HeadersTimeoutError):
                await pool.request("GET", "/")
            assert trio.current_time() - start == pytest.approx(10)
            assert server.connections == 1


async def test_a_read_timeout_that_begins_after_the_connection_task_woke(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The connection task woke at the idle expiry (t=4) while the request was still
    writing its body: no read to watch, so it slept without a deadline; the read that
    begins at t=6 must give it one (due t=16)."""

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"a"
        await trio.sleep(5)
        yield b"b"

    async with serve_memory(answers_once) as server:
        async with Pool(
            server.origin, connector=server.connector, keep_alive_timeout=4, headers_timeout=10
        ) as pool:
            await pool.request("GET", "/")
            await trio.sleep(1)
            with pytest.raises(trio_pool.HeadersTimeoutError):
                await pool.request("POST", "/", body=slow_body())
            assert trio.current_time() == pytest.approx(16, abs=0.01)
            assert (await pool.request("GET", "/")).body == b"ok"  # a new connection
            assert server.connections == 2
