"""``upgrade()`` and ``connect()``: the connection leaves the pool as a trio stream."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trio_pool
from trio_pool import Pool
from trio_pool.testing import ServerConnection, ServerRequest, serve_h11, serve_memory


async def switching(request: ServerRequest, conn: ServerConnection) -> None:
    """Upgrades or tunnels, then echoes upper-cased; a plain GET is answered normally."""
    if request.method == "CONNECT":
        await conn.switch_protocols(200, [("x-tunnel", request.target)])
    elif request.header("upgrade") == "echo":
        await conn.switch_protocols(101, [("upgrade", "echo"), ("connection", "upgrade")])
        await conn.send_raw(b"hello")  # arrives with the 101: must not be lost
    else:
        await conn.respond(426 if request.header("upgrade") else 200, body=b"plain")
        return
    while data := await conn.stream.receive_some():
        await conn.send_raw(bytes(data).upper())  # receive_some may give a bytearray


async def test_upgrade_hands_the_connection_over() -> None:
    async with serve_h11(switching) as server, Pool(server.origin) as pool:
        async with pool.upgrade("/ws", protocol="echo") as up:
            assert up.status == 101
            assert up.headers["upgrade"] == "echo"
            assert isinstance(up.stream, trio.abc.Stream)
            received = b""
            while len(received) < 5:
                received += await up.stream.receive_some()
            assert received == b"hello"
            await up.stream.send_all(b"abc")
            assert await up.stream.receive_some() == b"ABC"
            stats = pool.statistics()
            assert (stats.connected, stats.size) == (0, 0)  # it left the pool
        assert (await pool.request("GET", "/")).body == b"plain"


async def test_connect_tunnel() -> None:
    async with (
        serve_memory(switching) as server,
        Pool(server.origin, connector=server.connector) as pool,
    ):
        async with pool.connect("example.com:443") as tunnel:
            assert tunnel.status == 200
            assert tunnel.headers["x-tunnel"] == "example.com:443"
            await tunnel.stream.send_all(b"xyz")
            assert await tunnel.stream.receive_some() == b"XYZ"
        assert server.requests[0].method == "CONNECT"


async def test_refused_upgrade_is_socket_error_and_connection_is_reused() -> None:
    async with (
        serve_memory(switching) as server,
        Pool(server.origin, connector=server.connector) as pool,
    ):
        with pytest.raises(trio_pool.SocketError, match="bad upgrade"):
            async with pool.upgrade("/", protocol="other"):
                pass
        assert (await pool.request("GET", "/")).status == 200
        assert server.connections == 1


async def test_upgrade_arguments_are_checked() -> None:
    async with Pool("http://x") as pool:
        with pytest.raises(trio_pool.InvalidArgumentError, match="protocol"):
            async with pool.upgrade("/", protocol="a b"):
                pass
        with pytest.raises(trio_pool.InvalidArgumentError, match="authority"):
            async with pool.connect("a b:1"):
                pass


async def test_a_101_without_an_upgrade_header_is_a_parser_error_and_closes() -> None:
    """Issue 12 item 5: a 101 must name the protocol it switched to; one that does not is
    refused (``HTTPParserError``) and its connection closed, never handed over."""

    async def bare_101(request: ServerRequest, conn: ServerConnection) -> None:
        if request.header("upgrade"):
            await conn.switch_protocols(101, [("connection", "upgrade")])
            await conn.send_raw(b"junk")
        else:
            await conn.respond(200, body=b"plain")

    async with (
        serve_memory(bare_101) as server,
        Pool(server.origin, connector=server.connector) as pool,
    ):
        disconnects: list[BaseException] = []
        pool.on("disconnect", lambda origin, targets, error: disconnects.append(error))
        with pytest.raises(trio_pool.HTTPParserError, match="upgrade"):
            async with pool.upgrade("/ws", protocol="echo"):
                pytest.fail("entered with a 101 without upgrade")  # pragma: no cover
        await trio.testing.wait_all_tasks_blocked()
        assert len(disconnects) == 1
        stats = pool.statistics()
        assert (stats.connected, stats.size) == (0, 0)
        assert (await pool.request("GET", "/")).body == b"plain"
        assert server.connections == 2
