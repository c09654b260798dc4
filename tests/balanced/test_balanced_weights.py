"""Weighted round-robin: undici's published sequences, weights reacting to failures, and
recovery after an outage of every upstream (undici#4839)."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import pytest
import trio
import trio.testing
from _upstreams import Upstream, upstreams

from trio_pool import BalancedPool, ConnectError, SocketError, TrioPoolError

# undici's test/node-test/balanced-pool.js "weighted round robin" table: three (or five)
# upstreams, some refusing connections while their attempt count is in ``down_on``, or
# dropping the connection mid-request at the given attempt (``hangup_on``); the first picks
# expected, then each upstream's share of 100 requests (errors included).
R = "/connectionRefused"
S = "/socketError"
CASES: list[dict[str, Any]] = [
    {
        "penalty": 7,
        "config": [{}, {}, {}],
        "expected": ["A", "B", "C"] * 4,
        "refused": 0,
        "socket": 0,
        "ratios": [0.34, 0.33, 0.33],
    },
    {
        "penalty": 15,
        "config": [{"down_on": [0]}, {}, {}],
        "expected": ["A" + R, "B", "C", "B", "C", "B", "C", "A", "B", "C", "A"],
        "refused": 1,
        "socket": 0,
        "ratios": [0.32, 0.34, 0.34],
    },
    {
        "penalty": 15,
        "config": [{}, {"down_on": [0]}, {}],
        "expected": ["A", "B" + R, "C", "A", "C", "A", "C", "A", "B", "C"],
        "refused": 1,
        "socket": 0,
        "ratios": [0.34, 0.32, 0.34],
    },
    {
        "penalty": 15,
        "config": [{}, {"down_on": [0]}, {"down_on": [0]}],
        "expected": ["A", "B" + R, "C" + R, "A", "A", "A", "B", "C"],
        "refused": 2,
        "socket": 0,
        "ratios": [0.35, 0.33, 0.32],
    },
    {
        "penalty": 15,
        "config": [{"down_on": [0]}, {"down_on": [0]}, {"down_on": [0]}],
        "expected": ["A" + R, "B" + R, "C" + R, "A", "B", "C", "A", "B", "C"],
        "refused": 3,
        "socket": 0,
        "ratios": [0.34, 0.33, 0.33],
    },
    {
        "penalty": 15,
        "config": [{"down_on": [0, 1, 2]}] * 3,
        "expected": ["A" + R, "B" + R, "C" + R] * 3 + ["A", "B", "C"] * 2,
        "refused": 9,
        "socket": 0,
        "ratios": [0.34, 0.33, 0.33],
    },
    {
        "penalty": 15,
        "config": [{"down_on": [0]}, {"down_on": [0, 1]}, {"down_on": [0]}],
        "expected": [
            *["A" + R, "B" + R, "C" + R, "A", "B" + R, "C", "A", "B", "C", "A"],
            *["B", "C", "A", "C", "A", "C", "A", "C", "A", "B"],
        ],
        "refused": 4,
        "socket": 0,
        "ratios": [0.36, 0.29, 0.35],
    },
    {
        "penalty": 15,
        "config": [{"hangup_on": [1]}, {}, {}],
        "expected": ["A", "B", "C", "A" + S, "B", "C", "B", "C", "B", "C", "A"],
        "refused": 0,
        "socket": 1,
        "ratios": [0.32, 0.34, 0.34],
    },
    {
        "penalty": 7,
        "config": [{}, {}, {}, {}, {}],
        "expected": ["A", "B", "C", "D", "E"] * 2,
        "refused": 0,
        "socket": 0,
        "ratios": [0.2] * 5,
    },
    {
        "penalty": 15,
        "config": [{"down_on": [0, 1, 2, 3]}, {}, {}],
        "expected": [
            *["A" + R, "B", "C", "B", "C", "B", "C", "A" + R, "B", "C", "B", "C", "A" + R],
            *["B", "C", "B", "C", "A" + R, "B", "C", "A", "B", "C", "A", "B", "C"],
        ],
        "refused": 4,
        "socket": 0,
        "ratios": [0.18, 0.41, 0.41],
    },
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
async def test_undici_weighted_round_robin_table(case: dict[str, Any]) -> None:
    iterations = 100
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        ups = [
            Upstream(chr(ord("A") + i), nursery, log, **config)
            for i, config in enumerate(case["config"])
        ]
        for up in ups:
            await up.start()
        by_origin = {up.origin: up for up in ups}
        failures: Counter[str] = Counter()

        def failed(origin: str, targets: object, error: BaseException) -> None:
            # undici's harness charges a failed request to the upstream it went to.
            up = by_origin[origin]
            if isinstance(error, ConnectError):
                kind = R
            elif isinstance(error, SocketError):
                kind = S
            else:
                return
            up.attempts += 1
            log.append(up.name + kind)
            failures[kind] += 1

        # undici's Pool does not retry; neither may ours here, or the hang-up is retried.
        pool = BalancedPool(
            [up.origin for up in ups],
            max_weight_per_server=100,
            error_penalty=case["penalty"],
            keep_alive_timeout=60,
            retry_idempotent=False,
            failover=False,  # undici's table counts each refused request as one
        )
        pool.on("connection_error", failed)
        pool.on("disconnect", failed)
        async with pool:
            for _ in range(iterations):
                for up in ups:
                    await up.prepare()
                with contextlib.suppress(ConnectError, SocketError):
                    await pool.request("GET", "/")
                # Let the pools' connection tasks report (events) before the next pick.
                await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()

    assert sum(up.attempts for up in ups) == iterations
    assert failures[R] == case["refused"]
    assert failures[S] == case["socket"]
    shares = Counter(entry[0] for entry in log)
    assert [shares[up.name] / iterations for up in ups] == case["ratios"]
    assert log[: len(case["expected"])] == case["expected"]


async def test_refused_connections_lower_the_weight_and_a_connect_restores_it() -> None:
    async with upstreams(2) as (a, b):
        await b.stop()
        async with BalancedPool([a.origin, b.origin], error_penalty=40, failover=False) as pool:
            for _ in range(6):
                with contextlib.suppress(ConnectError):
                    await pool.request("GET", "/")
            # B at 100 - 40 - 40 = 20 (it was tried twice), A at 100: A serves most.
            assert a.served == 4
            await b.start()
            a.served = 0
            for _ in range(30):
                await pool.request("GET", "/")
            assert b.served > 0  # tried in its turn, connected: +40
            assert a.served > b.served


async def test_dropped_sockets_lower_the_weight() -> None:
    async with upstreams(2, hangup_on=range(1, 100)) as (a, b):
        b.hangup_on = set()
        async with BalancedPool(
            [a.origin, b.origin], error_penalty=30, retry_idempotent=False
        ) as pool:
            failed = 0
            for _ in range(40):
                try:
                    await pool.request("GET", "/")
                except SocketError:
                    failed += 1
                    a.attempts += 1
                await trio.testing.wait_all_tasks_blocked()
            # A drops every reused connection; each drop costs it 30, each reconnect gives
            # 30 back, so it keeps a share, but a smaller one than B's.
            assert failed > 0
            assert b.served > a.served + failed


async def test_traffic_returns_after_every_upstream_was_down() -> None:
    # undici#4839: two upstreams, one connection each, both down long enough for their
    # weights to hit the floor; then one recovers.
    async with upstreams(2) as (a, b):
        await a.stop()
        await b.stop()
        refused: Counter[str] = Counter()
        async with BalancedPool([a.origin, b.origin], connections=1) as pool:
            pool.on("connection_error", lambda origin, targets, error: refused.update([origin]))

            async def attempt(results: list[str]) -> None:
                try:
                    results.append((await pool.request("GET", "/")).body.decode())
                except ConnectError:
                    results.append("refused")

            # Sequential and concurrent requests all fail promptly, on both upstreams.
            with trio.fail_after(10):
                results: list[str] = []
                for _ in range(10):
                    await attempt(results)
                async with trio.open_nursery() as nursery:
                    for _ in range(20):
                        nursery.start_soon(attempt, results)
            assert results == ["refused"] * 30
            assert refused[a.origin] >= 5  # both stay in rotation: no collapse onto one
            assert refused[b.origin] >= 5
            assert pool.statistics().size == 0

            await b.start()
            results = []
            for _ in range(3):
                await attempt(results)
            assert "B" in results  # back in rotation at once
            results = []
            for _ in range(40):
                await attempt(results)
            assert results.count("B") >= 30

            # Under concurrency B (one connection) also takes most of the work; what
            # overflows while B has a backlog goes to A in its turn and is refused.
            results = []
            async with trio.open_nursery() as nursery:
                for _ in range(40):
                    nursery.start_soon(attempt, results)
            assert results.count("B") >= 20
            assert pool.statistics().size == 0


async def test_every_upstream_down_fails_fast_without_queueing() -> None:
    async with upstreams(3) as ups:
        for up in ups:
            await up.stop()
        async with BalancedPool([up.origin for up in ups], connections=1) as pool:
            errors: list[BaseException] = []

            async def attempt() -> None:
                try:
                    await pool.request("GET", "/")
                except TrioPoolError as exc:
                    errors.append(exc)

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for _ in range(50):
                        nursery.start_soon(attempt)
            assert len(errors) == 50
            assert all(isinstance(error, ConnectError) for error in errors)
            stats = pool.statistics()
            assert (stats.size, stats.queued, stats.connected) == (0, 0, 0)


async def test_waiting_and_probing_do_not_move_the_rotation() -> None:
    # undici#4839's first fault: a "can any upstream take this?" probe advanced the cursor.
    async with upstreams(2) as (a, b):
        async with BalancedPool([a.origin, b.origin], connections=1) as pool:
            results: list[bytes] = []

            async def get(path: str) -> None:
                results.append((await pool.request("GET", path)).body)

            async with trio.open_nursery() as nursery:
                for _ in range(4):  # A, B running, then A, B queued in their Pools
                    nursery.start_soon(get, "/slow")
                await trio.testing.wait_all_tasks_blocked()
                with trio.CancelScope() as waiting:
                    async with trio.open_nursery() as waiters:
                        for _ in range(5):  # nothing is eligible: five probes, five waits
                            waiters.start_soon(get, "/")
                        await trio.testing.wait_all_tasks_blocked()
                        assert pool.statistics().queued == 7
                        waiting.cancel()
                a.gate.set()
                b.gate.set()
            assert sorted(results) == [b"A", b"A", b"B", b"B"]
            # The last pick was B: the rotation goes on with A, as if nobody had waited.
            bodies = [(await pool.request("GET", "/")).body for _ in range(4)]
            assert bodies == [b"A", b"B", b"A", b"B"]
