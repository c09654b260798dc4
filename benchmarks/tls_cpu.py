"""https client CPU per request: this tree's ``Pool`` against another checkout's (A/B) and
against aiohttp, over nginx with TLS.

Usage::

    python benchmarks/tls_cpu.py [--baseline OTHER_CHECKOUT] [--reps 5] [--window 2]
        [--concurrency 10 100] [--sizes 12 65536] [--scheme https|http]

One nginx (``_servers``) for the run; every measurement runs in a child process
(``_clients.py SPEC``) with the checkout under test first on ``PYTHONPATH`` — this tree, the
``--baseline`` checkout if one is given (say a worktree of the commit before a change), or
either for aiohttp — so two versions of ``trio_pool`` never share a process. For each
(body, concurrency) cell, a repetition measures the clients back to back in a rotating order
(paired, alternating: a busy spell on the shared machine hits all of them), and each ratio
is the median of the per-repetition ratios of client CPU seconds per request. Bounded: each
measurement is at most ``window`` seconds (plus setup) and 20,000 requests; the whole run ~
cells x reps x clients x (window + setup).

Targets (issue #16): aiohttp/Pool CPU per request >= 1.5 for 12 B at C=10 and C=100, >= 1.0
for 64 KiB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import _clients
import _servers
from _clients import AIOHTTP, POOL, Sample, Target

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REQUESTS = 20_000
TARGETS = {_servers.SMALL_PATH: 1.5, _servers.LARGE_PATH: 1.0}


def measure(checkout: Path, client: str, target: Target, concurrency: int, window: float) -> Sample:
    """One measurement in a child process importing ``trio_pool`` from ``checkout``."""
    spec = json.dumps([client, asdict(target), concurrency, REQUESTS, 2, window])
    limit = 2 * window + _clients.SETUP_PER_CONNECTION * concurrency + 10
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout), str(HERE)])}
    try:
        done = subprocess.run(
            [sys.executable, str(HERE / "_clients.py"), spec],
            stdout=subprocess.PIPE,
            env=env,
            timeout=limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Sample(0.0, math.nan, math.nan, 0, 0, True, None, 0.0)
    lines = done.stdout.decode().strip().splitlines()
    if not lines:
        return Sample(0.0, math.nan, math.nan, 0, 0, True, None, 0.0)
    return Sample(**json.loads(lines[0]))


def cpu_per_request(sample: Sample) -> float:
    """Client CPU microseconds per request (nan if nothing completed)."""
    if not sample.rps or sample.errors:
        return math.nan
    return sample.client_cpu / sample.rps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout (A/B)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--scheme", choices=["https", "http"], default="https")
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 65536])
    args = parser.parse_args()
    _servers.raise_fd_limit()
    clients = [("new", ROOT, POOL), ("aiohttp", ROOT, AIOHTTP)]
    if args.baseline is not None:
        clients.insert(1, ("main", args.baseline, POOL))
    with _servers.start("nginx") as server:
        for path, size in ((_servers.SMALL_PATH, 12), (_servers.LARGE_PATH, 65536)):
            if size not in args.sizes:
                continue
            for concurrency in args.concurrency:
                origins = server.origins(args.scheme)
                target = Target(origins, path, size, server.cafile, server.pids)
                cpu: dict[str, list[float]] = {name: [] for name, _, _ in clients}
                for rep in range(args.reps):
                    turn = rep % len(clients)
                    order = clients[turn:] + clients[:turn]
                    for name, checkout, client in order:
                        sample = measure(checkout, client, target, concurrency, args.window)
                        cpu[name].append(cpu_per_request(sample))
                vs_main = (
                    statistics.median(m / n for n, m in zip(cpu["new"], cpu["main"], strict=True))
                    if "main" in cpu
                    else math.nan
                )
                vs_aio = statistics.median(
                    a / n for n, a in zip(cpu["new"], cpu["aiohttp"], strict=True)
                )
                medians = {name: statistics.median(values) for name, values in cpu.items()}
                verdict = "ok" if vs_aio >= TARGETS[path] else "MISSED"
                print(
                    f"{args.scheme} {size:>6} B C={concurrency:<4} CPU us/req "
                    + " ".join(f"{name}={value:7.1f}" for name, value in medians.items())
                    + f" | main/new={vs_main:.2f}x aiohttp/new={vs_aio:.2f}x"
                    + f" (target {TARGETS[path]}x: {verdict})",
                    flush=True,
                )


if __name__ == "__main__":
    main()
