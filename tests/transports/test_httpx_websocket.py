"""Websockets through the transport: httpx-ws (for httpx) and ``httpx2.websockets`` drive the
``network_stream`` of a 101 response, against hypercorn's websocket support."""

from __future__ import annotations

import httpx2.websockets
import httpx_ws
import pytest
from _helpers import assert_idle

import trio_pool

from .conftest import Flavour


async def test_websocket_echo(flavour: Flavour, pool: trio_pool.Pool, origin: str) -> None:
    ws_module = httpx_ws if flavour.name == "httpx" else httpx2.websockets
    async with flavour.client(pool, base_url=origin) as client:
        ws_client = ws_module.AsyncWebSocketClient(client)
        async with ws_client.connect(f"{origin}/ws") as ws:
            for text in ("hello", "trio"):
                await ws.send_text(text)
                assert await ws.receive_text() == text[::-1]
            assert pool.statistics().connected == 0  # the connection left the pool
        assert_idle(pool)
        assert (await client.get("/status/200")).status_code == 200


async def test_a_refused_upgrade(flavour: Flavour, pool: trio_pool.Pool, origin: str) -> None:
    async with flavour.client(pool, base_url=origin) as client:
        with pytest.raises(flavour.module.ReadError, match="bad upgrade"):
            await client.get("/status/200", headers={"upgrade": "websocket"})
        assert_idle(pool)
