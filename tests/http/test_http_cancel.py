"""Cancellation at every await point of a request: afterwards ``statistics()`` is back to
idle and the next request succeeds (API.md 0; httpcore#1093/#830, aiohttp#9670, httpx#2139)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from _helpers import assert_idle

from trio_pool import Client, Pool
from trio_pool.testing import H11Server, ServerConnection, ServerRequest, serve_memory


async def script(request: ServerRequest, conn: ServerConnection) -> None:
    """``/`` answers; ``/never`` never does; ``/half`` sends half a body and stalls."""
    if request.target == "/never":
        await trio.sleep_forever()
    if request.target == "/half":
        await conn.send_head(200, [("content-length", "10")])
        await conn.send_data(b"12345")
        await trio.sleep_forever()
    await conn.respond(200, body=str(conn.number).encode())


@pytest.fixture
async def server() -> AsyncIterator[H11Server]:
    async with serve_memory(script) as server:
        yield server


@pytest.fixture(params=["client", "pool"])
async def dispatcher(
    request: pytest.FixtureRequest, server: H11Server
) -> AsyncIterator[Client | Pool]:
    kind = Client if request.param == "client" else Pool
    async with kind(server.origin, connector=server.connector) as d:
        yield d


async def test_cancel_while_waiting_for_headers(
    autojump_clock: trio.testing.MockClock, dispatcher: Client | Pool
) -> None:
    with trio.move_on_after(5):
        await dispatcher.request("GET", "/never")
    assert_idle(dispatcher)
    assert (await dispatcher.request("GET", "/")).status == 200


async def test_cancel_while_reading_the_body(
    autojump_clock: trio.testing.MockClock, dispatcher: Client | Pool
) -> None:
    with trio.move_on_after(5):
        await dispatcher.request("GET", "/half")
    assert_idle(dispatcher)
    with trio.move_on_after(5):
        async with dispatcher.stream("GET", "/half") as response:
            await response.read()
    assert_idle(dispatcher)
    again = await dispatcher.request("GET", "/")
    assert again.body == b"2"  # the two cut connections were closed, not reused


async def test_cancel_while_writing_the_body(
    autojump_clock: trio.testing.MockClock, dispatcher: Client | Pool
) -> None:
    async def slow_body() -> AsyncIterator[bytes]:
        yield b"first"
        await trio.sleep_forever()

    with trio.move_on_after(5):
        await dispatcher.request("POST", "/", body=slow_body())
    assert_idle(dispatcher)
    assert (await dispatcher.request("GET", "/")).body == b"1"


async def test_cancel_while_connecting_leaves_the_connection_to_the_pool(
    autojump_clock: trio.testing.MockClock, dispatcher: Client | Pool, server: H11Server
) -> None:
    server.connect_delay = 5
    with trio.move_on_after(1):
        await dispatcher.request("GET", "/")
    assert_idle(dispatcher)
    await trio.sleep(10)
    stats = dispatcher.statistics()
    assert (stats.connected, stats.free) == (1, 1)  # finished connecting, kept, idle
    assert (await dispatcher.request("GET", "/")).body == b"0"
    assert server.connections == 1


async def test_cancel_while_queued(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_memory(script) as server:
        async with Pool(server.origin, connector=server.connector, connections=1) as pool:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool.request, "GET", "/never")
                await trio.testing.wait_all_tasks_blocked()
                with trio.move_on_after(1):
                    await pool.request("GET", "/")
                stats = pool.statistics()
                assert (stats.queued, stats.running, stats.size) == (0, 1, 1)
                nursery.cancel_scope.cancel()
            assert_idle(pool)
            assert (await pool.request("GET", "/")).status == 200


async def test_cancelled_at_the_moment_of_hand_off_passes_it_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def answer(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, body=request.target.encode())

    async with serve_memory(answer) as server:
        async with Pool(server.origin, connector=server.connector, connections=1) as pool:
            results: list[bytes] = []

            async def run(path: str, scope: trio.CancelScope) -> None:
                with scope:
                    results.append((await pool.request("GET", path)).body)

            victim = trio.CancelScope()
            async with trio.open_nursery() as nursery:
                async with pool.stream("GET", "/first") as first:
                    nursery.start_soon(run, "/victim", victim)
                    await trio.testing.wait_all_tasks_blocked()
                    nursery.start_soon(run, "/third", trio.CancelScope())
                    await trio.testing.wait_all_tasks_blocked()
                    assert pool.statistics().queued == 2
                    assert await first.read() == b"/first"
                    # Reading the end gave the connection to /victim (no checkpoint since):
                    # cancel it in that same instant.
                    assert pool.statistics().queued == 1
                    victim.cancel()
            assert results == [b"/third"]
            assert_idle(pool)
            assert [r.target for r in server.requests] == ["/first", "/third"]
            assert server.connections == 1  # the lease went on, unspoiled


async def test_cancel_with_everything_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_memory(script) as server:
        async with Pool(server.origin, connector=server.connector, connections=3) as pool:
            with trio.move_on_after(5):
                async with trio.open_nursery() as nursery:
                    for path in ["/never", "/half", "/", "/never", "/half", "/never"]:
                        nursery.start_soon(pool.request, "GET", path)
            assert_idle(pool)
            assert (await pool.request("GET", "/")).status == 200


async def test_unread_streams_never_exhaust_the_pool(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_memory(script) as server:
        async with Pool(server.origin, connector=server.connector, connections=2) as pool:
            for _ in range(10):
                async with pool.stream("GET", "/half") as response:
                    assert response.status == 200
                assert_idle(pool)
            with trio.fail_after(1):
                assert (await pool.request("GET", "/")).status == 200
