"""``Agent`` (API.md 5): one Pool per origin in the agent's own nursery, idle retirement,
``connections``/``max_connections``/``max_origins``, statistics, events and lifetimes.

Real sockets on 127.0.0.1 where sockets matter; in-memory servers behind one ``connector``
(routing by origin) where time does (``autojump_clock``)."""

from __future__ import annotations

import sys
import typing
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trio_pool
from trio_pool import (
    Agent,
    AgentStats,
    ClientDestroyedError,
    InvalidArgumentError,
    MaxOriginsReachedError,
    Pool,
    PoolStats,
    RequestOptions,
)
from trio_pool.http._origin import Origin
from trio_pool.testing import H11Server, ServerConnection, ServerRequest, serve_h11, serve_memory

IDLE = PoolStats(connected=0, free=0, pending=0, queued=0, running=0, size=0)


def assert_idle(agent: Agent) -> None:
    stats = agent.statistics()
    assert (stats.pending, stats.queued, stats.running, stats.size) == (0, 0, 0, 0), stats


async def echo(request: ServerRequest, conn: ServerConnection) -> None:
    await conn.respond(200, body=f"{conn.number} {request.method} {request.target}".encode())


class OpenCount:
    """Counts connections open at once through an agent's events."""

    def __init__(self, agent: Agent) -> None:
        self.now = self.most = 0
        self.closed: list[str] = []
        agent.on("connect", self.connected)
        agent.on("disconnect", self.disconnected)

    def connected(self, origin: str, targets: list[object]) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def disconnected(self, origin: str, targets: list[object], error: BaseException) -> None:
        self.now -= 1
        self.closed.append(origin)


def gated(gate: trio.Event) -> Callable[[ServerRequest, ServerConnection], Any]:
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        if request.target.startswith("/wait"):
            await gate.wait()
        await conn.respond(200, body=request.target.encode())

    return script


@asynccontextmanager
async def memory_origins(
    script: Callable[[ServerRequest, ServerConnection], Any], names: list[str]
) -> AsyncIterator[tuple[dict[str, H11Server], Callable[..., Any]]]:
    """In-memory servers for ``http://NAME`` each, and the connector that reaches them."""
    async with trio.open_nursery() as nursery:
        servers: dict[str, H11Server] = {}
        for name in names:
            servers[name] = await nursery.start(_serve_memory, script)

        async def connector(origin: Origin) -> trio.abc.Stream:
            return await servers[origin.host].connector(origin)

        yield servers, connector
        nursery.cancel_scope.cancel()


async def _serve_memory(
    script: Callable[[ServerRequest, ServerConnection], Any],
    *,
    task_status: trio.TaskStatus[H11Server],
) -> None:
    async with serve_memory(script) as server:
        task_status.started(server)
        await trio.sleep_forever()


# ---------------------------------------------------------------------------- the surface


def test_agents_are_final() -> None:
    for cls in (trio_pool.Agent, trio_pool.ProxyAgent, trio_pool.EnvHttpProxyAgent):
        # typing.final marks the class at run time from Python 3.11 on (mypy checks 3.10).
        assert getattr(cls, "__final__", sys.version_info < (3, 11)), cls
    assert issubclass(AgentStats, PoolStats)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"connections": -1}, "connections"),
        ({"max_connections": 0}, "max_connections"),
        ({"max_origins": 0}, "max_origins"),
        ({"pool_idle_timeout": -1}, "pool_idle_timeout"),
        ({"factory": 3}, "factory"),
        ({"keep_alive_timeout": "x"}, "keep_alive_timeout"),
        ({"nonsense": 1}, "nonsense"),
    ],
)
def test_bad_arguments_name_themselves(kwargs: dict[str, Any], word: str) -> None:
    with pytest.raises(InvalidArgumentError, match=word):
        Agent(**kwargs)


