"""What ``compose(pool, redirect(), retry(), decompress())`` costs on a plain 200, against a
bare ``pool.request()`` on the same pool, in the same run (target: at most 1.10x).

Both variants run ``--requests`` GETs of ``/`` (nginx's 12-byte ``hello world``, or the
embedded server's) with ``--concurrency`` tasks over one ``Pool`` of as many connections,
alternating bare, composed, bare, composed... for ``--rounds`` rounds, so a busy spell of the
(shared) machine hits both. Reported: the median requests per second of each and their ratio,
and this process's CPU per request (user + system), whose ratio is the interceptors' own cost
when the server is not the bottleneck.

    python benchmarks/interceptors_overhead.py [--server auto|nginx|embedded]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import trio
from _common import own_cpu_seconds, print_rounds
from _servers import start

import trio_pool
from trio_pool import interceptors


async def _run(get: Callable[[], Awaitable[trio_pool.Response]], total: int, tasks: int) -> float:
    """Send ``total`` requests from ``tasks`` tasks; return the wall time in seconds."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            response = await get()
            assert response.status == 200

    start_time = time.perf_counter()
    with trio.fail_after(120):  # bounded: a stuck run fails rather than hangs
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(worker)
    return time.perf_counter() - start_time


async def _measure(origin: str, requests: int, concurrency: int, rounds: int) -> None:
    async with trio_pool.Pool(origin, connections=concurrency) as pool:
        client = trio_pool.compose(
            pool, interceptors.redirect(), interceptors.retry(), interceptors.decompress()
        )
        variants: dict[str, Callable[[], Awaitable[trio_pool.Response]]] = {
            "bare": lambda: pool.request("GET", "/"),
            "composed": lambda: client.request("GET", "/"),
        }
        for get in variants.values():  # warm up: connections open, caches filled
            await _run(get, 2000, concurrency)
        rps: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, get in variants.items():
                cpu_before = own_cpu_seconds()
                wall = await _run(get, requests, concurrency)
                cpu[name].append((own_cpu_seconds() - cpu_before) / requests * 1e6)
                rps[name].append(requests / wall)
        print_rounds(rps, cpu)
        paired = [b / c for b, c in zip(rps["bare"], rps["composed"], strict=True)]
        cpu_paired = [c / b for b, c in zip(cpu["bare"], cpu["composed"], strict=True)]
        print(
            f"composed/bare: {statistics.median(paired):.3f}x time per request,"
            f" {statistics.median(cpu_paired):.3f}x client CPU per request"
            " (median of paired rounds; target <= 1.10x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=["auto", "nginx", "embedded"], default="auto")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with start(args.server) as server:
        origin = server.origins("http")[0]
        print(
            f"server: {server.kind}, C={args.concurrency}, {args.requests} requests x"
            f" {args.rounds} rounds per variant, load {os.getloadavg()[0]:.1f}"
        )
        trio.run(_measure, origin, args.requests, args.concurrency, args.rounds)


if __name__ == "__main__":
    main()
