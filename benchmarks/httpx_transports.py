"""httpx over trio_pool against httpx's own transport on Trio and httpx over aiohttp on
asyncio: GETs of a 12-byte body at concurrency 1, 10, 100 and 1000.

The three clients are ``_clients``' ``httpx/trio_pool``, ``httpx`` and ``httpx-aiohttp`` (the
same definitions ``http_pool.py`` measures), against one server (nginx when installed). Each
repetition measures every (concurrency, client) cell once, rotating the order, so the load of a
busy machine spreads over all of them; a ratio is the median of the per-repetition ratios
(``_common.paired_ratio``). Every measurement is bounded by a count and a time window, and
httpx's own transport runs in a child process that is killed if it overruns (its cleanup of
1,000 connections takes tens of seconds). A cut cell (the window ended first) is marked.

Targets (issue #15): httpx/trio_pool at least 5x httpx at C=10 and C=100, no stall (no cut,
no error) at C=1000, and at least 0.8x httpx-aiohttp.

    python benchmarks/httpx_transports.py [--reps 2] [--requests 2000] [--window 3]
        [--server auto|nginx|embedded] [--concurrency 1,10,100,1000]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

import _clients
import _servers
from _clients import HTTPX, HTTPX_AIOHTTP, HTTPX_TRIO_POOL, Sample, Target
from _common import format_table, median, paired_ratio, rotated

CLIENTS = (HTTPX_TRIO_POOL, HTTPX, HTTPX_AIOHTTP)
RATIOS = ((HTTPX_TRIO_POOL, HTTPX, 5.0), (HTTPX_TRIO_POOL, HTTPX_AIOHTTP, 0.8))
"""(numerator, denominator, target) of the ratio columns."""


def _measure(
    args: argparse.Namespace, target: Target, concurrencies: list[int], clients: list[str]
) -> dict[tuple[int, str], list[Sample]]:
    samples: dict[tuple[int, str], list[Sample]] = {}
    for client in clients:  # warm-up, untimed: imports, first connections
        _clients.measure(client, target, 10, 100, 1, 1.0)
    for rep in range(args.reps):
        for c in rotated(concurrencies, rep):
            for client in rotated(clients, rep):
                n = max(args.requests, 2 * c)
                sample = _clients.measure(client, target, c, n, 1, args.window)
                samples.setdefault((c, client), []).append(sample)
                print(f"rep {rep} C={c} {client}: {sample.rps:,.0f}/s", file=sys.stderr)
    return samples


def _table(
    samples: dict[tuple[int, str], list[Sample]], concurrencies: list[int], clients: list[str]
) -> str:
    ratios = [r for r in RATIOS if r[0] in clients and r[1] in clients]
    header = [
        "C",
        *(f"{c} req/s" for c in clients),
        *(f"{c} CPU us/req" for c in clients),
        *(f"{n} / {d}" for n, d, _ in ratios),
    ]
    rows = []
    for c in concurrencies:
        row = [str(c)]
        for client in clients:
            cell = samples[c, client]
            flag = " (cut)" if any(s.cut for s in cell) else ""
            errors = sum(s.errors for s in cell)
            flag += f" ({errors} errors)" if errors else ""
            row.append(f"{median([s.rps for s in cell]):,.0f}{flag}")
        for client in clients:
            # The client process's CPU per request: steadier than the rate on a loaded
            # machine (the server's is not counted).
            per = [s.client_cpu / s.rps * 1e6 for s in samples[c, client] if s.rps]
            row.append(f"{median(per):,.0f}" if per else "-")
        for num, den, target in ratios:
            pairs = [
                (n.rps, d.rps)
                for n, d in zip(samples[c, num], samples[c, den], strict=True)
                if d.rps
            ]
            if not pairs:  # the denominator completed nothing in its window
                row.append(f"n/a (target {target}x)")
                continue
            ratio = paired_ratio([n for n, _ in pairs], [d for _, d in pairs])
            row.append(f"{ratio:.2f}x (target {target}x)")
        rows.append(row)
    return format_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--window", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--server", default="auto", choices=("auto", "nginx", "embedded"))
    parser.add_argument("--concurrency", default="1,10,100,1000")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    clients = [
        c
        for c in CLIENTS
        if (module := _clients.OPTIONAL.get(c)) is None or importlib.util.find_spec(module)
    ]
    _servers.raise_fd_limit()
    with _servers.start(args.server) as server:
        target = Target(
            origins=server.origins("http"),
            path=_servers.SMALL_PATH,
            body_size=_servers.SMALL_SIZE,
            cafile=None,
            server_pids=server.pids,
        )
        samples = _measure(args, target, concurrencies, clients)
    print(f"server: {server.kind}, {args.reps} repetitions, window {args.window} s")
    print(_table(samples, concurrencies, clients))


if __name__ == "__main__":
    main()