async def test_every_method_needs_an_absolute_url() -> None:
    async with serve_h11(echo) as server, Agent() as agent:
        for url in ("/path", "path", "ftp://h/x", "//127.0.0.1/x", "http:///x"):
            with pytest.raises(InvalidArgumentError, match="url"):
                await agent.request("GET", url)
            with pytest.raises(InvalidArgumentError):
                await agent.request("GET", url, headers={"a": "b"})
            with pytest.raises(InvalidArgumentError):
                async with agent.stream("GET", url):
                    pass  # pragma: no cover
            with pytest.raises(InvalidArgumentError):
                async with agent.pipeline("POST", url, body=b""):
                    pass  # pragma: no cover
            with pytest.raises(InvalidArgumentError):
                await agent.dispatch(RequestOptions("GET", url), _NullHandler())
            with pytest.raises(InvalidArgumentError):
                async with agent.upgrade(url):
                    pass  # pragma: no cover
            with pytest.raises(InvalidArgumentError):
                async with agent.connect(url):
                    pass  # pragma: no cover
        with pytest.raises(InvalidArgumentError, match="credentials"):
            await agent.request("GET", server.origin.replace("//", "//u:secret@") + "/")
        assert agent.origins == []
        assert agent.get_pool(server.origin) is None
        with pytest.raises(InvalidArgumentError, match="origin"):
            agent.get_pool("/relative")
        # Nothing was sent, and the agent still works.
        response = await agent.request("GET", f"{server.origin}/a/b?c=d#frag")
        assert response.body == b"0 GET /a/b?c=d"
        assert len(server.requests) == 1


class _NullHandler:
    def on_request_start(self, controller: object) -> None: ...
    def on_response_start(self, controller: object, *args: object) -> None: ...
    def on_response_data(self, controller: object, chunk: bytes) -> None: ...
    def on_response_end(self, controller: object, trailers: object) -> None: ...
    def on_response_error(self, controller: object, error: BaseException) -> None: ...


async def test_all_dispatcher_methods_route_by_origin() -> None:
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        if request.target == "/up":
            rest = await conn.switch_protocols(headers=[("upgrade", "x")])
            await conn.send_raw(b"hello " + rest)
            return
        await conn.respond(200, body=request.body or request.target.encode())

    async with serve_h11(script) as one, serve_h11(script) as two, Agent() as agent:
        assert (await agent.request("GET", f"{one.origin}/1")).body == b"/1"
        response = await agent.request("POST", f"{two.origin}/2", body=b"posted")
        assert response.body == b"posted"
        async with agent.stream("GET", f"{two.origin}/s?q=1") as streamed:
            assert await streamed.read() == b"/s?q=1"
        async with agent.pipeline("PUT", f"{one.origin}/p", body=[b"a", b"b"]) as piped:
            assert await piped.read() == b"ab"
        chunks: list[bytes] = []

        class Collect(_NullHandler):
            def on_response_data(self, controller: object, chunk: bytes) -> None:
                chunks.append(chunk)

        await agent.dispatch(RequestOptions("GET", f"{one.origin}/d"), Collect())
        assert b"".join(chunks) == b"/d"
        async with agent.upgrade(f"{two.origin}/up", protocol="x") as upgraded:
            await upgraded.stream.send_all(b"there")
            assert upgraded.status == 101
        assert agent.origins == [one.origin, two.origin]
        assert isinstance(agent.get_pool(one.origin), Pool)
        assert agent.get_pool(f"{one.origin}/any/path") is agent.get_pool(one.origin)
        assert [r.target for r in one.requests] == ["/1", "/p", "/d"]
        assert_idle(agent)


# ---------------------------------------------------------------------------- one Pool each


