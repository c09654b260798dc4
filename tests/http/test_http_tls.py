"""https with ``ssl_context`` (verification on, SNI = host), against a trustme CA."""

from __future__ import annotations

import ssl

import pytest
import trustme

import trio_pool
from trio_pool import Pool
from trio_pool.testing import ServerConnection, ServerRequest, serve_h11


async def hello(request: ServerRequest, conn: ServerConnection) -> None:
    await conn.respond(200, body=b"secure")


async def test_https_with_a_trusted_ca(ca: trustme.CA, server_context: ssl.SSLContext) -> None:
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with serve_h11(hello, ssl_context=server_context) as server:
        assert server.origin.startswith("https://")
        async with Pool(server.origin, ssl_context=client_context) as pool:
            for _ in range(3):
                assert (await pool.request("GET", "/")).body == b"secure"
            assert server.connections == 1  # kept alive, reused over TLS


async def test_https_verification_failure_is_connect_error(server_context: ssl.SSLContext) -> None:
    async with serve_h11(hello, ssl_context=server_context) as server:
        async with Pool(server.origin) as pool:  # default context: the test CA is unknown
            with pytest.raises(trio_pool.ConnectError) as info:
                await pool.request("GET", "/")
            assert isinstance(info.value.__cause__, ssl.SSLError)
            assert pool.statistics().size == 0
