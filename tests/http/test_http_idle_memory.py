"""What an idle keep-alive connection keeps (issue #16: at most 6 KiB of Python objects and
one file descriptor): no ``Client`` unless an event of the connection is heard, not the last
request or response head, and one cancel scope; ``destroy()`` still ends a connection task
wherever it is. Real ``Pool`` over loopback TCP (``serve_h11``) unless a connector is the
point."""

from __future__ import annotations

import gc
import os
import tracemalloc

import trio
import trio.testing
from _helpers import assert_idle

import trio_pool
from trio_pool import Client, Pool
from trio_pool.testing import ServerConnection, ServerRequest, serve_h11

TARGET = 6 * 1024  # bytes per idle connection (issue #16)
# Forty response fields and an 8 KiB request body: an idle connection that kept its last
# response head or request would be far over TARGET.
FIELDS = [(f"x-field-{i}", "v" * 40) for i in range(40)]
BODY_SIZE = 8192
# Allocations of the in-process server (its handlers' tasks are spawned by
# trio.serve_listeners, its state lives in trio_pool.testing): not the client's.
NOT_THE_CLIENT = [
    tracemalloc.Filter(
        False, f"*{os.sep}trio{os.sep}_highlevel_serve_listeners.py", all_frames=True
    ),
    tracemalloc.Filter(False, f"*{os.sep}trio_pool{os.sep}testing{os.sep}*", all_frames=True),
]


async def script(request: ServerRequest, conn: ServerConnection) -> None:
    await conn.respond(200, headers=FIELDS, body=b"ok")


async def burst(pool: Pool, count: int) -> None:
    """``count`` requests at once: none finds an idle connection, so each opens one."""

    async def one() -> None:
        response = await pool.request("POST", "/", body=bytes(BODY_SIZE))
        assert response.status == 200

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)


def clients() -> int:
    """``Client`` objects alive in the process."""
    gc.collect()
    return sum(isinstance(obj, Client) for obj in gc.get_objects())


def traced_kept() -> int:
    """Bytes still allocated since tracemalloc started, but the in-process server's; tracing
    stops."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return sum(stat.size for stat in snapshot.filter_traces(NOT_THE_CLIENT).statistics("filename"))


async def test_an_idle_connection_costs_at_most_6_kib() -> None:
    small, large = 4, 28
    # Tracing slows the burst down: no connection may expire meanwhile.
    async with serve_h11(script) as server, Pool(server.origin, keep_alive_timeout=600) as pool:
        with trio.fail_after(50):  # tracing every allocation of both sides is slow
            await burst(pool, small)  # imports and caches: before tracing starts
            # Deep enough to see a frame of the server in each of its allocations (32 is not).
            tracemalloc.start(64)
            try:
                await burst(pool, large)
            finally:
                kept = traced_kept()
            assert pool.statistics().connected == large
        assert_idle(pool, all_free=True)
    per_connection = kept / (large - small)
    assert per_connection <= TARGET, f"{per_connection:.0f} B per idle connection"


async def test_a_pool_makes_no_client_for_a_connection_nobody_hears() -> None:
    heard: list[tuple[str, list[object]]] = []
    async with serve_h11(script) as server:
        made = clients()
        pool = Pool(server.origin)
        async with pool:
            with trio.fail_after(10):
                await burst(pool, 3)
            assert pool.statistics().connected == 3
            assert clients() == made
            # Heard from now on: each connection's Client is made once and kept.
            pool.on("drain", lambda origin, targets: heard.append(("drain", targets)))
            pool.on("disconnect", lambda origin, targets, error: heard.append(("bye", targets)))
            assert clients() == made
            await pool.close()
    byes = [targets for event, targets in heard if event == "bye"]
    assert len(byes) == 3
    for targets in byes:
        assert len(targets) == 2
        assert targets[0] is pool
        assert isinstance(targets[1], Client)
    assert len({id(targets[1]) for targets in byes}) == 3


async def test_a_connection_names_one_client_in_all_its_events() -> None:
    events: list[tuple[str, list[object]]] = []
    async with serve_h11(script) as server, Pool(server.origin, connections=1) as pool:
        for name in ("connect", "disconnect"):
            pool.on(name, lambda origin, targets, *_, name=name: events.append((name, targets)))
        with trio.fail_after(10):
            await burst(pool, 2)
            await pool.close()
    assert [name for name, _ in events] == ["connect", "disconnect"]
    (_, first), (_, last) = events
    assert first[0] is pool
    assert isinstance(first[1], Client)
    assert last == first


async def test_destroy_ends_idle_and_reading_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The connected task's one cancel scope is its sleep's: destroy() wakes it, whether the
    # connection is idle or its task watches a read's deadline.
    answered = trio.Event()

    async def stalls(request: ServerRequest, conn: ServerConnection) -> None:
        if request.target == "/stall":
            answered.set()
            await trio.sleep_forever()
        await conn.respond(200)

    errors: list[BaseException] = []
    async with serve_h11(stalls) as server, Pool(server.origin) as pool:
        pool.on("disconnect", lambda origin, targets, error: errors.append(error))
        with trio.fail_after(10):
            await burst_get(pool, 2, "/")
            async with trio.open_nursery() as nursery:

                async def stalled() -> None:
                    try:
                        await pool.request("GET", "/stall")
                    except trio_pool.ClientDestroyedError:
                        errors.append(trio_pool.ClientDestroyedError())

                nursery.start_soon(stalled)
                await answered.wait()
                await trio.testing.wait_all_tasks_blocked()
                assert pool.statistics().connected == 2
                await pool.destroy()
        assert_idle(pool)
        assert pool.statistics().connected == 0
    assert len(errors) == 3  # two disconnects and the stalled request's error


async def burst_get(pool: Pool, count: int, path: str) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(pool.request, "GET", path)


async def test_destroy_interrupts_a_connect(autojump_clock: trio.testing.MockClock) -> None:
    connecting = trio.Event()

    async def never(origin: trio_pool.Origin) -> trio.abc.Stream:
        connecting.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    outcomes: list[BaseException] = []
    async with Pool("http://example.invalid", connector=never, connect_timeout=None) as pool:
        async with trio.open_nursery() as nursery:

            async def request() -> None:
                try:
                    await pool.request("GET", "/")
                except trio_pool.TrioPoolError as exc:
                    outcomes.append(exc)

            nursery.start_soon(request)
            await connecting.wait()
            with trio.fail_after(1):
                await pool.destroy()
        assert_idle(pool)
        assert pool.statistics().connected == 0
    assert [type(exc) for exc in outcomes] == [trio_pool.ClientDestroyedError]


async def test_an_agent_makes_no_client_unless_its_own_listener_hears() -> None:
    # The agent listens to its pools (its connection budget, its own events) through relays,
    # which need no Client; its max_connections budget is still given back on disconnect.
    heard: list[list[object]] = []
    async with serve_h11(script) as server:
        made = clients()
        agent = trio_pool.Agent(max_connections=2)
        async with agent:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for _ in range(4):
                        nursery.start_soon(agent.request, "GET", f"{server.origin}/")
                assert agent.statistics().connected == 2
                assert clients() == made
                agent.on("disconnect", lambda origin, targets, error: heard.append(targets))
                await agent.close()
    assert len(heard) == 2
    for targets in heard:
        assert targets[0] is agent
        assert isinstance(targets[1], Pool)
        assert isinstance(targets[2], Client)
        assert len(targets) == 3
