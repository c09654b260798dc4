"""httpx and httpx2 over trio_pool against hypercorn (loopback): what httpx users do.

Every test runs with both packages (the ``flavour`` fixture) and ends with the dispatcher
idle (the ``pool`` fixture checks it).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import socket
import tracemalloc
from collections.abc import AsyncIterator
from functools import partial

import httpx
import pytest
import trio
import trio.testing
from _helpers import assert_idle

import trio_pool

from ._httpx_app import STALLS, pattern, served
from .conftest import Flavour


async def test_get_and_post(flavour: Flavour, pool: trio_pool.Pool, origin: str) -> None:
    async with flavour.client(pool, base_url=origin) as client:
        r = await client.get("/inspect", params={"a": "1", "b": "x y"}, headers={"X-Id": "7"})
        assert r.status_code == 200
        seen = r.json()
        assert (seen["method"], seen["path"], seen["query"]) == ("GET", "/inspect", "a=1&b=x+y")
        assert ["x-id", "7"] in seen["headers"]
        assert r.http_version == "HTTP/1.1"
        assert r.reason_phrase == ""  # what hypercorn sent (httpcore reports it the same)
        assert r.extensions["http_version"] == b"HTTP/1.1"
        r = await client.post("/inspect", json={"k": [1, 2]})
        seen = r.json()
        assert (seen["method"], json.loads(seen["body"])) == ("POST", {"k": [1, 2]})
        assert ["content-type", "application/json"] in seen["headers"]
        r = await client.put("/inspect", content=b"")
        assert r.json()["size"] == 0
        r = await client.head("/inspect")
        assert (r.status_code, r.content) == (200, b"")
    assert_idle(pool)


async def test_closing_the_client_leaves_the_dispatcher_open(
    flavour: Flavour, pool: trio_pool.Pool, origin: str
) -> None:
    transport = flavour.transport(pool)
    assert transport.dispatcher is pool
    async with flavour.module.AsyncClient(transport=transport, base_url=origin) as client:
        assert (await client.get("/status/204")).status_code == 204
    await transport.aclose()
    assert not pool.closed
    assert (await pool.request("GET", "/status/200")).status == 200


async def test_download_100_mb_in_bounded_memory(
    flavour: Flavour, pool: trio_pool.Pool, origin: str
) -> None:
    size = 100 * 1024 * 1024
    digest = hashlib.sha256()
    received = 0
    tracemalloc.start()
    try:
        async with flavour.client(pool, base_url=origin) as client:
            async with client.stream("GET", f"/download?size={size}") as r:
                assert r.headers["content-length"] == str(size)
                async for chunk in r.aiter_raw():
                    received += len(chunk)
                    digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(pattern(size)).hexdigest()
    # The server (in this process too) and the client each hold a few 64 KiB pieces at most.
    assert peak < 8 * 1024 * 1024, peak


async def test_upload_20_mb_in_bounded_memory(
    flavour: Flavour, pool: trio_pool.Pool, origin: str
) -> None:
    size = 20 * 1024 * 1024
    piece = b"u" * 65536

    async def produce() -> AsyncIterator[bytes]:
        for _ in range(size // len(piece)):
            yield piece

    tracemalloc.start()
    try:
        async with flavour.client(pool, base_url=origin) as client:
            r = await client.post("/upload", content=produce())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.json() == {"size": size, "sha256": hashlib.sha256(b"u" * size).hexdigest()}
    assert peak < 8 * 1024 * 1024, peak


async def test_redirects_cookies_auth_hooks(
    flavour: Flavour, pool: trio_pool.Pool, origin: str
) -> None:
    seen: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        seen.append(f"> {request.method} {request.url.path}")

    async def on_response(response: httpx.Response) -> None:
        seen.append(f"< {response.status_code}")

    hooks = {"request": [on_request], "response": [on_response]}
    async with flavour.client(pool, base_url=origin, event_hooks=hooks) as client:
        r = await client.get("/redirect", params={"to": "/status/201"}, follow_redirects=True)
        assert r.status_code == 201
        assert [h.status_code for h in r.history] == [302]
        assert seen == ["> GET /redirect", "< 302", "> GET /status/201", "< 201"]
        r = await client.get("/redirect", params={"to": "/status/201"})
        assert (r.status_code, r.headers["location"]) == (302, "/status/201")

        await client.get("/cookies/set", params={"flavour": "trio"})
        assert (await client.get("/cookies")).json() == {"cookie": "flavour=trio"}

        assert (await client.get("/basic")).status_code == 401
        r = await client.get("/basic", auth=flavour.module.BasicAuth("user", "pass"))
        assert (r.status_code, r.text) == (200, "welcome")


async def test_httpx_decodes_the_raw_body(
    flavour: Flavour, pool: trio_pool.Pool, origin: str
) -> None:
    async with flavour.client(pool, base_url=origin) as client:
        r = await client.get("/gzip")
        assert r.headers["content-encoding"] == "gzip"
        assert r.json() == {"packed": True}
        async with client.stream("GET", "/gzip") as r:
            raw = b"".join([chunk async for chunk in r.aiter_raw()])
        assert gzip.decompress(raw) == b'{"packed": true}'


async def test_raise_for_status(flavour: Flavour, pool: trio_pool.Pool, origin: str) -> None:
    async with flavour.client(pool, base_url=origin) as client:
        r = await client.get("/status/503")
        with pytest.raises(flavour.module.HTTPStatusError, match="503"):
            r.raise_for_status()
        (await client.get("/status/200")).raise_for_status()


async def test_a_response_closed_elsewhere(
    flavour: Flavour, pool: trio_pool.Pool, origin: str
) -> None:
    # The transport enters stream() in one call and leaves it in another: that holds when
    # the response is closed from another task, or outside the scope it was opened in.
    async with flavour.client(pool, base_url=origin) as client:
        with trio.CancelScope():
            r = await client.send(client.build_request("GET", "/download?size=300000"), stream=True)
        assert r.headers["content-length"] == "300000"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(r.aclose)
        assert_idle(pool)
        r = await client.send(client.build_request("GET", "/status/200"), stream=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(r.aread)
        await r.aclose()
        assert r.content == b"status"
    assert_idle(pool)


# --------------------------------------------------------------------------- cancellation


async def test_cancelled_get_leaves_the_pool_idle(
    flavour: Flavour, pool: trio_pool.Pool, origin: str
) -> None:
    # httpcore#1093: a cancelled request must not keep its slot.
    async with flavour.client(pool, base_url=origin) as client:
        for _ in range(3):
            STALLS.reset()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.get, "/stall")
                await STALLS.arrived.wait()
                nursery.cancel_scope.cancel()
            assert_idle(pool)
            assert (await client.get("/status/200")).status_code == 200


async def test_cancelled_while_queued(flavour: Flavour, origin: str) -> None:
    async with trio_pool.Pool(origin, connections=1) as pool:
        async with flavour.client(pool, base_url=origin) as client:
            async with client.stream("GET", "/download?size=1000000") as held:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.get, "/status/200")
                    await trio.testing.wait_all_tasks_blocked()
                    assert pool.statistics().queued == 1  # the only connection is held
                    nursery.cancel_scope.cancel()
                assert pool.statistics().queued == 0
                await held.aread()
            assert (await client.get("/status/200")).status_code == 200
        assert_idle(pool)


async def test_cancelled_mid_body_and_mid_upload(
    flavour: Flavour, pool: trio_pool.Pool, origin: str
) -> None:
    async with flavour.client(pool, base_url=origin) as client:
        with trio.CancelScope() as scope:
            async with client.stream("GET", "/download?size=10000000") as r:
                async for _ in r.aiter_raw():
                    scope.cancel()  # the next read is cancelled
        assert scope.cancelled_caught
        assert_idle(pool)

        halfway = trio.Event()

        async def produce() -> AsyncIterator[bytes]:
            yield b"x" * 1000
            halfway.set()
            await trio.sleep(math.inf)  # cancelled here, half-way through the body
            yield b"never sent"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(client.post, "/upload", content=produce()))
            await halfway.wait()
            nursery.cancel_scope.cancel()
        assert_idle(pool)
        assert (await client.get("/status/200")).status_code == 200


# --------------------------------------------------------------------------- errors


async def test_connect_error(flavour: Flavour) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    origin = f"http://127.0.0.1:{port}"
    async with trio_pool.Pool(origin) as pool:
        async with flavour.client(pool, base_url=origin) as client:
            with pytest.raises(flavour.module.ConnectError) as caught:
                await client.get("/")
            assert isinstance(caught.value.__cause__, trio_pool.ConnectError)
        assert_idle(pool)


async def test_another_origin_is_refused_before_sending(
    flavour: Flavour, pool: trio_pool.Pool, origin: str
) -> None:
    async with flavour.client(pool) as client:
        with pytest.raises(flavour.module.LocalProtocolError, match="not this dispatcher"):
            await client.get("http://elsewhere.test/inspect")
        assert pool.statistics().connected == 0  # nothing was sent
        assert (await client.get(f"{origin}/status/200")).status_code == 200


async def test_balanced_pool(flavour: Flavour, origin: str) -> None:
    async with served() as other:
        async with trio_pool.BalancedPool([origin, other]) as balanced:
            async with flavour.client(balanced, base_url=other) as client:
                hosts = set()
                for _ in range(4):
                    seen = (await client.get("/inspect")).json()
                    hosts.add(dict(seen["headers"])["host"])
                assert hosts == {origin.split("//")[1], other.split("//")[1]}
                with pytest.raises(flavour.module.LocalProtocolError, match="not this dispatcher"):
                    await client.get("http://elsewhere.test/")
            assert_idle(balanced)
