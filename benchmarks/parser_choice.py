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
process, ``getrusage``) are shown too. A first line gives each parser's CPU per response
with no I/O at all (a kept parser reading a recorded nginx response), the most a parser
change could save per request. Bounded: each measurement is at most ``--window``
seconds and ``--requests`` requests (plus setup), so the run takes about cells x reps x
parsers x (window + setup): about 1.5 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import time
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


# What nginx sends for the 12-byte file (a fixed date): the shape every parser reads here.
NGINX_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 04 Dec 2026 14:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 12\r\n"
    b"Last-Modified: Fri, 04 Dec 2026 13:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "6751a0b0-c"\r\nAccept-Ranges: bytes\r\n\r\nhello world\n'
)


class _Request:
    """What the parser seam reads of a request."""

    method = b"GET"
    target = b"/"
    headers = ((b"host", b"127.0.0.1"),)
    upgrade = False


def _parse_once(name: str) -> Callable[[], None]:
    """One response of :data:`NGINX_RESPONSE` through a kept ``Parser``, head to end."""
    parser = _factory(name)(16384)
    request = _Request()

    def once() -> None:
        parser.expect(request)  # type: ignore[arg-type]
        parser.receive_data(NGINX_RESPONSE)
        head = parser.next_event()
        parser.next_event()
        parser.next_event()
        parser.finish(head)  # type: ignore[arg-type]

    return once


def _parse_only(parsers: list[str], reps: int) -> None:
    """CPU microseconds per response of each parser alone (no I/O), alternating."""
    runs = {name: _parse_once(name) for name in parsers}
    cpu: dict[str, list[float]] = {name: [] for name in parsers}
    count = 5000
    for rep in range(reps):
        for name in rotated(parsers, rep):
            once = runs[name]
            start = time.process_time()
            for _ in range(count):
                once()
            cpu[name].append((time.process_time() - start) / count * 1e6)
    cells = " ".join(f"{name}={statistics.median(cpu[name]):5.1f}" for name in parsers)
    ratios = " ".join(f"{name}/fast={_paired(cpu[name], cpu['fast']):.2f}x" for name in parsers)
    print(f"parse only, CPU us/response: {cells} | {ratios}", flush=True)


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
    _parse_only(parsers, max(options.reps, 5))
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
