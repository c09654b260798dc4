"""``repr()`` of every public object says what it is and its state, and never shows a
credential or a whole body."""

from __future__ import annotations

import trio
import trio.testing

from trio_pool import (
    Backoff,
    BalancedPool,
    Client,
    Cluster,
    Headers,
    Pool,
    PoolStats,
    RequestOptions,
    ResourcePool,
    ResourcePoolStats,
)
from trio_pool.testing import ServerConnection, ServerRequest, serve_memory


async def hello(request: ServerRequest, conn: ServerConnection) -> None:
    if request.target == "/wait":
        await trio.sleep(10)
    await conn.respond(200, [("set-cookie", "id=SECRET")], body=b"x" * 5000)


async def test_dispatchers_show_target_state_and_counts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_memory(hello) as server:
        client = Client(server.origin, connector=server.connector)
        assert repr(client) == (
            "<Client http://testserver new connected=0 free=0 queued=0 running=0>"
        )
        async with client:
            await client.request("GET", "/")
            assert repr(client) == (
                "<Client http://testserver open connected=1 free=1 queued=0 running=0>"
            )
        assert repr(client).startswith("<Client http://testserver closed connected=0 ")

        pool = Pool(server.origin, connector=server.connector, connections=2)
        async with pool, trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(pool.request, "GET", "/wait")
            await trio.testing.wait_all_tasks_blocked()
            assert repr(pool) == (
                "<Pool http://testserver open connected=2 free=0 queued=1 running=2>"
            )
            nursery.start_soon(pool.close)
            await trio.testing.wait_all_tasks_blocked()
            assert repr(pool).startswith("<Pool http://testserver closing connected=2 ")
        assert repr(pool).startswith("<Pool http://testserver closed connected=0 ")

        upstreams = [server.origin, "http://other.test:8080"]
        balanced = BalancedPool(upstreams, connector=server.connector)
        shown = "upstreams=['http://testserver', 'http://other.test:8080']"
        assert repr(balanced).startswith(f"<BalancedPool {shown} new connected=0 ")
        async with balanced:
            await balanced.request("GET", "/")
            assert repr(balanced) == (
                f"<BalancedPool {shown} open connected=1 free=1 queued=0 running=0>"
            )
            await balanced.destroy()
            # A destroyed BalancedPool has dropped its upstreams.
            assert repr(balanced).startswith("<BalancedPool upstreams=[] destroyed ")


async def test_responses_show_status_and_headers_but_no_body() -> None:
    async with (
        serve_memory(hello) as server,
        Pool(server.origin, connector=server.connector) as pool,
    ):
        response = await pool.request("GET", "/")
        assert repr(response) == (
            "Response(status=200, reason='', http_version='1.1', headers=Headers(["
            "('set-cookie', '<redacted>'), ('content-length', '5000')]), "
            "trailers=Headers([]), body=<5000 bytes>)"
        )
        async with pool.stream("GET", "/") as streamed:
            assert repr(streamed) == (
                "StreamResponse(status=200, reason='', http_version='1.1', headers=Headers(["
                "('set-cookie', '<redacted>'), ('content-length', '5000')]))"
            )


def test_value_objects() -> None:
    headers = Headers([("cookie", "SECRET"), ("x-id", "7")])
    assert repr(headers) == "Headers([('cookie', '<redacted>'), ('x-id', '7')])"
    options = RequestOptions(
        "POST", "/login", headers={"Authorization": "Basic SECRET"}, body="user=a&pw=SECRET"
    )
    assert repr(options) == (
        "RequestOptions(method='POST', path='/login', headers={'Authorization': '<redacted>'},"
        " body=<16 characters>, query=None, idempotent=None, reset=False, capability=None,"
        " json=None, attempt=1)"
    )
    assert repr(PoolStats(1, 2, 3, 4, 5, 8, requests_total=9, errors_total=1)) == (
        "PoolStats(connected=1, free=2, pending=3, queued=4, running=5, size=8,"
        " requests_total=9, errors_total=1, connects_total=0, connect_errors_total=0)"
    )
    stats = ResourcePoolStats(0, 4, 1, 1, 0, None, True)
    assert repr(stats) == (
        "ResourcePoolStats(min=0, max=4, allocated=1, available=1, queued=0,"
        " max_requests=None, live=True, acquires_total=0, request_timeouts_total=0,"
        " allocation_errors_total=0, ping_failures_total=0, leaks_total=0,"
        " reset_failures_total=0)"
    )
    assert repr(Backoff(min=0.5, max=8.0)) == "Backoff(min=0.5, max=8.0)"


async def test_resource_pool_and_cluster() -> None:
    async def acquire() -> object:
        return object()

    async def dispose(resource: object) -> None:
        pass

    pool: ResourcePool[object] = ResourcePool(acquire, dispose, max=3, name="db")
    assert repr(pool) == "<ResourcePool 'db' new allocated=0/3 idle=0 queued=0>"
    async with pool:
        async with pool.acquire():
            assert repr(pool) == "<ResourcePool 'db' open allocated=1/3 idle=0 queued=0>"
        assert repr(pool) == "<ResourcePool 'db' open allocated=1/3 idle=1 queued=0>"
        cluster = Cluster([pool])
        assert repr(cluster) == "<Cluster of 1 pools>"
        await cluster.end()
        assert repr(cluster) == "<Cluster of 1 pools (ended)>"