async def test_one_pool_per_origin_from_any_task_at_any_depth() -> None:
    """Pools are entered by the agent's tasks: a request from a nested nursery that ends
    first still leaves a working Pool behind (a lazy ``async with`` in the caller's task
    would corrupt Trio's nursery stack here)."""
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(serve_h11(echo)) for _ in range(4)]
        agent = await stack.enter_async_context(Agent())
        results: list[bytes] = []

        async def deep(level: int, origin: str) -> None:
            if level:
                async with trio.open_nursery() as inner:
                    inner.start_soon(deep, level - 1, origin)
                return
            results.append((await agent.request("GET", f"{origin}/x")).body)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for server in servers:
                    for depth in range(3):
                        nursery.start_soon(deep, depth, server.origin)
        assert len(results) == 12
        assert set(agent.origins) == {server.origin for server in servers}
        pools = {agent.get_pool(server.origin) for server in servers}
        assert len(pools) == 4
        # The tasks that created them are gone; the Pools serve on.
        for server in servers:
            assert (await agent.request("GET", f"{server.origin}/y")).status == 200
        assert_idle(agent)


class SlowPool(Pool):  # type: ignore[misc]  # Pool is final; a test-only slow entry
    """A Pool whose block opens only once ``gate`` is set (to hold a request in "waiting
    for its pool")."""

    gate = trio.Event()
    entered = 0

    async def __aenter__(self) -> SlowPool:
        await SlowPool.gate.wait()
        SlowPool.entered += 1
        await super().__aenter__()
        return self


async def test_racing_tasks_get_one_pool_and_cancelling_the_wait_leaves_all_idle() -> None:
    SlowPool.gate = trio.Event()
    SlowPool.entered = 0
    async with serve_h11(echo) as server, Agent(factory=SlowPool) as agent:
        url = f"{server.origin}/r"
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(agent.request, "GET", url)
                await trio.testing.wait_all_tasks_blocked()
                assert agent.origins == [server.origin]
                stats = agent.statistics()
                assert (stats.queued, stats.pending, stats.size) == (3, 3, 3)
                nursery.cancel_scope.cancel()  # cancelled while waiting for the pool
            assert_idle(agent)
            SlowPool.gate.set()
            await trio.testing.wait_all_tasks_blocked()
            assert SlowPool.entered == 1  # one Pool for the three
            assert agent.statistics() == AgentStats(
                connected=0, free=0, pending=0, queued=0, running=0, size=0,
                origins={server.origin: IDLE},
            )  # fmt: skip
            assert (await agent.request("GET", url)).body == b"0 GET /r"
        assert server.connections == 1


async def test_dispatch_cancelled_while_its_pool_is_made_tells_the_handler() -> None:
    SlowPool.gate = trio.Event()
    calls: list[str] = []

    class Record(_NullHandler):
        def on_request_start(self, controller: object) -> None:
            calls.append("start")

        def on_response_error(self, controller: object, error: BaseException) -> None:
            calls.append(type(error).__name__)

    async with serve_h11(echo) as server, Agent(factory=SlowPool) as agent:
        with trio.move_on_after(0.05):
            await agent.dispatch(RequestOptions("GET", f"{server.origin}/"), Record())
        assert calls == ["start", "RequestAbortedError"]
        assert_idle(agent)
        SlowPool.gate.set()
        assert (await agent.request("GET", f"{server.origin}/")).status == 200


async def test_pools_retire_after_pool_idle_timeout(autojump_clock: trio.abc.Clock) -> None:
    async with memory_origins(echo, ["a", "b"]) as (_, connector):
        async with Agent(connector=connector, pool_idle_timeout=30) as agent:
            await agent.request("GET", "http://a/1")
            first = agent.get_pool("http://a")
            await trio.sleep(20)
            await agent.request("GET", "http://b/1")
            assert agent.origins == ["http://a", "http://b"]
            await trio.sleep(11)  # a: 31 s idle; b: 11 s
            assert agent.origins == ["http://b"]
            assert first is not None
            assert first.closed
            async with agent.stream("GET", "http://b/held"):
                await trio.sleep(100)  # a request in it keeps it alive
                assert agent.origins == ["http://b"]
            await trio.sleep(29)
            assert agent.origins == ["http://b"]
            await trio.sleep(2)
            assert agent.origins == []
            # A request after retirement makes a new Pool.
            await agent.request("GET", "http://a/2")
            assert agent.get_pool("http://a") not in (None, first)
            assert agent.statistics().origins.keys() == {"http://a"}


