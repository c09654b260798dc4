"""Shared plumbing for the benchmark modules: options, results, timing and table helpers.

A benchmark module (``benchmarks/<name>.py``, registered in ``run.py``'s ``BENCHMARKS``)
exposes::

    TITLE: str                       # one line, shown by ``run.py --list``
    def run(options: Options) -> Result

``run`` is synchronous (it calls ``trio.run`` itself, or starts whatever processes and event
loops it needs), bounds every loop by a count, and returns a :class:`Result`: the text to
print, a JSON-serialisable ``data`` dict, and the list of targets it missed.
"""

from __future__ import annotations

import gc
import resource
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    """What the user asked for on the command line."""

    quick: bool = False
    """A short run (a smoke test: the whole suite in one to two minutes)."""
    repetitions: int | None = None
    """Override the module's default number of repetitions (``--reps``)."""
    server: str = "auto"
    """The HTTP benchmark's server: ``"nginx"``, ``"embedded"`` or ``"auto"`` (``--server``)."""
    docs: Path | None = None
    """Write the HTTP results' table and plot into this docs directory (``--docs``)."""
    target_repetitions: int | None = None
    """Override the repetitions of the cells the targets compare (``--target-reps``)."""
    cells: str = "all"
    """``"targets"``: the http benchmark measures only the cells the targets compare."""

    def reps(self, quick: int, full: int) -> int:
        """The repetition count: ``--reps`` if given, else the module's default."""
        if self.repetitions is not None:
            return self.repetitions
        return quick if self.quick else full

    def target_reps(self, quick: int, full: int) -> int:
        """The target cells' repetition count: ``--target-reps`` if given, else the default."""
        if self.target_repetitions is not None:
            return self.target_repetitions
        return quick if self.quick else full


@dataclass
class Result:
    """What one benchmark module reports."""

    name: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    """Targets missed (e.g. "ratio 2.4x > 2.0x") and bad responses; ``run.py --strict``
    exits 1 if any."""


now = time.perf_counter


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Collect, then keep the cyclic GC off while timing (as ``timeit`` does)."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads (``getrusage``: microsecond
    resolution, where ``os.times()`` counts clock ticks)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def print_rounds(rps: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
    """One line per variant: median req/s and CPU µs per request, and each round's req/s."""
    for name in rps:
        print(
            f"{name:>9}: {statistics.median(rps[name]):8.0f} req/s,"
            f" {statistics.median(cpu[name]):6.1f} us CPU/request"
            f"  (rounds: {', '.join(f'{r:.0f}' for r in rps[name])})"
        )


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median of the per-repetition ratios ``numerators[i] / denominators[i]``.

    Samples of one repetition ran back to back, so pairing them cancels most of the drift
    a busy machine adds across a run; more robust than ``median(num) / median(den)``.
    """
    return median([n / d for n, d in zip(numerators, denominators, strict=True)])


def rotated(items: Sequence[T], n: int) -> list[T]:
    """``items`` rotated left by ``n``: alternates which variant runs first in each rep."""
    k = n % len(items)
    return [*items[k:], *items[:k]]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [cells[0].ljust(widths[0])]
        out += [cell.rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f}"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2f}x"
