"""Chaos soak of the HTTP side: thousands of requests through ``Pool`` and ``BalancedPool``
against servers that close before responding, close mid-body, send garbage, stall, answer
slowly or refuse connections, while callers cancel at random points (API.md 0 and 1.6).

After every run: no hang, only ``TrioPoolError`` subclasses reached the callers, every
successful body was the request's own, no non-idempotent request arrived twice,
every ``dispatch()`` handler saw its calls in order, ``statistics()`` is idle, the next
request on the same pool succeeds once the servers are healthy, and the process has as many
file descriptors open as before. Further tests end a Pool (``close()``, ``destroy()``) in
the middle of a run and check that memory stays flat across repeated runs.

Every random choice derives from one seed per test, chosen afresh each session (or fixed
with the ``CHAOS_SEED`` environment variable) and named in every assertion message: the
faults a request meets depend on the seed alone (see ``_faulty_server.py``); the
interleaving of real sockets is the only thing a seed does not pin down. ``CHAOS_SCALE=N``
multiplies the requests per caller for a longer soak. The figures of each run are logged
(``-o log_cli=true --log-cli-level=INFO`` shows them).
"""

from __future__ import annotations

import gc
import os
import random
import tracemalloc
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from _faulty_server import Fault, FaultyServer, closed_port, faulty_connector, is_own_body
from _load import Load, assert_settled, check_run, open_fds, run_load

import trio_pool
from trio_pool import BalancedPool, Pool, PoolStats
from trio_pool.testing import serve_h11, serve_memory

# Relative frequencies of the faults; about half the arrivals meet one.
FAULTS: Mapping[Fault, float] = {
    Fault.ANSWER: 10,
    Fault.ANSWER_CLOSE: 1,
    Fault.IDLE_CLOSE: 1,
    Fault.IDLE_BYTES: 1,
    Fault.CLOSE_BEFORE: 2,
    Fault.EARLY_ANSWER: 1,
    Fault.CLOSE_MID_LENGTH: 1,
    Fault.CLOSE_MID_CHUNKED: 1,
    Fault.GARBAGE: 1,
    Fault.STALL_HEAD: 1,
    Fault.STALL_BODY: 1,
    Fault.SLOW: 3,
}
# Real sockets: stalls cost real time (the timeouts end them), so they are rarer there.
SOCKET_FAULTS: Mapping[Fault, float] = {
    **FAULTS,
    Fault.STALL_HEAD: 0.3,
    Fault.STALL_BODY: 0.3,
}
# A longer soak: CHAOS_SCALE=10 sends ten times as many requests per caller.
SCALE = int(os.environ.get("CHAOS_SCALE") or 1)
REFUSE_RATE = 0.05  # and as many slow connects
# Virtual seconds in memory (the autojump clock makes them free); real ones on sockets.
MEMORY_TIMEOUTS: dict[str, Any] = {
    "headers_timeout": 30.0,
    "body_timeout": 30.0,
    "connect_timeout": 10.0,
}
SOCKET_TIMEOUTS: dict[str, Any] = {
    "headers_timeout": 0.3,
    "body_timeout": 0.3,
    "connect_timeout": 2.0,
}
MEMORY_GAP = 5.0
MEMORY_SLOW_CONNECT = 20.0  # half the slow connects time out
SOCKET_SLOW_CONNECT = 0.1  # none does
SOCKET_GAP = 0.02
MEMORY_HANG_GUARD = 3600.0 * SCALE  # virtual: far beyond any legitimate run
SOCKET_HANG_GUARD = 20.0 * SCALE


@pytest.fixture
def seed() -> int:
    return int(os.environ.get("CHAOS_SEED") or random.randrange(2**32))


def memory_load(seed: int, callers: int = 24, per_caller: int = 40) -> Load:
    return Load(seed, callers, per_caller * SCALE, cancel_within=20.0)


def socket_load(seed: int, callers: int = 16, per_caller: int = 25) -> Load:
    return Load(seed, callers, per_caller * SCALE, cancel_within=0.1)


async def soak(
    what: str,
    dispatcher: Any,
    servers: list[FaultyServer],
    load: Load,
    hang_guard: float,
    *,
    down: str | None = None,
    churn: list[str] | None = None,
) -> None:
    """One run through ``dispatcher`` and its checks; then the servers heal (the
    BalancedPool's upstream ``down`` is removed) and the next requests must succeed.
    With ``churn``, those upstreams of the BalancedPool are removed and added back at
    random moments during the run."""
    with trio.fail_after(hang_guard):
        async with trio.open_nursery() as nursery:
            if churn:
                nursery.start_soon(churn_upstreams, dispatcher, churn, load)
            tally = await run_load(dispatcher, load)
            nursery.cancel_scope.cancel()
    for origin in churn or ():
        dispatcher.add_upstream(origin)
    await assert_settled(dispatcher, what)
    check_invariants(dispatcher)
    check_run(what, tally, servers)
    if down is not None:
        dispatcher.remove_upstream(down)
    for server in servers:
        server.healthy = True
    # Let the faults still pending on idle connections play out first: unsolicited bytes
    # racing a request just written are indistinguishable from its response.
    await trio.sleep(2 * max(server.gap for server in servers))
    for index in range(2 * len(servers)):
        rid = f"healthy{index}"
        try:
            response = await dispatcher.request("GET", f"/{rid}")
        except trio_pool.TrioPoolError as exc:  # name the seed, so the run can be replayed
            raise AssertionError(f"{what}: healthy request {rid} failed: {exc!r}") from exc
        assert response.status == 200, what
        assert is_own_body(rid, response.body), what
    await assert_settled(dispatcher, f"{what}, after the healthy requests")
    check_invariants(dispatcher)


