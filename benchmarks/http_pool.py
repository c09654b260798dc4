"""HTTP/1.1 GET throughput and latency: trio_pool's pools against the other Python clients.

One server for the whole run, in other processes (``_servers``: nginx when installed, else
the embedded Python server), offering http and https, a 12-byte body at ``/`` and a 64 KiB
body at ``/64k``, on two upstreams per scheme. Every client of ``_clients.CLIENTS`` is measured
at concurrency 1, 10, 100 and 1000 for each (scheme, body) pair: 160 cells.

Repetitions alternate: each one runs every cell once, rotating the order of the groups, the
concurrencies and the clients, so a busy spell on the machine spreads over all of them. The
table shows medians over repetitions, and each ratio is the median of the per-repetition
ratios (see ``_common.paired_ratio``). One untimed warm-up measurement per client comes first.
Each measurement is bounded by a count (shared by the C workers) and a time guard; a cell cut
by the guard is shown as capped. With ``Options.docs``, the results also go to the docs: an
includable reST table and a plot of throughput against concurrency (``_report``).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict
from typing import Any

import _clients
import _report
import _servers
from _clients import (
    AIOHTTP,
    H11,
    HTTPX,
    HTTPX_AIOHTTP,
    HTTPX_TRIO_POOL,
    PIPELINED,
    POOL,
    Sample,
    Target,
)
from _common import Options, Result, format_table, median, rotated

TITLE = (
    "HTTP/1.1 GET req/s and latency: trio_pool Pool / pipelined / BalancedPool vs a Trio+h11 "
    "loop, httpx, httpx over trio_pool, httpcore (trio), aiohttp, httpx-aiohttp, urllib3; "
    "C = 1..1000, 12 B and 64 KiB, http(s)"
)

CONCURRENCIES = (1, 10, 100, 1000)
SCHEMES = ("http", "https")
BODIES = {
    "12 B": (_servers.SMALL_PATH, _servers.SMALL_SIZE),
    "64 KiB": (_servers.LARGE_PATH, _servers.LARGE_SIZE),
}
GROUPS = tuple((scheme, body) for scheme in SCHEMES for body in BODIES)
TARGET_GROUP = ("http", "12 B")
"""The group the targets apply to (the per-request overhead is what they are about)."""

# (numerator, denominator, target, concurrencies the target applies to), in TARGET_GROUP
TARGETS: tuple[tuple[str, str, float, tuple[int, ...]], ...] = (
    (POOL, H11, 0.90, (1, 10, 100)),
    (POOL, HTTPX, 5.0, (1, 10, 100)),
    (PIPELINED, AIOHTTP, 1.3, (10, 100)),
    # httpx over trio_pool against httpx's own transport on Trio, and against httpx over
    # aiohttp on asyncio (httpx's own per-request cost bounds both).
    (HTTPX_TRIO_POOL, HTTPX, 5.0, (10, 100)),
    (HTTPX_TRIO_POOL, HTTPX_AIOHTTP, 0.8, (1, 10, 100)),
)
FD_HEADROOM = 256
"""Descriptors kept free beyond the two per connection (client side and, for the embedded
server, the server side) that a concurrency needs."""

QUICK_SKIP = (1000, _clients.ISOLATED)
"""A quick run leaves these out: they take over 10 s to warm 1,000 connections up."""

Cell = tuple[str, str, int, str]  # (scheme, body, concurrency, client)


def _available_clients() -> tuple[list[str], list[str]]:
    clients, notes = [], []
    for client in _clients.CLIENTS:
        module = _clients.OPTIONAL.get(client)
        if module is not None and importlib.util.find_spec(module) is None:
            notes.append(f"{client}: skipped ({module} is not installed; pip install '.[bench]')")
            continue
        clients.append(client)
    return clients, notes


def _collect(options: Options) -> dict[str, Any]:
    reps = options.reps(quick=1, full=3)
    n = 300 if options.quick else 3_000
    window = 1.0 if options.quick else 5.0
    warm = 1 if options.quick else 2
    clients, notes = _available_clients()
    fd_limit = _servers.raise_fd_limit()
    concurrencies = [c for c in CONCURRENCIES if 2 * c + FD_HEADROOM <= fd_limit]
    if len(concurrencies) < len(CONCURRENCIES):
        notes.append(f"open-files limit {fd_limit}: C > {concurrencies[-1]} skipped")
    samples: dict[Cell, list[Sample]] = {}
    with _servers.start(options.server) as server:
        targets = {
            (scheme, body): Target(
                origins=server.origins(scheme),
                path=BODIES[body][0],
                body_size=BODIES[body][1],
                cafile=server.cafile if scheme == "https" else None,
                server_pids=server.pids,
            )
            for scheme, body in GROUPS
        }
        for client in clients:  # warm-up, untimed: imports, first connections, caches
            _clients.measure(client, targets[TARGET_GROUP], 10, 100, 1, window)
        for rep in range(reps):
            for scheme, body in rotated(GROUPS, rep):
                for c in rotated(concurrencies, rep):
                    for client in rotated(clients, rep):
                        if options.quick and c >= QUICK_SKIP[0] and client in QUICK_SKIP[1]:
                            continue
                        sample = _clients.measure(
                            client, targets[scheme, body], c, max(n, 2 * c), warm, window
                        )
                        samples.setdefault((scheme, body, c, client), []).append(sample)
    if options.quick:
        skipped = ", ".join(c for c in clients if c in QUICK_SKIP[1])
        notes.append(f"{skipped}: not run at C>={QUICK_SKIP[0]} in a quick run (see README)")
    return {
        "server": server.kind,
        "requests": n,
        "repetitions": reps,
        "guard_s": window,
        "clients": clients,
        "concurrencies": concurrencies,
        "notes": notes,
        "samples": samples,
    }


def _ratio(numerators: list[float], denominators: list[float]) -> float | None:
    """Median of the per-repetition ratios, over the repetitions where both sides got work
    done (a capped peer can complete nothing); None if there are none."""
    if not numerators or not denominators:  # a cell left out of a quick run
        return None
    pairs = [n / d for n, d in zip(numerators, denominators, strict=True) if n > 0 and d > 0]
    return median(pairs) if pairs else None


def _fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _fmt_ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _fmt_cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """Per cell: the medians, the ratios of Pool and Pool pipelined to it, capped and errors."""
    samples: dict[Cell, list[Sample]] = raw["samples"]
    rows: list[dict[str, Any]] = []
    for scheme, body in GROUPS:
        for c in raw["concurrencies"]:
            for client in raw["clients"]:
                ss = samples.get((scheme, body, c, client))
                if ss is None:  # left out of a quick run
                    continue
                rps = [s.rps for s in ss]
                server_cpus = [s.server_cpu for s in ss if s.server_cpu is not None]
                done = [s for s in ss if s.completed]
                rows.append(
                    {
                        "scheme": scheme,
                        "body": body,
                        "concurrency": c,
                        "client": client,
                        "rps": median(rps),
                        "p50_ms": median([s.p50_ms for s in done]) if done else math.nan,
                        "p99_ms": median([s.p99_ms for s in done]) if done else math.nan,
                        "server_cpu": median(server_cpus) if server_cpus else None,
                        "client_cpu": median([s.client_cpu for s in ss]),
                        "capped": sum(s.cut for s in ss),
                        "measurements": len(ss),
                        "errors": sum(s.errors for s in ss),
                        "pool_ratio": _ratio([s.rps for s in samples[scheme, body, c, POOL]], rps),
                        "pipelined_ratio": _ratio(
                            [s.rps for s in samples[scheme, body, c, PIPELINED]], rps
                        ),
                    }
                )
    return {
        "server": raw["server"],
        "requests": raw["requests"],
        "repetitions": raw["repetitions"],
        "guard_s": raw["guard_s"],
        "clients": raw["clients"],
        "concurrencies": raw["concurrencies"],
        "rows": rows,
    }


def _group_table(summary: dict[str, Any], scheme: str, body: str) -> str:
    rows = [
        [
            f"C={row['concurrency']}",
            row["client"],
            f"{row['rps']:,.0f}",
            _fmt_ms(row["p50_ms"]),
            _fmt_ms(row["p99_ms"]),
            _fmt_cpu(row["server_cpu"]),
            _fmt_cpu(row["client_cpu"]),
            _fmt_ratio(row["pool_ratio"]),
            _fmt_ratio(row["pipelined_ratio"]),
            f"{row['capped']}/{row['measurements']}" if row["capped"] else "",
            str(row["errors"]) if row["errors"] else "",
        ]
        for row in summary["rows"]
        if (row["scheme"], row["body"]) == (scheme, body)
    ]
    header = ["", "client", "req/s", "p50 ms", "p99 ms", "server CPU", "client CPU"]
    header += ["Pool ÷ it", "pipelined ÷ it", "capped", "errors"]
    return f"-- {scheme}, {body} body --\n" + format_table(header, rows)


def _targets(raw: dict[str, Any]) -> tuple[str, list[str], dict[str, Any]]:
    """The target ratios in TARGET_GROUP and the pools' flatness: table, misses, data."""
    samples: dict[Cell, list[Sample]] = raw["samples"]
    clients: list[str] = raw["clients"]
    concurrencies: list[int] = raw["concurrencies"]

    def rps(c: int, client: str) -> list[float]:
        return [s.rps for s in samples.get((*TARGET_GROUP, c, client), [])]

    failures: list[str] = []
    rows = []
    ratios: dict[str, dict[str, float | None]] = {}
    for num, den, target, where in TARGETS:
        name = f"{num} / {den}"
        ratios[name] = {}
        cells = []
        for c in concurrencies:
            ratio = _ratio(rps(c, num), rps(c, den)) if den in clients else None
            ratios[name][f"C={c}"] = ratio
            mark = ""
            if c in where and ratio is not None and ratio < target:
                mark = " MISSED"
                group = " ".join(TARGET_GROUP)
                failures.append(f"{group} C={c}: {name} = {ratio:.2f}x < {target:g}x")
            cells.append(_fmt_ratio(ratio) + mark)
        applies = "C=" + ",".join(str(c) for c in where)
        rows.append([name, *cells, f">= {target:g}x at {applies}"])
    flatness: dict[str, float | None] = {}
    if 10 in concurrencies and 100 in concurrencies:
        for client in (POOL, PIPELINED, H11):  # the h11 loop's: how much is the machine's
            flatness[client] = _ratio(rps(100, client), rps(10, client))
            blank = [""] * (len(concurrencies) - 1)
            rows.append(
                [f"flatness {client} C=100 / C=10", *blank, _fmt_ratio(flatness[client]), ""]
            )
    table = format_table(
        [f"{' '.join(TARGET_GROUP)}: ratio of req/s", *(f"C={c}" for c in concurrencies), "target"],
        rows,
    )
    data = {
        "ratios": ratios,
        "flatness_c100_over_c10": flatness,
        "targets": {f"{num} / {den}": t for num, den, t, _ in TARGETS},
    }
    return table, failures, data


