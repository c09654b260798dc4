"""The cumulative counters of ``statistics()``: ``requests_total``, ``errors_total``,
``connects_total``, ``connect_errors_total`` — kept whether anyone listens or not, equal to
the events they count, summed by ``BalancedPool`` and ``Agent`` (pools already closed
included)."""

from __future__ import annotations

import collections

import pytest
import trio
from _helpers import assert_idle

import trio_pool
from trio_pool import Agent, BalancedPool, Client, Pool, PoolStats, RequestTrace
from trio_pool.testing import ServerConnection, ServerRequest, serve_memory


async def script(request: ServerRequest, conn: ServerConnection) -> None:
    if request.target == "/slow":
        await trio.sleep_forever()
    await conn.respond(200, body=b"ok")


def totals(stats: PoolStats) -> tuple[int, int, int, int]:
    return (
        stats.requests_total,
        stats.errors_total,
        stats.connects_total,
        stats.connect_errors_total,
    )


@pytest.mark.parametrize("listening", [False, True])
async def test_a_mix_of_successes_and_failures(
    listening: bool, autojump_clock: trio.abc.Clock
) -> None:
    events: collections.Counter[str] = collections.Counter()
    traces: list[RequestTrace] = []
    async with (
        serve_memory(script) as server,
        Pool(server.origin, connector=server.connector, headers_timeout=5) as pool,
    ):
        if listening:
            for event in ("connect", "connection_error", "disconnect"):
                pool.on(event, lambda *args, event=event: events.update([event]))
            pool.on("request_end", traces.append)
        server.refuse = True
        with pytest.raises(trio_pool.ConnectError):
            await pool.request("GET", "/")
        assert totals(pool.statistics()) == (1, 1, 0, 1)
        server.refuse = False
        for _ in range(3):
            await pool.request("GET", "/")  # one connection, reused
        assert totals(pool.statistics()) == (4, 1, 1, 1)
        with pytest.raises(trio_pool.HeadersTimeoutError):
            await pool.request("GET", "/slow")  # closes its connection
        with trio.move_on_after(1):
            await pool.request("GET", "/slow")  # cancelled: an aborted request, an error
        assert_idle(pool)
        stats = pool.statistics()
        # The gauges compare as before: the totals are not part of ==.
        assert stats == PoolStats(connected=stats.connected, free=stats.free, pending=0,
                                  queued=0, running=0, size=0)  # fmt: skip
    assert totals(stats) == (6, 3, 2, 1)
    if listening:
        assert len(traces) == stats.requests_total
        assert sum(trace.error is not None for trace in traces) == stats.errors_total
        assert events["connect"] == stats.connects_total
        assert events["connection_error"] == stats.connect_errors_total


async def test_a_client_counts_too(autojump_clock: trio.abc.Clock) -> None:
    async with (
        serve_memory(script) as server,
        Client(server.origin, connector=server.connector) as client,
    ):
        await client.request("GET", "/")
        with trio.move_on_after(1):
            await client.request("GET", "/slow")
        await client.request("GET", "/")
        assert totals(client.statistics()) == (3, 1, 2, 0)


async def test_an_agent_keeps_the_totals_of_retired_pools(autojump_clock: trio.abc.Clock) -> None:
    async with (
        serve_memory(script) as server,
        Agent(connector=server.connector, pool_idle_timeout=10) as agent,
    ):
        for _ in range(2):
            await agent.request("GET", "http://a.test/")
        await agent.request("GET", "http://b.test/")
        assert totals(agent.statistics()) == (3, 0, 2, 0)
        await trio.sleep(20)
        assert agent.origins == []  # both pools retired
        assert totals(agent.statistics()) == (3, 0, 2, 0)
        await agent.request("GET", "http://a.test/")  # a new pool for a.test
        stats = agent.statistics()
        assert totals(stats) == (4, 0, 3, 0)
        assert totals(stats.origins["http://a.test"]) == (1, 0, 1, 0)


async def test_a_balanced_pool_sums_its_upstreams_removed_ones_included(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with (
        serve_memory(script) as server,
        BalancedPool(["http://a.test", "http://b.test"], connector=server.connector) as pool,
    ):
        for _ in range(4):
            await pool.request("GET", "/")
        upstreams = [pool.get_upstream(origin) for origin in pool.upstreams]
        per_upstream = [totals(up.statistics()) for up in upstreams if up is not None]
        assert sum(requests for requests, *_ in per_upstream) == 4
        assert totals(pool.statistics()) == (4, 0, 2, 0)
        pool.remove_upstream("http://a.test")
        await trio.sleep(1)  # its Pool closes in the background
        assert pool.upstreams == ["http://b.test"]
        assert totals(pool.statistics()) == (4, 0, 2, 0)
        await pool.request("GET", "/")
        assert totals(pool.statistics()) == (5, 0, 2, 0)
