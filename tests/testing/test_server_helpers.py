"""The documented behaviour of ``trio_pool.testing``'s scripted servers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest
import trio
import trio.testing

import trio_pool
from trio_pool.testing import (
    H11Server,
    Script,
    ServerConnection,
    ServerRequest,
    serve_h11,
    serve_memory,
)


async def answer_ok(request: ServerRequest, conn: ServerConnection) -> None:
    await conn.respond(200, body=b"ok")


async def test_respond_adds_content_length_unless_the_headers_frame_the_body() -> None:
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        if request.target == "/plain":
            await conn.respond(200, [("x-a", "1")], body=b"abc", reason=b"Fine")
        else:
            await conn.respond(200, [("transfer-encoding", "chunked")], body=b"abc")

    async with serve_memory(script) as server:
        async with trio_pool.Pool(server.origin, connector=server.connector) as pool:
            plain = await pool.request("GET", "/plain")
            chunked = await pool.request("GET", "/chunked")
    assert list(plain.headers) == [("x-a", "1"), ("content-length", "3")]
    assert (plain.body, plain.reason) == (b"abc", "Fine")
    assert "content-length" not in chunked.headers
    assert chunked.body == b"abc"


async def test_piecewise_sending_with_trailers() -> None:
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_head(200, [("transfer-encoding", "chunked")])
        await conn.send_data(b"a")
        await conn.send_data(b"b")
        await conn.send_end([("x-checksum", "ab")])

    async with serve_memory(script) as server:
        async with trio_pool.Pool(server.origin, connector=server.connector) as pool:
            response = await pool.request("GET", "/")
    assert (response.body, response.trailers["x-checksum"]) == (b"ab", "ab")


async def test_requests_are_recorded_with_their_connection_and_position() -> None:
    async with serve_memory(answer_ok) as server:
        async with trio_pool.Pool(server.origin, connector=server.connector) as pool:
            await pool.request("POST", "/a", body=b"1", headers={"X-Trace": "t1"})
            await pool.request("GET", "/b", query={"q": "2"})
        async with trio_pool.Pool(server.origin, connector=server.connector) as pool:
            await pool.request("GET", "/c")
    first, second, third = server.requests
    assert third.target == "/c"
    assert (first.method, first.target, first.body) == ("POST", "/a", b"1")
    assert first.header("x-TRACE") == "t1"
    assert ("x-trace", "t1") in first.headers  # names lower-cased
    assert first.header("x-absent") is None
    assert second.target == "/b?q=2"
    assert [(r.connection, r.index) for r in server.requests] == [(0, 0), (0, 1), (1, 0)]
    assert server.connections == 2


async def test_refuse_hang_and_connect_delay_script_the_connector(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_memory(answer_ok) as server:
        async with trio_pool.Pool(server.origin, connector=server.connector) as pool:
            server.refuse = True
            with pytest.raises(trio_pool.ConnectError) as info:
                await pool.request("GET", "/")
            assert isinstance(info.value.__cause__, ConnectionRefusedError)
            server.refuse, server.hang = False, True
            with trio.move_on_after(5) as scope:  # before connect_timeout (10 s)
                await pool.request("GET", "/")
            assert scope.cancelled_caught
            server.hang, server.connect_delay = False, 4
            start = trio.current_time()
            assert (await pool.request("GET", "/")).body == b"ok"
            assert trio.current_time() - start == pytest.approx(4)


async def test_serve_h11_listens_on_loopback_and_streams_request_bodies() -> None:
    pieces: list[bytes | None] = []

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        assert request.body == b""  # streaming: the script reads it
        while True:
            piece = await conn.receive_data()
            pieces.append(piece)
            if piece is None:
                break
        await conn.respond(200, body=b"done")

    async def body() -> AsyncIterator[bytes]:
        yield b"x"
        yield b"y"

    async with serve_h11(script, streaming=True) as server:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.origin)
        async with trio_pool.Pool(server.origin) as pool:
            response = await pool.request("POST", "/", body=body())
    assert response.body == b"done"
    assert b"".join(p for p in pieces if p) == b"xy"
    assert pieces[-1] is None


async def test_close_is_a_fin_the_pool_reports() -> None:
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.close()

    async with serve_memory(script) as server:
        async with trio_pool.Pool(server.origin, connector=server.connector) as pool:
            with pytest.raises(trio_pool.SocketError):
                await pool.request("POST", "/")  # not idempotent: no re-send


@pytest.mark.parametrize("serve", [serve_h11, serve_memory])
async def test_an_error_in_the_block_leaves_as_itself(
    serve: Callable[[Script], AbstractAsyncContextManager[H11Server]],
) -> None:
    server: H11Server | None = None
    with pytest.raises(KeyError, match="mine"):
        async with serve(answer_ok) as server:
            raise KeyError("mine")
    assert server is not None
