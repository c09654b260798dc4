"""Pool req/s by response parser: h11, the pure-Python fast reader, and an httptools one.

Usage::

    PYTHONPATH=. python benchmarks/parser_choice.py [--reps 3] [--window 1.0]
        [--requests 2000] [--concurrency 1 10 100] [--sizes 12 65536]

Issue #16 admits an optional httptools path only if it beats the pure-Python one by more than
10 % at pool level. This measures exactly that: ``Pool`` GETs against nginx (``_servers``,
plain http, loopback), the same process and the same request writer for every parser; only
the response parser of each connection differs (the connection's ``Parser`` is built through
the factory :func:`_choose` installs):

- ``h11``: every response through h11 (what ``TRIO_POOL_H11_ONLY=1`` does to responses);
- ``fast``: the library's default, the strict pure-Python reader (``_fastparse.py``);
- ``httptools``: the prototype of ``_httptools_reader.py`` (llhttp parses the head, same
  contract); skipped, with a note, when httptools is not importable.

For each (body, concurrency) cell a repetition measures the parsers back to back in a rotating
order (paired, alternating: a busy spell on the shared machine hits all of them); a ratio is
the median of the per-repetition ratios of req/s, and CPU microseconds per request (this
process, ``getrusage``) are shown too. Bounded: each measurement is at most ``--window``
seconds and ``--requests`` requests (plus setup), so the run takes about cells x reps x
parsers x (window + setup): about 1.5 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import _clients
import _servers
from _clients import POOL, Sample, Target
from _common import rotated

from trio_pool.http import _connection
from trio_pool.http._parser import Parser

PARSERS = ("h11", "fast", "httptools")
BODIES = {12: _servers.SMALL_PATH, 65536: _servers.LARGE_PATH}
WARM = 2
_SEAM = "Parser"
"""The name ``_connection`` builds each connection's parser by (the class, or a factory)."""


def _factory(name: str) -> Callable[[int], Parser]:
    """A ``Parser(max_head)`` that reads responses with the parser called ``name``."""
    if name == "h11":
        return lambda max_head: Parser(max_head, h11_only=True)
    if name == "fast":
        return lambda max_head: Parser(max_head, h11_only=False)
    from _httptools_reader import HttptoolsReader

    def httptools_parser(max_head: int) -> Parser:
        parser = Parser(max_head, h11_only=False)
        parser._fast = HttptoolsReader(max_head)  # the seam's one reader, swapped
        return parser

    return httptools_parser


@contextmanager
def _choose(name: str) -> Iterator[None]:
    """Connections opened inside build their parser with :func:`_factory` ``(name)``."""
    saved = getattr(_connection, _SEAM)
    setattr(_connection, _SEAM, _factory(name))
    try:
        yield
    finally:
        setattr(_connection, _SEAM, saved)


def _measure(name: str, target: Target, concurrency: int, requests: int, window: float) -> Sample:
    with _choose(name):
        return _clients._measure_here(POOL, target, concurrency, requests, WARM, window)


def _paired(numerators: list[float], denominators: list[float]) -> float:
    pairs = [n / d for n, d in zip(numerators, denominators, strict=True) if n > 0 and d > 0]
    return statistics.median(pairs) if pairs else math.nan


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--reps", type=int, default=3)
    args.add_argument("--window", type=float, default=1.0)
    args.add_argument("--requests", type=int, default=2000)
    args.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 100])
    args.add_argument("--sizes", type=int, nargs="+", choices=sorted(BODIES), default=[12, 65536])
    options = args.parse_args()
    parsers = list(PARSERS)
    if importlib.util.find_spec("httptools") is None:
        parsers.remove("httptools")
        print("httptools: skipped (not importable; pip install httptools)")
    _servers.raise_fd_limit()
    with _servers.start("auto") as server:
        print(f"server: {server.kind}; Pool GET req/s (CPU us/req), medians of {options.reps}")
        for size in options.sizes:
            for concurrency in options.concurrency:
                target = Target(server.origins("http"), BODIES[size], size, None, server.pids)
                rps: dict[str, list[float]] = {name: [] for name in parsers}
                cpu: dict[str, list[float]] = {name: [] for name in parsers}
                for rep in range(options.reps):
                    for name in rotated(parsers, rep):
                        sample = _measure(
                            name, target, concurrency, options.requests, options.window
                        )
                        ok = sample.completed and not sample.errors
                        rps[name].append(sample.rps if ok else 0.0)
                        cpu[name].append(sample.cpu_us if ok else math.nan)
                cells = " ".join(
                    f"{name}={statistics.median(rps[name]):7.0f}"
                    f" ({statistics.median(cpu[name]):5.1f})"
                    for name in parsers
                )
                ratios = f"fast/h11={_paired(rps['fast'], rps['h11']):.2f}x"
                if "httptools" in rps:
                    ratios += f" httptools/fast={_paired(rps['httptools'], rps['fast']):.2f}x"
                    ratios += " cpu httptools/fast="
                    ratios += f"{_paired(cpu['httptools'], cpu['fast']):.2f}x"
                print(f"{size:>6} B C={concurrency:<4} {cells} | {ratios}", flush=True)


if __name__ == "__main__":
    main()
