"""The issue's performance targets, as data, and how a results report is checked against them.

Theory of operation
-------------------
:data:`TARGETS` lists every goal (issue #16 and the earlier ones the suite already tracked).
A goal is either a :class:`Ratio` of two clients' req/s in one cell of the ``http`` benchmark
(the median of the per-repetition ratios: the two ran back to back in each repetition, so
the pairing cancels most of a busy machine's drift, see ``_common.paired_ratio``), or a
:class:`Bound` on one number another benchmark reports (CPU per request, bytes per queued
request). :func:`evaluate` reads a report as ``run.py --json`` writes it (``{"results": {name:
{"data": ...}}}``) and returns one :class:`Outcome` per goal and concurrency: measured, spread,
met or not (``None``: not measured in this run). Nothing here runs a benchmark; ``http_pool``
asks :func:`target_cells` which cells need the extra repetitions.

The goals are data: add one to :data:`TARGETS` and it is measured (its cells get the extra
repetitions), checked by ``run.py --check``, and shown in the docs' targets table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

from _clients import AIOHTTP, H11, HTTPX, HTTPX_AIOHTTP, HTTPX_TRIO_POOL, PIPELINED, POOL


@dataclass(frozen=True)
class Ratio:
    """``numerator``'s req/s over ``denominator``'s, in a (scheme, body) group, >= ``at_least``."""

    numerator: str
    denominator: str
    scheme: str
    body: str
    concurrencies: tuple[int, ...]
    at_least: float

    def name(self, concurrency: int) -> str:
        return f"{self.numerator} / {self.denominator}, {self.scheme} {self.body}, C={concurrency}"

    def goal(self) -> str:
        return f">= {self.at_least:g}x"


@dataclass(frozen=True)
class Bound:
    """A number from another benchmark's data, at most ``at_most`` (in ``unit``)."""

    label: str
    benchmark: str
    read: Callable[[dict[str, Any], int], list[float]]
    """(the benchmark's data, concurrency) -> the samples (their median is checked)."""
    concurrencies: tuple[int, ...]
    at_most: float
    unit: str

    def name(self, concurrency: int) -> str:
        return self.label if concurrency == 0 else f"{self.label}, C={concurrency}"

    def goal(self) -> str:
        return f"<= {self.at_most:g} {self.unit}"


Target = Ratio | Bound


def cell_key(scheme: str, body: str, concurrency: int, client: str) -> str:
    """How the http benchmark keys a cell's samples in its data."""
    return f"{scheme} {body} {concurrency} {client}"


def _pool_cpu(data: dict[str, Any], concurrency: int) -> list[float]:
    samples = data.get("samples", {}).get(cell_key("http", "12 B", concurrency, POOL), [])
    return [s["cpu_us"] for s in samples if s.get("completed")]


def _queued_bytes(data: dict[str, Any], _: int) -> list[float]:
    return [s["per_queued"] for s in data.get("samples", [])]


TARGETS: tuple[Target, ...] = (
    # issue #16: what users run, against the fastest asyncio client
    Ratio(POOL, AIOHTTP, "http", "12 B", (10, 100, 1000), 1.5),
    Ratio(PIPELINED, AIOHTTP, "http", "12 B", (10,), 2.0),
    Ratio(PIPELINED, AIOHTTP, "http", "12 B", (100, 1000), 2.5),
    Ratio(POOL, AIOHTTP, "https", "12 B", (10, 100), 1.5),
    Ratio(POOL, AIOHTTP, "https", "64 KiB", (10, 100), 1.0),
    Ratio(POOL, AIOHTTP, "http", "64 KiB", (10, 100), 1.3),
    Ratio(POOL, HTTPX, "http", "12 B", (1,), 4.0),
    Ratio(POOL, HTTPX, "http", "12 B", (10,), 10.0),
    Bound("Pool CPU per request, http 12 B", "http", _pool_cpu, (10, 100, 1000), 50.0, "µs"),
    Bound("bytes per queued request, 10,000 queued", "http_memory", _queued_bytes, (0,), 1024, "B"),
    # kept from before issue #16
    Ratio(POOL, H11, "http", "12 B", (1, 10, 100), 0.90),
    Ratio(HTTPX_TRIO_POOL, HTTPX, "http", "12 B", (10, 100), 5.0),
    Ratio(HTTPX_TRIO_POOL, HTTPX_AIOHTTP, "http", "12 B", (1, 10, 100), 0.8),
)


def target_cells() -> set[tuple[str, str, int, str]]:
    """The http cells the ratio targets compare: (scheme, body, concurrency, client)."""
    cells = set()
    for target in TARGETS:
        if isinstance(target, Ratio):
            for c in target.concurrencies:
                cells.add((target.scheme, target.body, c, target.numerator))
                cells.add((target.scheme, target.body, c, target.denominator))
    return cells


@dataclass(frozen=True)
class Outcome:
    name: str
    goal: str
    value: float | None
    """The paired ratio's median (or the bound's median); None if not measured."""
    spread: float | None
    """(max - min) / median of the per-repetition values."""
    samples: int
    met: bool | None

    def as_row(self) -> list[str]:
        value = "-" if self.value is None else f"{self.value:.2f}"
        spread = "-" if self.spread is None else f"{self.spread:.0%}"
        met = {True: "met", False: "NOT MET", None: "not measured"}[self.met]
        return [self.name, self.goal, value, spread, str(self.samples), met]


HEADER = ["target", "goal", "measured", "spread", "n", ""]


def _summary(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    middle = median(values)
    return middle, (max(values) - min(values)) / middle if middle else None


def _paired(data: dict[str, Any], target: Ratio, c: int) -> list[float]:
    samples = data.get("samples", {})
    tops = samples.get(cell_key(target.scheme, target.body, c, target.numerator), [])
    bottoms = samples.get(cell_key(target.scheme, target.body, c, target.denominator), [])
    return [
        top["rps"] / bottom["rps"]
        for top, bottom in zip(tops, bottoms, strict=False)
        if top["rps"] > 0 and bottom["rps"] > 0
    ]


def evaluate(results: dict[str, Any]) -> list[Outcome]:
    """Every target against ``results`` (``report["results"]`` of ``run.py --json``)."""
    outcomes = []
    for target in TARGETS:
        benchmark = "http" if isinstance(target, Ratio) else target.benchmark
        data = results.get(benchmark, {}).get("data", {})
        for c in target.concurrencies:
            if isinstance(target, Ratio):
                values = _paired(data, target, c)
                value, spread = _summary(values)
                met = None if value is None else value >= target.at_least
            else:
                values = target.read(data, c)
                value, spread = _summary(values)
                met = None if value is None else value <= target.at_most
            outcomes.append(Outcome(target.name(c), target.goal(), value, spread, len(values), met))
    return outcomes
