"""Python memory per idle keep-alive connection of a ``trio_pool.Pool`` (tracemalloc), and
file descriptors per connection, over http and https.

Usage::

    python benchmarks/idle_connections.py [--connections 200]

nginx (``_servers``, another process) answers; one Pool per scheme. A burst of ``SMALL``
concurrent GETs leaves ``SMALL`` idle connections (snapshot A, open fds counted), a burst of
``N`` concurrent GETs then leaves ``N`` (snapshot B): ``(B - A) / (N - SMALL)`` is what one
more idle connection costs — its transport, TLS session, h11 state, pooled-connection task
and bookkeeping — without the pool's fixed part. tracemalloc counts Python allocations
(OpenSSL's own buffers are not in it). Target (issue #16): <= 6 KiB per idle connection,
and exactly one file descriptor each. Bounded: two bursts per scheme, each under a time
guard.
"""

from __future__ import annotations

import argparse
import gc
import os
import ssl
import tracemalloc

import _servers
import trio

import trio_pool

SMALL = 10
GUARD = 30.0
TARGET_BYTES = 6 * 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def burst(pool: trio_pool.Pool, count: int) -> None:
    """``count`` GETs at once: each finds no idle connection, so each opens one."""
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(pool.request, "GET", "/")


def measured() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def measure(origin: str, context: ssl.SSLContext, n: int) -> tuple[float, float, int]:
    """Bytes per idle connection, fds per connection, and the connections opened."""
    async with trio_pool.Pool(origin, ssl_context=context, connections=n) as pool:
        with trio.fail_after(GUARD):
            await burst(pool, SMALL)
        small = pool.statistics().connected
        fds_a, bytes_a = open_fds(), measured()
        with trio.fail_after(GUARD):
            await burst(pool, n)
        large = pool.statistics().connected
        fds_b, bytes_b = open_fds(), measured()
    added = large - small
    return (bytes_b - bytes_a) / added, (fds_b - fds_a) / added, large


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=200)
    args = parser.parse_args()
    _servers.raise_fd_limit()
    with _servers.start("nginx") as server:
        context = ssl.create_default_context(cafile=server.cafile)
        # Imports, caches and the first TLS context's trust store, outside the measurement.
        trio.run(measure, server.origins("https")[0], context, SMALL * 2)
        tracemalloc.start()
        for scheme in ("http", "https"):
            per_conn, fds, opened = trio.run(
                measure, server.origins(scheme)[0], context, args.connections
            )
            verdict = "ok" if per_conn <= TARGET_BYTES and fds == 1 else "MISSED"
            print(
                f"{scheme:5} {opened} idle connections: {per_conn:7.0f} B and {fds:.2f} fd"
                f" per connection (target <= {TARGET_BYTES} B, 1 fd: {verdict})",
                flush=True,
            )
        tracemalloc.stop()


if __name__ == "__main__":
    main()
