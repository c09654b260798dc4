"""The HTTP benchmark's results for the docs: a reST table to include and a plot.

``docs/benchmarks.rst`` includes ``docs/_generated/benchmark_table.inc`` and shows
``docs/_static/benchmark.png``; both are rewritten by ``benchmarks/run.py --docs`` (the
default for a full run) and committed, so the docs show the numbers of a real run. The table
file is ``.inc``, not ``.rst``, so that Sphinx reads it only through the include.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

TABLE = Path("_generated") / "benchmark_table.inc"
PLOT = Path("_static") / "benchmark.png"


def write(summary: dict[str, Any], docs: Path, *, quick: bool) -> list[Path]:
    """Write the table and (when matplotlib is installed) the plot under ``docs``."""
    table = docs / TABLE
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(_table(summary, quick=quick), encoding="utf-8")
    written = [table]
    try:
        import matplotlib
    except ImportError:
        return written
    matplotlib.use("Agg")
    plot = docs / PLOT
    plot.parent.mkdir(parents=True, exist_ok=True)
    _plot(summary, plot)
    written.append(plot)
    return written


def _groups(summary: dict[str, Any]) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for row in summary["rows"]:
        seen[row["scheme"], row["body"]] = None
    return list(seen)


def _cell(value: float | None, fmt: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    return format(value, fmt)


def _table(summary: dict[str, Any], *, quick: bool) -> str:
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"Measured {date} ({'quick' if quick else 'full'} run) against **{summary['server']}**"
        f" on loopback: {os.cpu_count()} CPUs, {platform.python_implementation()}"
        f" {sys.version.split()[0]}, {platform.system()}; load average after the run {load}."
        f" Medians of {summary['repetitions']} repetitions of {summary['requests']:,} GETs"
        f" (at least 2 per worker); a measurement is capped after {summary['guard_s']:g} s.",
        "",
    ]
    for scheme, body in _groups(summary):
        lines += [
            f".. list-table:: {scheme}, {body} body",
            "   :header-rows: 1",
            "",
            "   * - C",
            "     - client",
            "     - req/s",
            "     - p50 ms",
            "     - p99 ms",
            "     - Pool ÷ it",
            "     - pipelined ÷ it",
        ]
        for row in summary["rows"]:
            if (row["scheme"], row["body"]) != (scheme, body):
                continue
            capped = " (capped)" if row["capped"] else ""
            lines += [
                f"   * - {row['concurrency']}",
                f"     - {row['client']}",
                f"     - {row['rps']:,.0f}{capped}",
                f"     - {_cell(row['p50_ms'], '.2f')}",
                f"     - {_cell(row['p99_ms'], '.2f')}",
                f"     - {_cell(row['pool_ratio'], '.2f')}",
                f"     - {_cell(row['pipelined_ratio'], '.2f')}",
            ]
        lines.append("")
    return "\n".join(lines)


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    groups = _groups(summary)
    figure, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True, squeeze=False)
    for ax, (scheme, body) in zip(axes.flat, groups, strict=False):
        for client in summary["clients"]:
            points = [
                (row["concurrency"], row["rps"])
                for row in summary["rows"]
                if (row["scheme"], row["body"], row["client"]) == (scheme, body, client)
                and row["rps"] > 0
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                style = "-" if client.startswith(("Pool", "Balanced")) else "--"
                ax.plot(xs, ys, style, marker="o", label=client)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{scheme}, {body} body")
        ax.set_xticks(summary["concurrencies"], [str(c) for c in summary["concurrencies"]])
        ax.grid(True, which="both", alpha=0.3)
        ax.set_ylabel("requests/s")
    for ax in axes[-1]:
        ax.set_xlabel("concurrency (tasks or threads)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, frameon=False)
    figure.suptitle(f"GET throughput against {summary['server']} on loopback (median)")
    figure.tight_layout(rect=(0, 0.07, 1, 0.97))
    figure.savefig(path, dpi=90)
    plt.close(figure)
