"""The response headers reach httpx as the server sent them (names in their case, values
as bytes), as httpx's own transport hands them on; a read of them is not needed first."""

from __future__ import annotations

import trio_pool
from trio_pool.testing import ServerConnection, ServerRequest, serve_memory

from .conftest import Flavour


async def script(request: ServerRequest, conn: ServerConnection) -> None:
    await conn.send_raw(
        b"HTTP/1.1 200 OK\r\nX-Mixed-Case: caf\xe9\r\nContent-Length: 2\r\n"
        b"x-dup: 1\r\nX-Dup: 2\r\n\r\nok"
    )


async def test_headers_as_sent(flavour: Flavour) -> None:
    async with serve_memory(script) as server:
        async with trio_pool.Pool(server.origin, connector=server.connector) as pool:
            async with flavour.client(pool, base_url=server.origin) as client:
                response = await client.get("/")
                assert response.headers.raw == [
                    (b"X-Mixed-Case", b"caf\xe9"),
                    (b"Content-Length", b"2"),
                    (b"x-dup", b"1"),
                    (b"X-Dup", b"2"),
                ]
                assert response.headers["x-mixed-case"] == "caf\xe9"
                assert response.headers.get_list("x-dup") == ["1", "2"]
                assert response.content == b"ok"
