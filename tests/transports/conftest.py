"""Fixtures of the httpx transport tests: each test runs once with ``httpx`` and once with
``httpx2`` (the ``flavour`` fixture: the package module and its ``AsyncTransport``)."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator

import attrs
import httpx
import httpx2
import pytest
from _helpers import assert_idle

import trio_pool
import trio_pool.httpx
import trio_pool.httpx2

from ._httpx_app import STALLS, served


@attrs.frozen
class Flavour:
    """One httpx-like package under test."""

    name: str
    module: types.ModuleType  # httpx or httpx2: its classes, looked up by name
    transport: type[trio_pool.httpx.AsyncTransport] | type[trio_pool.httpx2.AsyncTransport]

    def client(self, dispatcher: trio_pool.Dispatcher, **options: object) -> httpx.AsyncClient:
        """An ``AsyncClient`` of this package over ``dispatcher`` (typed as httpx's: the two
        have the same interface)."""
        client: httpx.AsyncClient = self.module.AsyncClient(
            transport=self.transport(dispatcher), **options
        )
        return client


FLAVOURS = {
    "httpx": Flavour("httpx", httpx, trio_pool.httpx.AsyncTransport),
    "httpx2": Flavour("httpx2", httpx2, trio_pool.httpx2.AsyncTransport),
}


@pytest.fixture(params=sorted(FLAVOURS))
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return FLAVOURS[request.param]


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    STALLS.reset()
    async with served() as origin:
        yield origin


@pytest.fixture
async def pool(origin: str) -> AsyncIterator[trio_pool.Pool]:
    async with trio_pool.Pool(origin, connections=4) as pool:
        yield pool
        assert_idle(pool)
