"""The in-memory server and the Pool most interceptor tests use: each test module gives the
server's ``script`` fixture (a ``trio_pool.testing`` script)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from trio_pool import Pool
from trio_pool.testing import H11Server, Script, serve_memory


@pytest.fixture
async def server(script: Script) -> AsyncIterator[H11Server]:
    async with serve_memory(script) as server:
        yield server


@pytest.fixture
async def pool(server: H11Server) -> AsyncIterator[Pool]:
    async with Pool(server.origin, connector=server.connector) as pool:
        yield pool