async def test_pool_idle_timeout_none_never_retires(autojump_clock: trio.abc.Clock) -> None:
    async with memory_origins(echo, ["a"]) as (_, connector):
        async with Agent(connector=connector, pool_idle_timeout=None) as agent:
            await agent.request("GET", "http://a/1")
            await trio.sleep(10_000)
            assert agent.origins == ["http://a"]


# ---------------------------------------------------------------------------- budgets


async def test_connections_is_per_origin() -> None:
    gate = trio.Event()
    async with serve_h11(gated(gate)) as one, serve_h11(gated(gate)) as two:
        async with Agent(connections=1) as agent:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for server in (one, two, one, two, one):
                        nursery.start_soon(agent.request, "GET", f"{server.origin}/wait")
                    await trio.testing.wait_all_tasks_blocked()
                    stats = agent.statistics()
                    assert stats.origins[one.origin].queued == 2
                    assert stats.origins[two.origin].queued == 1
                    assert (stats.connected, stats.running, stats.queued) == (2, 2, 3)
                    gate.set()
    assert (one.connections, two.connections) == (1, 1)


async def test_max_connections_is_fifo_across_origins_and_evicts_idle_ones() -> None:
    """A budget of 2 across three origins: the third origin waits, in order, and an idle
    connection elsewhere is closed for it; never more than 2 sockets open."""
    gate = trio.Event()
    order: list[str] = []

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        if request.target.startswith("/wait"):
            await gate.wait()
        order.append(request.target)
        await conn.respond(200)

    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(serve_h11(script)) for _ in range(3)]
        a, b, c = (server.origin for server in servers)
        agent = await stack.enter_async_context(Agent(max_connections=2))
        count = OpenCount(agent)
        disconnects = count.closed
        with trio.fail_after(10):
            await agent.request("GET", f"{a}/warm")  # a: one idle connection
            async with trio.open_nursery() as nursery:
                nursery.start_soon(agent.request, "GET", f"{b}/wait-b")  # the 2nd slot
                await trio.testing.wait_all_tasks_blocked()
                # Spent: c must wait, and a's idle connection is closed to make room.
                nursery.start_soon(agent.request, "GET", f"{c}/c1")
                await trio.testing.wait_all_tasks_blocked()
                assert disconnects == [a]
                assert order == ["/warm", "/c1"]
                # Now b and c hold both slots (b busy, c idle): two more waiters for a
                # and b queue in order; c's idle connection makes room for the first.
                nursery.start_soon(agent.request, "GET", f"{a}/wait-a")
                await trio.testing.wait_all_tasks_blocked()
                assert disconnects == [a, c]
                nursery.start_soon(agent.request, "GET", f"{c}/c2")
                await trio.testing.wait_all_tasks_blocked()
                stats = agent.statistics()
                assert stats.connected == 2
                assert stats.origins[c].pending == 1  # waits for the budget
                gate.set()
        assert count.most == 2
        assert order[-1] == "/c2"
        assert_idle(agent)
        assert agent.statistics().connected <= 2


@pytest.mark.parametrize("seed", range(5))
async def test_a_budget_under_load_never_stalls(seed: int) -> None:
    """Many requests to a few origins through a small budget all finish (a waiting request
    of an origin whose own connections went idle is not left behind), and never more
    connections are open than the budget. Trio's scheduling order varies between runs."""

    async def slow(request: ServerRequest, conn: ServerConnection) -> None:
        await trio.sleep(0.001 * (seed + 1))
        await conn.respond(200)

    async with serve_h11(slow) as a, serve_h11(slow) as b, serve_h11(slow) as c:
        async with Agent(max_connections=2) as agent:
            count = OpenCount(agent)
            done = 0

            async def one(url: str) -> None:
                nonlocal done
                assert (await agent.request("GET", url)).status == 200
                done += 1

            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    for index in range(30):
                        server = (a, b, c)[(index * (seed + 1)) % 3]
                        nursery.start_soon(one, f"{server.origin}/{index}")
            assert done == 30
            assert count.most <= 2
            assert_idle(agent)


