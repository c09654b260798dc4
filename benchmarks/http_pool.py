"""HTTP/1.1 GET throughput and latency: trio_pool's pools against the other Python clients.

One server for the whole run, in other processes (``_servers``: nginx when installed, else
the embedded Python server), offering http and https, a 12-byte body at ``/`` and a 64 KiB
body at ``/64k``, on two upstreams per scheme. Every client of ``_clients.CLIENTS`` is measured
at concurrency 1, 10, 100, 1000 and 10,000 for each (scheme, body) pair (at 10,000 only the
clients that queue on at most ``MAX_CONNECTIONS`` connections: not the one-connection-per-task
loops, not urllib3's threads, not httpx/httpcore, which already stall at 1,000).

Each cell is measured with the cyclic GC on (what users run: the main column) and, except for
the child-process clients, off (the second column). Repetitions alternate: each one runs every
cell once, rotating the order of the groups, the concurrencies, the clients and GC on/off, so
a busy spell on the machine spreads over all of them. The cells the targets compare
(``_targets.target_cells``) then get extra repetitions (GC on) up to ``TARGET_REPS`` in all,
still alternating. The table shows medians over repetitions, and each ratio is the median of
the per-repetition ratios. One untimed warm-up measurement per client comes first. Each
measurement is bounded by a count (shared by the C workers) and a time guard; a cell cut by
the guard is shown as capped. ``Options.cells == "targets"`` measures only the target cells.
``run.py`` turns the data into the docs' tables and plot (``_report``).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict
from typing import Any

import _clients
import _servers
import _targets
from _clients import H11, PIPELINED, POOL, Sample, Target
from _common import Options, Result, format_table, median, rotated

TITLE = (
    "HTTP/1.1 GET req/s and latency: trio_pool Pool / pipelined / BalancedPool vs a Trio+h11 "
    "loop, httpx, httpx over trio_pool, httpcore (trio), aiohttp, httpx-aiohttp, urllib3; "
    "C = 1..10,000, 12 B and 64 KiB, http(s), GC on and off"
)

CONCURRENCIES = (1, 10, 100, 1000, 10_000)
SCHEMES = ("http", "https")
BODIES = {
    "12 B": (_servers.SMALL_PATH, _servers.SMALL_SIZE),
    "64 KiB": (_servers.LARGE_PATH, _servers.LARGE_SIZE),
}
GROUPS = tuple((scheme, body) for scheme in SCHEMES for body in BODIES)
TARGET_GROUP = ("http", "12 B")
"""The group of the flatness rows (the per-request overhead is what they are about)."""
FD_HEADROOM = 256
"""Descriptors kept free beyond the two per connection (client side and, for the embedded
server, the server side) that a concurrency needs."""

QUICK_SKIP = (1000, _clients.ISOLATED)
"""A quick run leaves these out: they take over 10 s to warm 1,000 connections up."""
QUICK_AT_10K = frozenset({POOL, _clients.AIOHTTP})
"""The only clients a quick run measures at C=10,000."""
BEYOND_CONNECTIONS = _clients.LOOP_CLIENTS | _clients.THREADED | _clients.ISOLATED
"""Not run with more workers than MAX_CONNECTIONS (see the module docstring)."""
GC_ON_ONLY = _clients.ISOLATED
"""Measured with the GC on only: their child process and slow cells would double the run."""

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


def _skipped(client: str, c: int, quick: bool, group: tuple[str, str]) -> bool:
    if c > _clients.MAX_CONNECTIONS and client in BEYOND_CONNECTIONS:
        return True
    if quick and c >= 1000 and group != TARGET_GROUP:  # 1,000 connections take seconds
        return True
    if quick and c > _clients.MAX_CONNECTIONS and client not in QUICK_AT_10K:
        return True
    return quick and c >= QUICK_SKIP[0] and client in QUICK_SKIP[1]


def _collect(options: Options) -> dict[str, Any]:
    reps = options.reps(quick=1, full=3)
    target_reps = max(reps, options.target_reps(quick=2, full=5))
    n = 300 if options.quick else 3_000
    n_10k = 10_000 if options.quick else 30_000
    window = 1.0 if options.quick else 5.0
    warm = 1 if options.quick else 2
    clients, notes = _available_clients()
    fd_limit = _servers.raise_fd_limit()
    concurrencies = [
        c for c in CONCURRENCIES if 2 * _clients.connections(c) + FD_HEADROOM <= fd_limit
    ]
    if len(concurrencies) < len(CONCURRENCIES):
        notes.append(f"open-files limit {fd_limit}: C > {concurrencies[-1]} skipped")
    only_targets = options.cells == "targets"
    wanted = _targets.target_cells()
    samples: dict[Cell, list[Sample]] = {}
    samples_gc_off: dict[Cell, list[Sample]] = {}

    def requests(c: int) -> int:
        return n_10k if c > _clients.MAX_CONNECTIONS else max(n, 2 * c)

    def one(cell: Cell, gc_enabled: bool) -> None:
        scheme, body, c, client = cell
        sample = _clients.measure(
            client, targets[scheme, body], c, requests(c), warm, window, gc_enabled=gc_enabled
        )
        (samples if gc_enabled else samples_gc_off).setdefault(cell, []).append(sample)

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
        for rep in range(target_reps):
            print(f"  repetition {rep + 1} of {target_reps}", flush=True)
            for scheme, body in rotated(GROUPS, rep):
                for c in rotated(concurrencies, rep):
                    for client in rotated(clients, rep):
                        cell = (scheme, body, c, client)
                        if _skipped(client, c, options.quick, (scheme, body)):
                            continue
                        if rep >= reps or only_targets:  # the target cells' extra repetitions
                            if cell in wanted:
                                one(cell, True)
                            continue
                        gc_on_only = client in GC_ON_ONLY or (
                            options.quick and (scheme, body) != TARGET_GROUP
                        )
                        modes = [True] if gc_on_only else rotated([True, False], rep)
                        for gc_enabled in modes:
                            one(cell, gc_enabled)
    if options.quick:
        skipped = ", ".join(c for c in clients if c in QUICK_SKIP[1])
        notes.append(f"{skipped}: not run at C>={QUICK_SKIP[0]} in a quick run (see README)")
        notes.append(
            f"C={CONCURRENCIES[-1]:,}: only {', '.join(sorted(QUICK_AT_10K))} in a quick run;"
            f" C>=1000 and GC off only in {' '.join(TARGET_GROUP)}"
        )
    return {
        "server": server.kind,
        "requests": n,
        "requests_10k": n_10k,
        "repetitions": reps,
        "target_repetitions": target_reps,
        "cells_measured": "targets" if only_targets else "all",
        "guard_s": window,
        "clients": clients,
        "concurrencies": concurrencies,
        "max_connections": _clients.MAX_CONNECTIONS,
        "notes": notes,
        "samples": samples,
        "samples_gc_off": samples_gc_off,
    }


def _ratio(numerators: list[float], denominators: list[float]) -> float | None:
    """Median of the per-repetition ratios, over the repetitions where both sides got work
    done (a capped peer can complete nothing); None if there are none."""
    if not numerators or not denominators:  # a cell left out of a quick run
        return None
    # A target cell has extra repetitions after the common ones: pair the common ones.
    pairs = [n / d for n, d in zip(numerators, denominators, strict=False) if n > 0 and d > 0]
    return median(pairs) if pairs else None


def _fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _fmt_ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _fmt_cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _median_of(samples: list[Sample] | None, attr: str) -> float:
    done = [getattr(s, attr) for s in samples or [] if s.completed]
    return median(done) if done else math.nan


def _summarise(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Per cell: the medians (GC on, and off), the ratios of Pool and Pool pipelined to it."""
    samples: dict[Cell, list[Sample]] = raw["samples"]
    off: dict[Cell, list[Sample]] = raw["samples_gc_off"]
    rows: list[dict[str, Any]] = []
    for scheme, body in GROUPS:
        for c in raw["concurrencies"]:
            for client in raw["clients"]:
                cell = (scheme, body, c, client)
                ss = samples.get(cell)
                if ss is None:  # left out (a quick run, C=10,000, --cells targets)
                    continue
                rps = [s.rps for s in ss]
                server_cpus = [s.server_cpu for s in ss if s.server_cpu is not None]
                rows.append(
                    {
                        "scheme": scheme,
                        "body": body,
                        "concurrency": c,
                        "client": client,
                        "rps": median(rps),
                        "rps_gc_off": median([s.rps for s in off[cell]]) if cell in off else None,
                        "p50_ms": _median_of(ss, "p50_ms"),
                        "p99_ms": _median_of(ss, "p99_ms"),
                        "cpu_us": _median_of(ss, "cpu_us"),
                        "cpu_us_gc_off": _median_of(off.get(cell), "cpu_us"),
                        "server_cpu": median(server_cpus) if server_cpus else None,
                        "client_cpu": median([s.client_cpu for s in ss]),
                        "capped": sum(s.cut for s in ss),
                        "measurements": len(ss),
                        "errors": sum(s.errors for s in ss)
                        + sum(s.errors for s in off.get(cell, [])),
                        "pool_ratio": _ratio(_rps(samples, (scheme, body, c, POOL)), rps),
                        "pipelined_ratio": _ratio(_rps(samples, (scheme, body, c, PIPELINED)), rps),
                    }
                )
    return rows