def _analyse(raw: dict[str, Any], options: Options) -> Result:
    summary = _summarise(raw)
    notes: list[str] = list(raw["notes"])
    failures: list[str] = []
    for row in summary["rows"]:
        where = f"{row['scheme']} {row['body']} C={row['concurrency']} {row['client']}"
        if row["capped"]:
            notes.append(
                f"{where}: {row['capped']} of {row['measurements']} measurements capped"
                " (req/s is over the requests completed in the window; 0: never got through"
                " the set-up)"
            )
        if row["errors"]:
            failures.append(f"{where}: {row['errors']} bad responses")
    target_table, missed, target_data = _targets(raw)
    failures += missed
    spreads = [
        ((max(v) - min(v)) / median(v), " ".join(map(str, cell)))
        for cell, ss in raw["samples"].items()
        if (v := [s.rps for s in ss]) and median(v) > 0
    ]
    worst_spread, worst_where = max(spreads)
    if options.docs is not None:
        written = _report.write(summary, options.docs, quick=options.quick)
        notes += [f"wrote {path}" for path in written]
    text = "\n".join(
        [
            f"server: {raw['server']}; {raw['requests']:,} GETs per measurement (at least 2 per"
            f" worker), median of {raw['repetitions']} alternating repetitions; timed window"
            f" capped at {raw['guard_s']:g} s (set-up at {raw['guard_s']:g} s + 10 ms per"
            " connection)",
            "CPU: CPU-seconds per second of timed window (100% = one core); X ÷ it: X's req/s"
            " divided by this client's",
            *("\n" + _group_table(summary, scheme, body) for scheme, body in GROUPS),
            "",
            *(f"note: {note}" for note in notes),
            "",
            target_table,
            "",
            "ratios are medians of per-repetition ratios (paired samples); targets are goals",
            f"noise: widest (max-min)/median req/s across repetitions = {worst_spread:.0%}"
            f" ({worst_where})",
        ]
    )
    data = {
        **{k: v for k, v in summary.items() if k != "rows"},
        "notes": raw["notes"],
        "cells": summary["rows"],
        "samples": {
            " ".join(map(str, cell)): [asdict(s) for s in ss] for cell, ss in raw["samples"].items()
        },
        **target_data,
    }
    return Result(name="http", text=text, data=data, failures=failures)


def run(options: Options) -> Result:
    return _analyse(_collect(options), options)