def check_invariants(dispatcher: Pool | BalancedPool) -> None:
    """The scheduler invariants of ``dispatcher`` (every upstream's, for a BalancedPool),
    at a moment every task is blocked."""
    dispatcher._check_invariants()


async def churn_upstreams(pool: BalancedPool, origins: list[str], load: Load) -> None:
    """Remove a random upstream (its requests finish, its Pool closes in the background)
    and add it back a moment later, again and again."""
    rng = random.Random(f"{load.seed}/churn")
    while True:
        origin = rng.choice(origins)
        pool.remove_upstream(origin)
        await trio.sleep(rng.uniform(0, load.cancel_within))
        pool.add_upstream(origin)
        await trio.sleep(rng.uniform(0, load.cancel_within))


@asynccontextmanager
async def fds_restored(what: str) -> AsyncIterator[None]:
    """The block (servers and pools inside) leaves as many descriptors open as it found."""
    before = open_fds()
    yield
    assert open_fds() == before, f"{what}: file descriptors leaked"


def drawn_options(seed: int) -> dict[str, Any]:
    """Pool options drawn from the seed, so runs explore the configurations too."""
    rng = random.Random(f"{seed}/options")
    return {
        "connections": rng.choice([1, 2, 8, None]),
        "pipelining": rng.choice([1, 2, 4, 10]),
        "max_requests_per_client": rng.choice([None, 1, 3, 7]),
        "client_ttl": rng.choice([None, 20.0, 100.0]),
        "keep_alive_timeout": rng.choice([1.0, 4.0, 10.0]),
        "retry_idempotent": rng.random() < 0.8,
    }


@pytest.mark.parametrize(
    "options",
    [
        {"connections": 8, "pipelining": 1},
        # Connections also retire for their age, their request count and idleness.
        {"connections": 8, "pipelining": 4, "client_ttl": 100.0, "max_requests_per_client": 7},
        None,  # drawn from the seed
    ],
    ids=["pipelining=1", "pipelining=4", "drawn"],
)
async def test_pool_in_memory(
    autojump_clock: trio.testing.MockClock, seed: int, options: dict[str, Any] | None
) -> None:
    options = options or drawn_options(seed)
    what = f"Pool in memory, {options}, CHAOS_SEED={seed}"
    faulty = FaultyServer(seed, FAULTS, MEMORY_GAP)
    async with fds_restored(what), serve_memory(faulty, streaming=True) as server:
        connector = faulty_connector(
            server.connector, faulty, rate=REFUSE_RATE, slow=MEMORY_SLOW_CONNECT
        )
        async with Pool(
            server.origin,
            connector=connector,
            **{"keep_alive_timeout": 10.0, **options},
            **MEMORY_TIMEOUTS,
        ) as pool:
            await soak(what, pool, [faulty], memory_load(seed), MEMORY_HANG_GUARD)


@pytest.mark.parametrize("pipelining", [1, 3])
async def test_pool_on_sockets(seed: int, pipelining: int) -> None:
    what = f"Pool on sockets, pipelining={pipelining}, CHAOS_SEED={seed}"
    faulty = FaultyServer(seed, SOCKET_FAULTS, SOCKET_GAP)
    with closed_port() as dead:
        async with fds_restored(what), serve_h11(faulty, streaming=True) as server:
            port = int(server.origin.rsplit(":", 1)[1])

            async def connect(origin: Any) -> trio.abc.Stream:
                return await trio.open_tcp_stream("127.0.0.1", port)

            connector = faulty_connector(
                connect,
                faulty,
                rate=REFUSE_RATE,
                slow=SOCKET_SLOW_CONNECT,
                refuse_port=dead.getsockname()[1],
            )
            async with Pool(
                server.origin,
                connections=6,
                pipelining=pipelining,
                connector=connector,
                **SOCKET_TIMEOUTS,
            ) as pool:
                await soak(what, pool, [faulty], socket_load(seed), SOCKET_HANG_GUARD)


