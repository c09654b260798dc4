"""A pool of Redis connections (coredis, on Trio through anyio), from start to crash to recovery.

Run it from the repository root (it needs Debian's ``redis-server`` package, and
``pip install ".[examples]"`` for coredis)::

    python examples/redis_pool.py

Theory of operation: the script starts a throwaway ``redis-server`` of its own (a child process
on a free port on 127.0.0.1, its config in a temporary directory; see ``_redisserver.py`` next
to this file), then opens ``ResourcePool(open=..., ping=..., max=5)`` around a coredis client
with one connection each. It then

1. runs a few hundred concurrent INCRs through at most five connections;
2. kills the server (SIGKILL, a crash), restarts it on the same port, calls ``expire_all()``
   so no connection from before the crash is reused, and runs the batch again, each task
   retrying (bounded) while the pool recovers on its backoff schedule;
3. ends the pool gracefully and removes the server.

It checks its results, prints the pool's statistics, and exits 0 on success.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import coredis
import trio
from _redisserver import RedisServer, find_redis_server

from trio_pool import Backoff, ResourcePool

TASKS = 300  # per batch, each in a task of its own


@asynccontextmanager
async def connect(server: RedisServer) -> AsyncIterator[Any]:
    client = coredis.Redis(
        host=server.host, port=server.port, max_connections=1, connect_timeout=1.0
    )
    async with client:
        await client.ping()
        yield client


async def ping(client: Any) -> None:
    await client.ping()


async def batch(pool: ResourcePool[Any]) -> int:
    """INCR a counter from TASKS tasks at once; return how many attempts failed."""
    failures = 0

    async def one() -> None:
        nonlocal failures
        for _ in range(100):  # bounded: a crash makes some attempts fail
            try:
                async with pool.acquire() as client:
                    await client.incr("visits")
                    return
            except Exception:
                failures += 1
                await trio.sleep(0.05)
        raise RuntimeError("the pool never recovered")

    async with trio.open_nursery() as nursery:
        for _ in range(TASKS):
            nursery.start_soon(one)
    return failures


async def main(server: RedisServer) -> None:
    pool: ResourcePool[Any] = ResourcePool(
        open=lambda: connect(server),
        ping=ping,
        ping_timeout=1.0,
        acquire_timeout=2.0,
        max=5,
        bail_after=None,
        backoff=Backoff(min=0.05, max=0.5),
        name="redis",
    )
    with trio.fail_after(60):
        async with pool:
            await batch(pool)
            async with pool.acquire() as client:
                visits = int(await client.get("visits"))
            print(f"batch 1: {visits} INCRs through {pool.statistics().max} connections")
            assert visits == TASKS, visits

            server.kill()  # a crash
            print("server killed; restarting it on the same port")
            server.start()
            pool.expire_all()  # a failover: nothing opened before it is reused
            failures = await batch(pool)
            async with pool.acquire() as client:
                visits = int(await client.get("visits"))  # the restart lost the old count
            print(f"batch 2: {visits} INCRs, {failures} attempts failed on the way")
            assert visits == TASKS, visits
            stats = pool.statistics()
            print(f"statistics: {stats}")
            assert stats.allocated <= 5
        assert await pool.end() == []


if __name__ == "__main__":
    binary = find_redis_server()
    if binary is None:
        sys.exit("redis-server not found: apt-get install redis-server")
    # coredis drops the anyio streams of a connection the server killed without closing them.
    warnings.filterwarnings("ignore", category=ResourceWarning)
    with tempfile.TemporaryDirectory() as directory:
        redis = RedisServer(binary, Path(directory))
        redis.start()
        try:
            trio.run(main, redis)
        finally:
            redis.kill()
    print("ok")