def _rps(samples: dict[Cell, list[Sample]], cell: Cell) -> list[float]:
    return [s.rps for s in samples.get(cell, [])]


def _fmt_us(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def _group_table(rows: list[dict[str, Any]], scheme: str, body: str) -> str:
    lines = [
        [
            f"C={row['concurrency']}",
            row["client"],
            f"{row['rps']:,.0f}",
            "-" if row["rps_gc_off"] is None else f"{row['rps_gc_off']:,.0f}",
            _fmt_ms(row["p50_ms"]),
            _fmt_ms(row["p99_ms"]),
            _fmt_us(row["cpu_us"]),
            _fmt_us(row["cpu_us_gc_off"]),
            _fmt_cpu(row["server_cpu"]),
            _fmt_ratio(row["pool_ratio"]),
            _fmt_ratio(row["pipelined_ratio"]),
            f"{row['capped']}/{row['measurements']}" if row["capped"] else "",
            str(row["errors"]) if row["errors"] else "",
        ]
        for row in rows
        if (row["scheme"], row["body"]) == (scheme, body)
    ]
    header = ["", "client", "req/s", "GC off", "p50 ms", "p99 ms", "CPU µs/req", "GC off"]
    header += ["server CPU", "Pool ÷ it", "pipelined ÷ it", "capped", "errors"]
    return f"-- {scheme}, {body} body --\n" + format_table(header, lines)


def _flatness(raw: dict[str, Any]) -> tuple[str, dict[str, float | None]]:
    """req/s at C=100 over C=10 (and C=10,000 over C=100) for the pools and the h11 loop."""
    samples: dict[Cell, list[Sample]] = raw["samples"]
    flatness: dict[str, float | None] = {}
    rows = []
    for client in (POOL, PIPELINED, H11):  # the h11 loop's: how much is the machine's
        for low, high in ((10, 100), (100, 10_000)):
            ratio = _ratio(
                _rps(samples, (*TARGET_GROUP, high, client)),
                _rps(samples, (*TARGET_GROUP, low, client)),
            )
            if ratio is not None:
                flatness[f"{client} C={high}/C={low}"] = ratio
                rows.append([f"{client}, C={high:,} / C={low}", _fmt_ratio(ratio)])
    table = format_table([f"flatness ({' '.join(TARGET_GROUP)}, req/s)", "ratio"], rows)
    return table, flatness


def data_of(raw: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON-serialisable data of a run (what ``--json`` saves and the docs are made of)."""

    def dump(samples: dict[Cell, list[Sample]]) -> dict[str, list[dict[str, Any]]]:
        return {_targets.cell_key(*cell): [asdict(s) for s in ss] for cell, ss in samples.items()}

    return {
        **{k: v for k, v in raw.items() if not k.startswith("samples")},
        "cells": rows,
        "samples": dump(raw["samples"]),
        "samples_gc_off": dump(raw["samples_gc_off"]),
    }


def _analyse(raw: dict[str, Any], options: Options) -> Result:
    rows = _summarise(raw)
    notes: list[str] = list(raw["notes"])
    failures: list[str] = []
    for row in rows:
        where = f"{row['scheme']} {row['body']} C={row['concurrency']} {row['client']}"
        if row["capped"]:
            notes.append(
                f"{where}: {row['capped']} of {row['measurements']} measurements capped"
                " (req/s is over the requests completed in the window; 0: never got through"
                " the set-up)"
            )
        if row["errors"]:
            failures.append(f"{where}: {row['errors']} bad responses")
    flatness_table, flatness = _flatness(raw)
    data = {**data_of(raw, rows), "flatness": flatness}
    outcomes = _targets.evaluate({"http": {"data": data}})
    http_outcomes = [o for o in outcomes if o.met is not None]
    failures += [f"{o.name}: {o.value:.2f} (goal {o.goal})" for o in http_outcomes if not o.met]
    spreads = [
        ((max(v) - min(v)) / median(v), " ".join(map(str, cell)))
        for cell, ss in raw["samples"].items()
        if (v := [s.rps for s in ss]) and median(v) > 0
    ]
    worst_spread, worst_where = max(spreads) if spreads else (0.0, "-")
    text = "\n".join(
        [
            f"server: {raw['server']}; {raw['requests']:,} GETs per measurement (at least 2 per"
            f" worker; {raw['requests_10k']:,} at C=10,000), median of {raw['repetitions']}"
            f" alternating repetitions ({raw['target_repetitions']} for the target cells);"
            f" timed window capped at {raw['guard_s']:g} s (set-up at {raw['guard_s']:g} s +"
            f" 10 ms per connection + 2 ms per worker); at most {raw['max_connections']:,}"
            " connections per pool",
            "req/s and CPU with the cyclic GC on (what users run), then off; CPU µs/req: this"
            " process's getrusage user+system time per request; server CPU: CPU-seconds per"
            " second of window (100% = one core); X ÷ it: X's req/s divided by this client's",
            *("\n" + _group_table(rows, scheme, body) for scheme, body in GROUPS),
            "",
            *(f"note: {note}" for note in notes),
            "",
            format_table(_targets.HEADER, [o.as_row() for o in http_outcomes]),
            "",
            flatness_table,
            "",
            "ratios are medians of per-repetition ratios (paired samples); spread: (max-min)/"
            "median of those ratios; targets are goals (run.py --check lists them all)",
            f"noise: widest (max-min)/median req/s across repetitions = {worst_spread:.0%}"
            f" ({worst_where})",
        ]
    )
    return Result(name="http", text=text, data=data, failures=failures)


def run(options: Options) -> Result:
    return _analyse(_collect(options), options)