async def test_balanced_in_memory(autojump_clock: trio.testing.MockClock, seed: int) -> None:
    """Two faulty upstreams and one that refuses every connection."""
    what = f"BalancedPool in memory, CHAOS_SEED={seed}"
    faulty = [FaultyServer(seed + n, FAULTS, MEMORY_GAP) for n in range(2)]
    async with fds_restored(what), AsyncExitStack() as stack:
        connectors = {}
        for number, script in enumerate(faulty):
            server = await stack.enter_async_context(serve_memory(script, streaming=True))
            connectors[f"http://up{number}"] = faulty_connector(
                server.connector, script, rate=0.02, slow=MEMORY_SLOW_CONNECT
            )

        async def connector(origin: Any) -> trio.abc.Stream:
            if origin.text not in connectors:
                await trio.lowlevel.checkpoint()
                raise ConnectionRefusedError("the upstream is down (chaos)")
            return await connectors[origin.text](origin)

        async with BalancedPool(
            [*connectors, "http://down"], connections=8, connector=connector, **MEMORY_TIMEOUTS
        ) as pool:
            run = memory_load(seed, callers=20, per_caller=30)
            await soak(
                what, pool, faulty, run, MEMORY_HANG_GUARD, down="http://down", churn=[*connectors]
            )


async def test_balanced_on_sockets(seed: int) -> None:
    """Two faulty upstreams on real sockets and one closed port (refused by the kernel)."""
    what = f"BalancedPool on sockets, CHAOS_SEED={seed}"
    faulty = [FaultyServer(seed + n, SOCKET_FAULTS, SOCKET_GAP) for n in range(2)]
    with closed_port() as dead:
        down = f"http://127.0.0.1:{dead.getsockname()[1]}"
        async with fds_restored(what), AsyncExitStack() as stack:
            origins = [
                (await stack.enter_async_context(serve_h11(script, streaming=True))).origin
                for script in faulty
            ]
            async with BalancedPool([*origins, down], connections=4, **SOCKET_TIMEOUTS) as pool:
                run = socket_load(seed, callers=16, per_caller=25)
                await soak(what, pool, faulty, run, SOCKET_HANG_GUARD, down=down, churn=origins)


async def test_memory_stays_flat(autojump_clock: trio.testing.MockClock, seed: int) -> None:
    """Repeated runs through one long-lived Pool leave no memory behind: what is
    allocated after the last run is about what was after the second (the first warms
    caches up). Between runs the test server's records are cleared and the idle
    connections left to expire, so each run ends in the same state."""
    sizes = []
    faulty = FaultyServer(seed, FAULTS, MEMORY_GAP)
    async with serve_memory(faulty, streaming=True) as server:
        connector = faulty_connector(
            server.connector, faulty, rate=REFUSE_RATE, slow=MEMORY_SLOW_CONNECT
        )
        async with Pool(
            server.origin, connections=4, pipelining=2, connector=connector, **MEMORY_TIMEOUTS
        ) as pool:
            tracemalloc.start()
            try:
                for run in range(5):
                    what = f"memory run {run}, CHAOS_SEED={seed}"
                    tally = await run_load(pool, memory_load(seed + run, callers=8, per_caller=10))
                    await assert_settled(pool, what)
                    check_invariants(pool)
                    check_run(what, tally, [faulty])
                    faulty.arrivals.clear()
                    faulty.faults.clear()
                    server.requests.clear()
                    del tally
                    await trio.sleep(60)  # virtual: idle connections expire, stalls end
                    gc.collect()
                    sizes.append(tracemalloc.get_traced_memory()[0])
            finally:
                tracemalloc.stop()
    growth = sizes[-1] - sizes[1]
    assert growth < 64 * 1024, f"CHAOS_SEED={seed}: memory grew by {growth} bytes: {sizes}"


@pytest.mark.parametrize("ending", ["close", "destroy"])
async def test_pool_ended_under_load(
    autojump_clock: trio.testing.MockClock, seed: int, ending: str
) -> None:
    """``close()`` or ``destroy()`` in the middle of a run: the callers still get only
    ``TrioPoolError``s, nothing hangs, and every connection is closed."""
    what = f"Pool ended by {ending}() under load, CHAOS_SEED={seed}"
    faulty = FaultyServer(seed, FAULTS, MEMORY_GAP)
    rng = random.Random(f"{seed}/{ending}")
    async with fds_restored(what), serve_memory(faulty, streaming=True) as server:
        connector = faulty_connector(
            server.connector, faulty, rate=REFUSE_RATE, slow=MEMORY_SLOW_CONNECT
        )
        async with Pool(
            server.origin, connections=4, pipelining=2, connector=connector, **MEMORY_TIMEOUTS
        ) as pool:

            async def end_later() -> None:
                await trio.sleep(rng.uniform(0, 200))
                await (pool.close() if ending == "close" else pool.destroy())

            with trio.fail_after(MEMORY_HANG_GUARD):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(end_later)
                    tally = await run_load(pool, memory_load(seed, callers=16, per_caller=25))
            stats = pool.statistics()
            assert stats == PoolStats(0, 0, 0, 0, 0, 0), f"{what}: {stats}"
        check_run(what, tally, [faulty])
