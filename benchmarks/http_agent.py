"""What an ``Agent`` adds to a request: ``Agent`` vs ``Pool`` to one already-open origin.

Both dispatchers talk to the same server origin (nginx when installed, else the embedded
server; 12-byte body, plain HTTP) in one ``trio.run``. Each repetition runs a batch of
requests through each of them at concurrency C (C tasks, each sending its share in a loop),
Pool and Agent back to back in an order that alternates, and records the client's CPU time
per request (``time.process_time``: the server runs in other processes) and the wall time.
The Agent's cost is the paired ratio of its CPU per request to the Pool's
(**target: <= 1.05x** at C=10 and C=100).
"""

from __future__ import annotations

import time
from typing import Any

import _servers
import trio
from _common import Options, Result, format_table, median, paired_ratio, quiet_gc

import trio_pool

TITLE = "Agent vs Pool to one open origin (client CPU per request, paired)"

TARGET_RATIO = 1.05
CONCURRENCY = (10, 100)
GUARD = 120.0  # time bound on one repetition's batch


async def _batch(send: Any, url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """``requests`` requests at ``concurrency``; returns (CPU, wall) seconds per request."""
    share = requests // concurrency

    async def worker() -> None:
        for _ in range(share):
            response = await send("GET", url)
            assert response.status == 200

    cpu, wall = time.process_time(), time.perf_counter()
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
    done = share * concurrency
    return (time.process_time() - cpu) / done, (time.perf_counter() - wall) / done


async def _measure(origin: str, requests: int, reps: int) -> dict[str, Any]:
    samples: dict[str, Any] = {}
    async with trio_pool.Pool(origin) as pool, trio_pool.Agent() as agent:
        url = f"{origin}/"
        plans = {"pool": (pool.request, "/"), "agent": (agent.request, url)}
        for concurrency in CONCURRENCY:
            for send, target in plans.values():  # warm: connections open, caches filled
                await _batch(send, target, concurrency * 20, concurrency)
            cpu: dict[str, list[float]] = {"pool": [], "agent": []}
            wall: dict[str, list[float]] = {"pool": [], "agent": []}
            for rep in range(reps):
                order = ["pool", "agent"] if rep % 2 == 0 else ["agent", "pool"]
                for name in order:
                    send, target = plans[name]
                    with quiet_gc():
                        per_cpu, per_wall = await _batch(send, target, requests, concurrency)
                    cpu[name].append(per_cpu)
                    wall[name].append(per_wall)
            samples[str(concurrency)] = {"cpu": cpu, "wall": wall}
    return samples


def run(options: Options) -> Result:
    reps = options.reps(quick=2, full=10)
    requests = 2_000 if options.quick else 10_000
    with _servers.start(options.server) as server:
        origin = server.origins("http")[0]
        samples = trio.run(_measure, origin, requests, reps)
        kind = server.kind
    rows = []
    failures = []
    ratios: dict[str, float] = {}
    for concurrency, sample in samples.items():
        cpu, wall = sample["cpu"], sample["wall"]
        ratio = paired_ratio(cpu["agent"], cpu["pool"])
        ratios[concurrency] = ratio
        rows.append(
            [
                f"C={concurrency}",
                f"{median(cpu['pool']) * 1e6:.1f}",
                f"{median(cpu['agent']) * 1e6:.1f}",
                f"{ratio:.3f}x",
                f"{paired_ratio(wall['agent'], wall['pool']):.3f}x",
            ]
        )
        if ratio > TARGET_RATIO:
            failures.append(f"Agent/Pool CPU at C={concurrency}: {ratio:.3f}x > {TARGET_RATIO}x")
    table = format_table(
        ["", "Pool CPU us/req", "Agent CPU us/req", "Agent/Pool CPU", "Agent/Pool wall"],
        rows,
    )
    text = "\n".join(
        [
            f"{kind}, plain HTTP, {requests:,} requests per batch, {reps} alternating pairs;"
            f" target Agent/Pool CPU <= {TARGET_RATIO}x",
            "",
            table,
        ]
    )
    data = {"server": kind, "requests": requests, "repetitions": reps, "samples": samples}
    data["ratios"] = ratios
    return Result(name="http_agent", text=text, data=data, failures=failures)