async def test_budget_waiters_are_served_in_order_across_origins() -> None:
    gate = trio.Event()
    order: list[str] = []

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        order.append(request.target)
        if request.target == "/wait":
            await gate.wait()
        await conn.respond(200)

    async with serve_h11(script) as a, serve_h11(script) as b, serve_h11(script) as c:
        async with Agent(max_connections=1) as agent:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for url in (f"{a.origin}/wait", f"{b.origin}/b1", f"{c.origin}/c1"):
                        nursery.start_soon(agent.request, "GET", url)
                        await trio.testing.wait_all_tasks_blocked()
                    nursery.start_soon(agent.request, "GET", f"{b.origin}/b2")
                    await trio.testing.wait_all_tasks_blocked()
                    assert order == ["/wait"]
                    assert agent.statistics().pending == 3
                    gate.set()
            assert order == ["/wait", "/b1", "/c1", "/b2"]
            assert agent.statistics().connected == 1
            assert_idle(agent)


async def test_cancelled_while_waiting_for_the_budget() -> None:
    gate = trio.Event()
    async with serve_h11(gated(gate)) as one, serve_h11(gated(gate)) as two:
        async with Agent(max_connections=1) as agent:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(agent.request, "GET", f"{one.origin}/wait")
                    await trio.testing.wait_all_tasks_blocked()
                    with trio.move_on_after(0.05) as scope:
                        await agent.request("GET", f"{two.origin}/x")
                    assert scope.cancelled_caught
                    await trio.testing.wait_all_tasks_blocked()
                    stats = agent.statistics()
                    assert stats.origins[two.origin] == IDLE
                    assert (stats.pending, stats.running, stats.connected) == (0, 1, 1)
                    gate.set()
                assert_idle(agent)
                assert (await agent.request("GET", f"{two.origin}/y")).body == b"/y"
            assert two.connections == 1  # the abandoned attempt never connected
            assert agent.statistics().connected == 1


async def test_a_failed_connect_gives_its_budget_slot_back() -> None:
    async with serve_h11(echo) as server, Agent(max_connections=1) as agent:
        for _ in range(3):
            with pytest.raises(trio_pool.ConnectError):
                await agent.request("GET", "http://127.0.0.1:1/")
        assert (await agent.request("GET", f"{server.origin}/ok")).status == 200
        assert agent.statistics().connected == 1


