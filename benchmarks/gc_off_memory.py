"""Resident memory of a process sending many GETs with the cyclic garbage collector off
(issue #16: no garbage per request).

With ``gc.disable()``, anything a request leaves in a reference cycle is never freed, so
the process grows with every request. This sends ``--requests`` GETs of ``/`` (nginx's
12-byte ``hello world``, or the embedded server's) with ``--concurrency`` tasks over one
``Pool``, a warm-up batch first (connections open, caches filled), and samples the RSS
(``/proc/self/statm``) after each of ``--samples`` equal slices. Reported: the RSS after
the warm-up and at the end, the growth per 1,000 requests, and whether the end is within
5 % of the start (**target: flat, ±5 %**). The count is bounded by the flag (default 20,000
for a quick run; the issue's figure is 100,000) and the run by a two-minute guard.

    python benchmarks/gc_off_memory.py [--requests 100000] [--server auto|nginx|embedded]
"""

from __future__ import annotations

import argparse
import gc
import os

import trio
from _servers import start

import trio_pool

GUARD = 120.0  # seconds: a stuck run fails rather than hangs
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


async def _batch(pool: trio_pool.Pool, total: int, tasks: int) -> None:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            response = await pool.request("GET", "/")
            assert response.status == 200

    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)


async def _measure(origin: str, requests: int, concurrency: int, samples: int) -> bool:
    async with trio_pool.Pool(origin, connections=concurrency) as pool:
        with trio.fail_after(GUARD):
            await _batch(pool, 2000, concurrency)  # warm up
            gc.collect()
            gc.disable()
            try:
                start_rss = _rss()
                sizes = []
                for _ in range(samples):
                    await _batch(pool, requests // samples, concurrency)
                    sizes.append(_rss())
                garbage = gc.collect()
            finally:
                gc.enable()
    end_rss = sizes[-1]
    growth = (end_rss - start_rss) / max(requests, 1) * 1000
    flat = abs(end_rss - start_rss) <= 0.05 * start_rss
    print(f"RSS after warm-up: {start_rss / 2**20:.1f} MiB, at the end: {end_rss / 2**20:.1f} MiB")
    print("samples (MiB): " + ", ".join(f"{size / 2**20:.1f}" for size in sizes))
    print(f"growth: {growth:.0f} bytes per 1,000 requests; objects collected after: {garbage}")
    print(f"flat within 5 %: {'yes' if flat else 'NO'}")
    return flat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=["auto", "nginx", "embedded"], default="auto")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    with start(args.server) as server:
        origin = server.origins("http")[0]
        print(f"server: {server.kind}, C={args.concurrency}, {args.requests} requests, gc off")
        if not trio.run(_measure, origin, args.requests, args.concurrency, args.samples):
            raise SystemExit(1)


if __name__ == "__main__":
    main()
