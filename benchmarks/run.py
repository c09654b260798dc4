"""trio_pool's benchmark suite: ``python benchmarks/run.py [--quick] [--only NAME] [--json PATH]``.

``--check`` prints every target of ``_targets.py`` with its measured paired ratio and met /
not met; ``--from-json PATH`` reads a saved run instead of running (to ``--check`` it or to
regenerate the docs from it with ``--docs``).

Each benchmark is a module next to this file, registered in ``BENCHMARKS`` below (name →
module). A module exposes ``TITLE: str`` and ``run(options: Options) -> Result`` (see
``_common.py``); modules are imported only when selected, so a benchmark whose optional
dependencies (httpx, aiohttp, urllib3, ...) are missing does not stop the others.

To add a benchmark: write ``benchmarks/<name>.py`` with ``TITLE`` and ``run``, add it to
``BENCHMARKS``, describe it in ``benchmarks/README.md``.

Exit status: 0; 1 when a benchmark failed to run, or with ``--strict`` when a target was not
met (or a response was bad); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `python benchmarks/run.py` already has it; be robust anyway
    sys.path.insert(0, str(HERE))
if importlib.util.find_spec("trio_pool") is None:  # not installed: use the working tree
    sys.path.insert(1, str(HERE.parent))

import _report  # noqa: E402
import _targets  # noqa: E402
from _common import Options, Result, format_table  # noqa: E402

# name -> module in benchmarks/, in the order they run.
BENCHMARKS: dict[str, str] = {
    "resource_pool": "resource_pool",
    "http": "http_pool",
    "http_memory": "http_memory",
    "http_agent": "http_agent",
}
DOCS = HERE.parent / "docs"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Run trio_pool's benchmarks and print a table per benchmark.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short run (the whole suite in about a minute)"
    )
    parser.add_argument(
        "--only",
        metavar="NAME",
        action="append",
        choices=list(BENCHMARKS),
        help="run only this benchmark (repeatable); see --list",
    )
    parser.add_argument(
        "--json", metavar="PATH", type=Path, help="also save all results as JSON to PATH"
    )
    parser.add_argument("--reps", metavar="N", type=int, help="override the number of repetitions")
    parser.add_argument(
        "--target-reps",
        metavar="N",
        type=int,
        help="repetitions of the http cells the targets compare (default: 5 full, 2 quick)",
    )
    parser.add_argument(
        "--cells",
        choices=["all", "targets"],
        default="all",
        help="the http cells to measure: all, or only those the targets compare",
    )
    parser.add_argument(
        "--from-json",
        metavar="PATH",
        type=Path,
        help="run nothing: read a saved run (for --check and --docs)",
    )
    parser.add_argument(
        "--server",
        choices=["auto", "nginx", "embedded"],
        default="auto",
        help="the http benchmark's server: nginx (when installed, the default) or embedded",
    )
    parser.add_argument(
        "--docs",
        action=argparse.BooleanOptionalAction,
        help="write the tables, the plot and the README's table from the results"
        " (default: yes for a full run of every cell)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="print every target, its measured paired ratio and met / not met",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 if a target is not met or a response was bad",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return parser


def _environment() -> dict[str, Any]:
    import trio

    import trio_pool

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "trio": trio.__version__,
        "trio_pool": trio_pool.__version__,
    }


def _check(report: dict[str, Any]) -> list[str]:
    """Print every target against ``report``; return those not met."""
    outcomes = _targets.evaluate(report["results"])
    print("\n== targets (_targets.py) ==")
    print(format_table(_targets.HEADER, [o.as_row() for o in outcomes]))
    return [f"target: {o.name} = {o.value:.2f} (goal {o.goal})" for o in outcomes if o.met is False]


def _finish(report: dict[str, Any], args: argparse.Namespace, write_docs: bool) -> list[str]:
    """--check, --docs and --json on a finished (or loaded) report; the targets not met."""
    not_met = _check(report) if args.check or args.strict else []
    if write_docs:
        for path in _report.write(report, DOCS):
            print(f"wrote {path}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"results saved to {args.json}")
    return not_met


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be >= 1")
    if args.target_reps is not None and args.target_reps < 1:
        parser.error("--target-reps must be >= 1")

    if args.list:
        for name, module_name in BENCHMARKS.items():
            try:
                title = importlib.import_module(module_name).TITLE
            except ImportError as exc:
                title = f"(unavailable: {exc})"
            print(f"{name:20} {title}")
        return 0

    if args.from_json is not None:
        loaded: dict[str, Any] = json.loads(args.from_json.read_text(encoding="utf-8"))
        not_met = _finish(loaded, args, bool(args.docs))
        return 1 if args.strict and not_met else 0

    write_docs = (not args.quick and args.cells == "all") if args.docs is None else args.docs
    options = Options(
        quick=args.quick,
        repetitions=args.reps,
        server=args.server,
        docs=DOCS if write_docs else None,
        target_repetitions=args.target_reps,
        cells=args.cells,
    )
    selected = args.only or list(BENCHMARKS)
    env = _environment()
    mode = "quick" if args.quick else "full"
    print(
        f"trio_pool {env['trio_pool']} benchmarks ({mode}) - {env['implementation']} "
        f"{env['python']}, trio {env['trio']}, {env['cpus']} CPUs, {env['platform']}"
    )
    if env["load_average"] is not None:
        load = ", ".join(f"{x:.2f}" for x in env["load_average"])
        print(f"load average before the run: {load} (anything near the CPU count means noise)")

    report: dict[str, Any] = {"environment": env, "mode": mode, "results": {}}
    missed: list[str] = []
    crashed: list[str] = []
    started = time.perf_counter()
    for name in selected:
        print(f"\n== {name} ==", flush=True)
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(BENCHMARKS[name])
            result: Result = module.run(options)
        except Exception:
            traceback.print_exc()
            crashed.append(name)
            report["results"][name] = {"error": traceback.format_exc()}
            continue
        elapsed = time.perf_counter() - t0
        print(module.TITLE)
        print(result.text)
        for failure in result.failures:
            print(f"MISSED: {failure}")
        print(f"({elapsed:.1f} s)", flush=True)
        missed += [f"{name}: {f}" for f in result.failures]
        report["results"][name] = {
            "data": result.data,
            "failures": result.failures,
            "seconds": elapsed,
        }

    total = time.perf_counter() - started
    report["seconds"] = total
    print(f"\ntotal {total:.1f} s; {len(missed)} target(s) missed; {len(crashed)} crashed")
    not_met = _finish(report, args, write_docs)
    if crashed or (args.strict and (missed or not_met)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