async def test_connect_timeout_counts_after_the_wait_for_the_budget(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The wait for a slot is a queue, not part of connecting: a request that waits longer
    than ``connect_timeout`` for the budget still connects."""
    gate = trio.Event()
    async with memory_origins(gated(gate), ["a", "b"]) as (servers, connector):
        async with Agent(connector=connector, max_connections=1, connect_timeout=5) as agent:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(agent.request, "GET", "http://a/wait")
                await trio.testing.wait_all_tasks_blocked()

                async def late() -> None:
                    assert (await agent.request("GET", "http://b/late")).body == b"/late"

                nursery.start_soon(late)
                await trio.sleep(60)
                gate.set()
            await agent.request("GET", "http://b/last", reset=True)  # closes b's connection
            servers["b"].hang = True  # now connecting itself takes forever
            with pytest.raises(trio_pool.ConnectTimeoutError):
                await agent.request("GET", "http://b/x")
            assert_idle(agent)


async def test_max_origins() -> None:
    async with serve_h11(echo) as one, serve_h11(echo) as two, serve_h11(echo) as three:
        async with Agent(max_origins=2, pool_idle_timeout=None) as agent:
            await agent.request("GET", f"{one.origin}/")
            await agent.request("GET", f"{two.origin}/")
            with pytest.raises(MaxOriginsReachedError, match="max_origins=2"):
                await agent.request("GET", f"{three.origin}/")
            assert agent.origins == [one.origin, two.origin]
            await agent.request("GET", f"{one.origin}/again")  # the others still work
            assert_idle(agent)


async def test_max_origins_frees_up_when_a_pool_retires(autojump_clock: trio.abc.Clock) -> None:
    async with memory_origins(echo, ["a", "b"]) as (_, connector):
        async with Agent(connector=connector, max_origins=1, pool_idle_timeout=5) as agent:
            await agent.request("GET", "http://a/")
            with pytest.raises(MaxOriginsReachedError):
                await agent.request("GET", "http://b/")
            await trio.sleep(6)
            assert (await agent.request("GET", "http://b/")).status == 200


# ---------------------------------------------------------------------------- observing


async def test_events_carry_agent_pool_client() -> None:
    async with serve_h11(echo) as server, Agent(keep_alive_timeout=1) as agent:
        seen: list[tuple[str, list[object]]] = []
        for event in ("connect", "disconnect", "drain", "connection_error"):
            agent.on(event, lambda origin, targets, *_, e=event: seen.append((e, targets)))
        await agent.request("GET", f"{server.origin}/")
        pool = agent.get_pool(server.origin)
        event, targets = seen[0]
        assert event == "connect"
        assert targets[:2] == [agent, pool]
        assert isinstance(targets[2], trio_pool.Client)
        assert len(targets) == 3
    async with Agent() as agent:
        errors: list[tuple[str, list[object], object]] = []
        agent.on("connection_error", lambda o, t, e: errors.append((o, t, e)))
        with pytest.raises(trio_pool.ConnectError):
            await agent.request("GET", "http://127.0.0.1:1/")
        assert errors[0][0] == "http://127.0.0.1:1"
        assert errors[0][1][0] is agent


async def test_statistics_sum_the_pools() -> None:
    gate = trio.Event()
    async with serve_h11(gated(gate)) as one, serve_h11(gated(gate)) as two:
        async with Agent() as agent:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(agent.request, "GET", f"{one.origin}/wait")
                nursery.start_soon(agent.request, "GET", f"{two.origin}/wait")
                nursery.start_soon(agent.request, "GET", f"{two.origin}/wait")
                await trio.testing.wait_all_tasks_blocked()
                stats = agent.statistics()
                assert isinstance(stats, AgentStats)
                assert (stats.connected, stats.running, stats.size) == (3, 3, 3)
                assert stats.origins[one.origin].running == 1
                assert stats.origins[two.origin].running == 2
                assert "running=3" in repr(agent)
                assert "origins=2" in repr(agent)
                gate.set()
            assert_idle(agent)


# ---------------------------------------------------------------------------- lifetimes


async def test_close_lets_running_requests_finish() -> None:
    gate = trio.Event()
    async with serve_h11(gated(gate)) as server:
        agent = Agent()
        results: list[int] = []
        async with agent:
            async with trio.open_nursery() as nursery:

                async def run() -> None:
                    results.append((await agent.request("GET", f"{server.origin}/wait")).status)

                nursery.start_soon(run)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(agent.close)
                await trio.testing.wait_all_tasks_blocked()
                assert agent.closed
                with pytest.raises(trio_pool.ClientClosedError):
                    await agent.request("GET", f"{server.origin}/late")
                gate.set()
        assert results == [200]
        assert agent.origins == []
        assert agent.statistics() == AgentStats(0, 0, 0, 0, 0, 0, origins={})


async def test_destroy_fails_running_requests_across_pools() -> None:
    gate = trio.Event()
    async with serve_h11(gated(gate)) as one, serve_h11(gated(gate)) as two:
        async with Agent() as agent:
            errors: list[BaseException] = []

            async def run(url: str) -> None:
                try:
                    await agent.request("GET", url)
                except trio_pool.TrioPoolError as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, f"{one.origin}/wait")
                nursery.start_soon(run, f"{two.origin}/wait")
                await trio.testing.wait_all_tasks_blocked()
                await agent.destroy()
            assert len(errors) == 2
            assert all(isinstance(error, ClientDestroyedError) for error in errors)
            assert agent.destroyed
            with pytest.raises(ClientDestroyedError):
                await agent.request("GET", f"{one.origin}/")
            with pytest.raises(ClientDestroyedError):
                await agent.close()
            assert agent.statistics().connected == 0


async def test_an_error_in_the_block_leaves_as_itself_and_destroys() -> None:
    gate = trio.Event()
    errors: list[BaseException] = []
    async with serve_h11(gated(gate)) as server, trio.open_nursery() as nursery:
        agent = Agent()

        async def run() -> None:
            try:
                await agent.request("GET", f"{server.origin}/wait")
            except trio_pool.TrioPoolError as exc:
                errors.append(exc)

        with pytest.raises(KeyError, match="mine"):
            async with agent:
                nursery.start_soon(run)
                await trio.testing.wait_all_tasks_blocked()
                raise KeyError("mine")
        assert agent.destroyed
        assert agent.statistics().connected == 0
    assert len(errors) == 1
    assert isinstance(errors[0], ClientDestroyedError)


async def test_cancelling_the_block_destroys_the_tree() -> None:
    gate = trio.Event()
    async with serve_h11(gated(gate)) as server:
        agent = Agent()
        with trio.move_on_after(0.2):
            async with agent:
                await agent.request("GET", f"{server.origin}/wait")
        assert agent.destroyed
        assert agent.origins == []


async def test_use_outside_the_block_is_refused() -> None:
    agent = Agent()
    assert repr(agent) == "<Agent origins=0 new connected=0 free=0 queued=0 running=0>"
    with pytest.raises(trio_pool.TrioPoolError, match="async with"):
        await agent.request("GET", "http://127.0.0.1:1/")
    async with agent:
        pass
    with pytest.raises(trio_pool.ClientClosedError):
        async with agent:
            pass  # pragma: no cover


async def test_a_factory_that_returns_no_pool_is_refused() -> None:
    not_a_pool: Any = lambda origin, **kw: object()  # noqa: E731
    async with serve_h11(echo) as server, Agent(factory=not_a_pool) as agent:
        with pytest.raises(InvalidArgumentError, match="factory"):
            await agent.request("GET", f"{server.origin}/")
        assert agent.origins == []


class BrokenPool(Pool):  # type: ignore[misc]  # Pool is final; a test of a broken factory
    async def __aenter__(self) -> BrokenPool:
        raise RuntimeError("cannot enter")


async def test_a_pool_that_cannot_be_entered_fails_its_requests(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve_h11(echo) as server, Agent(factory=BrokenPool) as agent:
        with pytest.raises(InvalidArgumentError, match="cannot enter"):
            await agent.request("GET", f"{server.origin}/")
        assert agent.origins == []
        assert_idle(agent)
    assert "could not be entered" in caplog.text


async def test_dispatch_needs_request_options() -> None:
    async with Agent() as agent:
        with pytest.raises(InvalidArgumentError, match="options"):
            await agent.dispatch("GET /", _NullHandler())  # type: ignore[arg-type]


async def test_factory_gets_the_origin_and_options() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def factory(origin: str, **options: Any) -> Pool:
        calls.append((origin, options))
        return Pool(origin, **options)

    async with serve_h11(echo) as server:
        async with Agent(
            factory=factory, connections=3, keep_alive_timeout=9, client_ttl=30
        ) as agent:
            await agent.request("GET", f"{server.origin}/")
    expected = {"keep_alive_timeout": 9, "connections": 3, "client_ttl": 30.0}
    assert calls == [(server.origin, expected)]


def test_agent_type_checks_as_a_dispatcher() -> None:
    assert issubclass(Agent, trio_pool.Dispatcher)
    assert typing.get_type_hints(Agent.statistics)["return"] is AgentStats
