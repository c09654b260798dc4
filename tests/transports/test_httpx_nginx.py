"""httpx and httpx2 over trio_pool against nginx (the benchmark suite's server: http and https
on loopback, a 12-byte body at ``/`` and a 64 KiB one at ``/64k``): many concurrent requests
over TLS, and a cancellation mid-body, each ending with the pool idle."""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from _helpers import assert_idle

import trio_pool

from .conftest import Flavour

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "benchmarks"))

import _servers


@pytest.fixture(scope="module")
def nginx() -> Iterator[_servers.Server]:
    if _servers.nginx_binary() is None:
        # As in tests/benchmarks: CI installs nginx and sets this, so there it must be found.
        if os.environ.get("TRIO_POOL_REQUIRE_NGINX") == "1":
            pytest.fail("TRIO_POOL_REQUIRE_NGINX=1 but nginx is not installed", pytrace=False)
        pytest.skip("nginx is not installed")
    with _servers.start("nginx") as server:
        yield server


async def test_concurrent_https_and_a_cancellation(
    flavour: Flavour, nginx: _servers.Server
) -> None:
    origin = nginx.origins("https")[0]
    context = ssl.create_default_context(cafile=nginx.cafile)
    async with trio_pool.Pool(origin, connections=8, ssl_context=context) as pool:
        async with flavour.client(pool, base_url=origin) as client:
            sizes: list[int] = []

            async def get(path: str) -> None:
                r = await client.get(path)
                r.raise_for_status()
                sizes.append(len(r.content))

            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(get, _servers.LARGE_PATH if i % 2 else _servers.SMALL_PATH)
            assert sorted(sizes) == [_servers.SMALL_SIZE] * 20 + [_servers.LARGE_SIZE] * 20
            assert pool.statistics().connected <= 8

            with trio.CancelScope() as scope:
                async with client.stream("GET", _servers.LARGE_PATH) as r:
                    async for _ in r.aiter_raw():
                        scope.cancel()  # the rest of the body is abandoned
            assert scope.cancelled_caught
            assert_idle(pool)
            assert (await client.get(_servers.SMALL_PATH)).status_code == 200
        assert_idle(pool)
