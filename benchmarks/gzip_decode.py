"""gzip decoding of a 64 KiB body: ``compose(pool, decompress())`` beside aiohttp (which
decodes by default), against nginx, in the same run.

nginx serves ``/64k.gz``, 64 KiB of text stored gzipped (10 KiB on the wire) with
``content-encoding: gzip`` (``_servers.py``). Each variant sends ``--requests`` GETs from
``--concurrency`` tasks over a client of as many connections, every body checked against the
expected bytes:

* ``trio_pool``: ``trio_pool.compose(Pool(origin, connections=C), decompress())`` under
  ``trio.run``;
* ``aiohttp``: ``aiohttp.ClientSession`` (``TCPConnector(limit=C)``) under ``asyncio.run``;
* ``undecoded``: the same ``Pool`` without ``decompress()`` (it gets the 10 KiB as they came):
  what the decoding itself costs trio_pool.

The variants alternate for ``--rounds`` rounds in this one process (a fresh client each round,
warmed up before its timed run), so a busy spell of the (shared) machine hits them all.
Reported: the median requests per second of each, this process's CPU per request, and the
paired ratios ``trio_pool / aiohttp`` (req/s) and ``trio_pool / undecoded`` (time). Every loop
is bounded in count and time (120 s per run).

    python benchmarks/gzip_decode.py [--requests N] [--rounds R] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable

import trio
from _common import own_cpu_seconds, print_rounds
from _servers import GZIP_PATH, gzip_body, start

import trio_pool
from trio_pool import interceptors

WARM = 200
LIMIT = 120.0  # seconds per timed run: a stuck run fails rather than hangs
EXPECTED = gzip_body()


class _Count:
    """The requests left to send, shared by the workers of one run."""

    def __init__(self, total: int) -> None:
        self.left = total

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


async def _trio_run(origin: str, requests: int, concurrency: int, decode: bool) -> float:
    """One timed run of ``requests`` through a fresh trio_pool client: wall seconds."""
    async with trio_pool.Pool(origin, connections=concurrency) as pool:
        client = trio_pool.compose(pool, interceptors.decompress()) if decode else pool
        expected = EXPECTED if decode else None

        async def worker(count: _Count) -> None:
            while count.take():
                response = await client.request("GET", GZIP_PATH)
                assert response.status == 200, response.status
                if expected is None:  # the gzip bytes as they came
                    assert response.headers.get("content-encoding") == "gzip"
                    assert len(response.body) < len(EXPECTED)
                else:
                    assert response.body == expected, len(response.body)

        async def run(total: int) -> float:
            count = _Count(total)
            begin = time.perf_counter()
            with trio.fail_after(LIMIT):
                async with trio.open_nursery() as nursery:
                    for _ in range(concurrency):
                        nursery.start_soon(worker, count)
            return time.perf_counter() - begin

        await run(WARM)
        wall = await run(requests)
    return wall  # noqa: RET504 (after the block: mypy reads Pool.__aexit__'s bool as "may swallow")


async def _aiohttp_run(origin: str, requests: int, concurrency: int) -> float:
    """One timed run of ``requests`` through a fresh aiohttp session: wall seconds."""
    import aiohttp

    url = origin + GZIP_PATH
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(count: _Count) -> None:
            while count.take():
                async with session.get(url) as response:
                    body = await response.read()
                    assert response.status == 200, response.status
                    assert body == EXPECTED, len(body)

        async def run(total: int) -> float:
            count = _Count(total)
            begin = time.perf_counter()
            workers = asyncio.gather(*(worker(count) for _ in range(concurrency)))
            await asyncio.wait_for(workers, LIMIT)
            return time.perf_counter() - begin

        await run(WARM)
        return await run(requests)


def _measure(origin: str, requests: int, concurrency: int, rounds: int) -> None:
    variants: dict[str, Callable[[], float]] = {
        "trio_pool": lambda: trio.run(_trio_run, origin, requests, concurrency, True),
        "aiohttp": lambda: asyncio.run(_aiohttp_run(origin, requests, concurrency)),
        "undecoded": lambda: trio.run(_trio_run, origin, requests, concurrency, False),
    }
    rps: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            cpu_before = own_cpu_seconds()
            wall = run()
            # (CPU includes the client's set-up and warm-up: the same for every variant.)
            cpu[name].append((own_cpu_seconds() - cpu_before) / (requests + WARM) * 1e6)
            rps[name].append(requests / wall)
    print_rounds(rps, cpu)
    versus_aiohttp = [t / a for t, a in zip(rps["trio_pool"], rps["aiohttp"], strict=True)]
    decoding = [u / t for t, u in zip(rps["trio_pool"], rps["undecoded"], strict=True)]
    print(
        f"trio_pool/aiohttp: {statistics.median(versus_aiohttp):.3f}x req/s;"
        f" trio_pool decoded/undecoded: {statistics.median(decoding):.3f}x time per request"
        " (medians of paired rounds)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with start("nginx") as server:  # the embedded server has no /64k.gz
        origin = server.origins("http")[0]
        print(
            f"server: {server.kind}, GET {GZIP_PATH} ({len(EXPECTED)} bytes decoded),"
            f" C={args.concurrency}, {args.requests} requests x {args.rounds} rounds per"
            f" variant, load {os.getloadavg()[0]:.1f}"
        )
        _measure(origin, args.requests, args.concurrency, args.rounds)


if __name__ == "__main__":
    main()
