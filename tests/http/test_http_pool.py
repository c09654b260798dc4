"""Pool scheduling: the connection limit, reuse of the most recent connection, FIFO."""

from __future__ import annotations

from collections.abc import Callable

import trio
import trio.testing

from trio_pool import Client, Pool
from trio_pool.testing import Script, ServerConnection, ServerRequest, serve_h11, serve_memory


def gated(gate: trio.Event) -> Script:
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        if request.target == "/wait":
            await gate.wait()
        await conn.respond(200, body=str(conn.number).encode())

    return script


async def start_many(nursery: trio.Nursery, pool: Pool | Client, paths: list[str]) -> None:
    """Start one request per path, in order (each queued before the next starts)."""
    for path in paths:
        nursery.start_soon(pool.request, "GET", path)
        await trio.testing.wait_all_tasks_blocked()


async def test_connections_limit_and_fifo_queue() -> None:
    gate = trio.Event()
    async with serve_memory(gated(gate)) as server:
        async with Pool(server.origin, connector=server.connector, connections=2) as pool:
            async with trio.open_nursery() as nursery:
                await start_many(nursery, pool, ["/wait"] * 5)
                stats = pool.statistics()
                assert (stats.connected, stats.running, stats.queued, stats.size) == (2, 2, 3, 5)
                gate.set()
            assert server.connections == 2
            assert pool.statistics().size == 0


async def test_unlimited_connections() -> None:
    gate = trio.Event()
    async with serve_memory(gated(gate)) as server:
        async with Pool(server.origin, connector=server.connector) as pool:
            async with trio.open_nursery() as nursery:
                await start_many(nursery, pool, ["/wait"] * 12)
                assert pool.statistics().connected == 12
                gate.set()


async def test_most_recently_used_connection_is_reused() -> None:
    gate = trio.Event()
    async with serve_memory(gated(gate)) as server:
        async with Pool(server.origin, connector=server.connector) as pool:
            async with trio.open_nursery() as nursery:
                await start_many(nursery, pool, ["/wait"] * 3)
                gate.set()
            assert pool.statistics().free == 3
            bodies = {(await pool.request("GET", "/")).body for _ in range(5)}
            # Always the same one (the last released), never a round over all of them.
            assert len(bodies) == 1


async def test_read_stream_keeps_its_connection() -> None:
    async with serve_memory(gated(trio.Event())) as server:
        async with Pool(server.origin, connector=server.connector) as pool:
            for _ in range(3):
                async with pool.stream("GET", "/") as response:
                    assert await response.read() == b"0"
            assert server.connections == 1


async def test_unread_small_stream_keeps_its_connection_when_the_body_is_here() -> None:
    sent = trio.Event()

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        size = int(request.target[1:])
        await conn.send_head(200, [("content-length", str(size))])
        await trio.sleep(0.01)  # the head arrives alone; the stream is open before the body
        await conn.send_data(b"x" * size)
        await conn.send_end()
        sent.set()

    # Real TCP: a sent body is in the client's socket buffer, readable without waiting.
    async with serve_h11(script) as server, Pool(server.origin) as pool:
        for _ in range(3):
            sent = trio.Event()
            async with pool.stream("GET", "/1000") as response:
                await sent.wait()
                assert response.status == 200
        assert server.connections == 1
        async with pool.stream("GET", "/1000000") as response:  # too much to drain: closed
            await sent.wait()
        assert server.connections == 1
        assert (await pool.request("GET", "/10")).body == b"x" * 10
        assert server.connections == 2
        assert pool.statistics().size == 0


class Budget:
    """A ``ConnectionGate`` shared by several Pools (what the coming Agent provides)."""

    def __init__(self, slots: int) -> None:
        self.free = slots
        self.wakes: list[Callable[[], None]] = []

    def try_acquire(self, wake: Callable[[], None]) -> bool:
        if self.free:
            self.free -= 1
            return True
        self.wakes.append(wake)
        return False

    def release(self) -> None:
        self.free += 1
        wakes, self.wakes = self.wakes, []
        for wake in wakes:
            wake()


async def test_a_connection_gate_bounds_connections_across_pools() -> None:
    """Internal hooks for the Agent: a gate refuses a new connection (the request queues),
    ``_close_one_idle()`` frees one elsewhere, and the gate's wake opens it."""
    budget = Budget(1)
    async with serve_memory(gated(trio.Event())) as server:
        async with (
            Pool(server.origin, connector=server.connector, _gate=budget) as a,
            Pool(server.origin, connector=server.connector, _gate=budget) as b,
        ):
            assert (await a.request("GET", "/a")).status == 200
            assert (a.statistics().connected, budget.free) == (1, 0)
            assert not b._close_one_idle()  # b has none
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.request, "GET", "/b")
                await trio.testing.wait_all_tasks_blocked()
                stats = b.statistics()
                assert (stats.queued, stats.connected) == (1, 0)  # the gate said no
                b._check_invariants()
                assert a._close_one_idle()
            assert server.requests[-1].target == "/b"
            assert (a.statistics().connected, b.statistics().connected) == (0, 1)
            assert budget.free == 0
            a._check_invariants()
            b._check_invariants()
        assert budget.free == 1  # every slot came back as the connections closed
