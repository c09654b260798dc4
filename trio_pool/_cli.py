"""The ``trio-pool`` command line: ``trio-pool bench`` load-tests an HTTP server through a Pool.

Theory of operation
-------------------
:func:`main` parses and validates every argument before any I/O, into a frozen
:class:`BenchConfig`; a usage error is one line on stderr and exit status 2. Then one
``trio.run`` does the work:

1. Without a URL, :func:`embedded_server` starts :mod:`trio_pool._server` in a child process
   and reads back its port. The child sits in its own session (a terminal's Ctrl-C reaches
   only this process, which decides how to stop it) and exits when its stdin closes: the
   parent closes that pipe on the way out, and the kernel closes it if the parent dies, so
   the child can never outlive the benchmark.
2. One URL opens a :class:`~trio_pool.Pool` on its origin; several open a ``BalancedPool``
   over theirs. The URL's path and query are the request target.
3. ``--concurrency`` worker tasks share one budget: a countdown for ``-n``, a deadline for
   ``-d`` (requests still in flight at the deadline are cancelled and not counted). Each
   worker times its request with ``perf_counter`` and records the outcome in a
   :class:`Recorder`. Recording never awaits, so Trio needs no lock around it.
4. A connect error before any response means the server is unreachable: the load stops at
   once and the command fails with one line naming the root cause (exit status 2, as for a
   bad argument), instead of failing ``-n`` times.
5. The results are summarised (nearest-rank percentiles) and printed as a table or as JSON.
6. Ctrl-C (SIGINT) is received as a signal and cancels the run instead of raising
   ``KeyboardInterrupt`` in whichever task happens to be running: everything unwinds in
   order (load, pool, embedded server) and the exit status is 130.

A response with any status counts as a request; ``errors`` are requests that got no response
(connect, socket, protocol or timeout errors). So ``requests + errors`` is ``-n``, and the
status counts add up to ``requests``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import NoReturn, Protocol, TextIO
from urllib.parse import urlsplit

import attrs
import trio

import trio_pool

from ._errors import ConnectError, TrioPoolError
from .http._pool import Pool

if sys.version_info < (3, 11):  # pragma: no cover - trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup

__all__ = ["BenchConfig", "Summary", "embedded_server", "main"]

PROG = "trio-pool"

DEFAULT_CONNECTIONS = 10
DEFAULT_CONCURRENCY = 10
DEFAULT_REQUESTS = 10_000
DEFAULT_PIPELINING = 1
DEFAULT_METHOD = "GET"

#: How long the embedded server may take to start, and to stop before it is killed.
SERVER_START_TIMEOUT = 10.0
SERVER_STOP_GRACE = 2.0

_PROGRESS_INTERVAL = 0.2
_BAR_WIDTH = 24
# Put first on the embedded server's PYTHONPATH, so that the child imports this very copy of
# trio_pool, installed or not (a source checkout).
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 9110 section 5.6.2: a method is a token.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

_EPILOG = """\
requests vs errors: a response with any status is a request (see the status counts);
an error is a request that got no response at all. With -n, requests + errors = REQUESTS.

examples:
  trio-pool bench
      benchmark the embedded server (started on 127.0.0.1, stopped afterwards)
  python -m trio_pool bench -n 20000 -c 10 --concurrency 10
      the same, 20,000 requests over 10 connections from 10 tasks
  trio-pool bench http://127.0.0.1:8080/health -d 30 -c 50 --concurrency 200
      30 seconds against one server, 200 requests at a time over at most 50 connections
  trio-pool bench http://10.0.0.1:8080/ http://10.0.0.2:8080/ -p 4 --json
      balance over two servers, 4 pipelined requests per connection, JSON output
"""


# --------------------------------------------------------------------------- configuration


class UsageError(Exception):
    """A bad command line: reported as one line on stderr, exit status 2.

    Attributes:
        prog: The (sub)command the message is about, e.g. ``"trio-pool bench"``.
    """

    def __init__(self, message: str, prog: str = f"{PROG} bench") -> None:
        super().__init__(message)
        self.prog = prog


class BenchFailed(Exception):
    """The benchmark could not run: one line on stderr, exit status :attr:`status`.

    Attributes:
        status: 2 when the target cannot be reached at all (a bad URL, like a bad argument),
            1 when the run itself failed (no response came back, the embedded server failed).
    """

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


@attrs.frozen
class BenchConfig:
    """A validated ``bench`` command line."""

    #: Origins to benchmark; empty means "start the embedded server".
    origins: tuple[str, ...]
    #: The request target: the URLs' path and query.
    target: str
    connections: int
    #: Exactly one of ``requests`` and ``duration`` is set.
    requests: int | None
    duration: float | None
    concurrency: int
    pipelining: int
    method: str
    json: bool


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (the default adds the usage text)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)


def _integer(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _method(text: str) -> str:
    if not _TOKEN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not an HTTP method: {text!r}")
    return text


def _build_parser() -> _Parser:
    parser = _Parser(prog=PROG, description="trio_pool command-line tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = commands.add_parser(
        "bench",
        help="load-test an HTTP/1.1 server through a trio_pool Pool",
        description=(
            "Send HTTP/1.1 requests through a trio_pool Pool (one URL) or BalancedPool\n"
            "(several URLs with the same path) and report throughput and latency.\n"
            "Without a URL, an embedded server is started on 127.0.0.1 in a child process."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument(
        "urls", nargs="*", metavar="URL", help="http:// or https:// URL (default: embedded server)"
    )
    bench.add_argument(
        "-c",
        "--connections",
        type=_integer(0),
        default=DEFAULT_CONNECTIONS,
        help=f"max connections per origin; 0 = unlimited (default: {DEFAULT_CONNECTIONS})",
    )
    amount = bench.add_mutually_exclusive_group()
    amount.add_argument(
        "-n",
        "--requests",
        type=_integer(1),
        help=f"number of requests to send (default: {DEFAULT_REQUESTS})",
    )
    amount.add_argument(
        "-d", "--duration", type=_seconds, help="send requests for this many seconds instead"
    )
    bench.add_argument(
        "--concurrency",
        type=_integer(1),
        default=DEFAULT_CONCURRENCY,
        help=f"requests in flight at once (default: {DEFAULT_CONCURRENCY})",
    )
    bench.add_argument(
        "-p",
        "--pipelining",
        type=_integer(0),
        default=DEFAULT_PIPELINING,
        help=(
            "requests in flight per connection; 0 = a new connection per request "
            f"(default: {DEFAULT_PIPELINING})"
        ),
    )
    bench.add_argument(
        "-m",
        "--method",
        type=_method,
        default=DEFAULT_METHOD,
        help=f"request method (default: {DEFAULT_METHOD})",
    )
    bench.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the table"
    )
    return parser


def _split_url(url: str) -> tuple[str, str]:
    """Return ``(origin, target)`` for an http(s) URL, or raise :class:`UsageError`."""
    if not url or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UsageError(f"invalid URL {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"invalid URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UsageError(f"invalid URL {url!r}: the scheme must be http or https")
    host = parts.hostname
    if not host:
        raise UsageError(f"invalid URL {url!r}: no host")
    if parts.username is not None or parts.password is not None:
        raise UsageError(f"invalid URL {url!r}: credentials in URLs are not supported")
    if ":" in host:
        host = f"[{host}]"
    origin = f"{scheme}://{host}"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        origin += f":{port}"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return origin, target


def parse_args(argv: Sequence[str]) -> BenchConfig:
    """Validate a command line into a :class:`BenchConfig`.

    Args:
        argv: The arguments after the program name.

    Returns:
        The validated configuration.

    Raises:
        UsageError: Any bad argument; the message is one line.
        SystemExit: ``--help`` (status 0).
    """
    # parse_known_args: leftovers are reported against "bench", where argparse would name
    # the top-level program.
    args, unknown = _build_parser().parse_known_args(argv)
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")
    origins: list[str] = []
    targets: set[str] = set()
    for url in args.urls:
        origin, target = _split_url(url)
        if origin not in origins:
            origins.append(origin)
        targets.add(target)
    if len(targets) > 1:
        raise UsageError("several URLs must share one path and query (they are balanced)")
    if len(origins) > 1 and _balanced_pool_class() is None:
        raise UsageError("several URLs need trio_pool.BalancedPool, which this version lacks")
    return BenchConfig(
        origins=tuple(origins),
        target=targets.pop() if targets else "/",
        connections=args.connections,
        requests=None if args.duration is not None else (args.requests or DEFAULT_REQUESTS),
        duration=args.duration,
        concurrency=args.concurrency,
        pipelining=args.pipelining,
        method=args.method,
        json=args.json,
    )


# --------------------------------------------------------------------------- embedded server


@asynccontextmanager
async def embedded_server() -> AsyncIterator[str]:
    """Run :mod:`trio_pool._server` in a child process for the block; yield its origin.

    The child is stopped on the way out however the block ends: its stdin is closed (its
    signal to exit), and it is killed if it has not exited within :data:`SERVER_STOP_GRACE`.

    Raises:
        BenchFailed: The child did not report a port within :data:`SERVER_START_TIMEOUT`.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_PARENT, env.get("PYTHONPATH")]))
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_pool._server", "--host", "127.0.0.1", "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.move_on_after(SERVER_START_TIMEOUT):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(256)
                if not chunk:
                    break
                line += chunk
        fields = line.split()
        if len(fields) != 3 or fields[0] != b"listening" or not fields[2].isdigit():
            raise BenchFailed("the embedded server did not start")
        yield f"http://127.0.0.1:{int(fields[2])}"
    finally:
        # Shielded: the child must be stopped however the block is left, Ctrl-C included.
        with trio.CancelScope(shield=True):
            await _stop(process)


async def _stop(process: trio.Process) -> None:
    """Close the child's stdin (its cue to exit), wait for it, kill it if it lingers."""
    assert process.stdin is not None
    assert process.stdout is not None
    await process.stdin.aclose()
    with trio.move_on_after(SERVER_STOP_GRACE):
        await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
    await process.stdout.aclose()


# --------------------------------------------------------------------------- load generation


class _Response(Protocol):
    @property
    def status(self) -> int: ...


class _Dispatcher(Protocol):
    async def request(self, method: str, path: str) -> _Response: ...


_DispatcherFactory = Callable[..., AbstractAsyncContextManager[_Dispatcher]]


def _balanced_pool_class() -> _DispatcherFactory | None:
    """``trio_pool.BalancedPool``, or None in a version of the package without it."""
    # Looked up by name: BalancedPool is not part of every build yet, and the CLI must work
    # with one URL either way. parse_args refuses several URLs when this returns None.
    found: _DispatcherFactory | None = vars(trio_pool).get("BalancedPool")
    return found


def _open_dispatcher(
    origins: Sequence[str], config: BenchConfig
) -> AbstractAsyncContextManager[_Dispatcher]:
    if len(origins) == 1:
        return Pool(origins[0], connections=config.connections, pipelining=config.pipelining)
    balanced = _balanced_pool_class()
    assert balanced is not None, "parse_args accepts several URLs only with BalancedPool"
    return balanced(list(origins), connections=config.connections, pipelining=config.pipelining)


@attrs.define(eq=False)
class Recorder:
    """The outcomes of the requests, recorded as they finish."""

    latencies: list[float] = attrs.field(factory=list)
    statuses: Counter[int] = attrs.field(factory=Counter)
    errors: Counter[str] = attrs.field(factory=Counter)
    first_error: TrioPoolError | None = None
    #: Set when the load was stopped because the server cannot be reached.
    unreachable: ConnectError | None = None

    @property
    def finished(self) -> int:
        """Requests finished so far, with or without a response."""
        return len(self.latencies) + self.errors.total()


@attrs.define(eq=False)
class _Load:
    dispatcher: _Dispatcher
    config: BenchConfig
    recorder: Recorder
    scope: trio.CancelScope
    remaining: int | None

    def _take(self) -> bool:
        # The -d budget is enforced by the scope's deadline; only -n needs counting.
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True

    async def worker(self) -> None:
        recorder, method, target = self.recorder, self.config.method, self.config.target
        while self._take():
            started = time.perf_counter()
            try:
                response = await self.dispatcher.request(method, target)
            except ConnectError as exc:
                if not recorder.latencies and len(self.config.origins) <= 1:
                    recorder.unreachable = exc
                    self.scope.cancel()
                    return
                self._error(exc)
            except TrioPoolError as exc:
                self._error(exc)
            else:
                recorder.latencies.append(time.perf_counter() - started)
                recorder.statuses[response.status] += 1

    def _error(self, exc: TrioPoolError) -> None:
        self.recorder.errors[type(exc).__name__] += 1
        if self.recorder.first_error is None:
            self.recorder.first_error = exc


def progress_line(config: BenchConfig, done: int, errors: int, elapsed: float) -> str:
    """The live line: a bar filled by requests done (``-n``) or time spent (``-d``), then
    the counts and the rate so far. Not a checkpoint."""
    if config.requests is not None:
        fraction, goal = done / config.requests, f"/{config.requests:,}"
    else:
        assert config.duration is not None
        fraction, goal = elapsed / config.duration, ""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * _BAR_WIDTH)
    bar = "#" * filled + "." * (_BAR_WIDTH - filled)
    rate = done / elapsed if elapsed > 0 else 0.0
    return (
        f"[{bar}] {fraction:4.0%} {done:,}{goal} requests, {errors:,} errors, "
        f"{rate:,.0f} req/s, {elapsed:.1f} s"
    )


async def _show_progress(recorder: Recorder, config: BenchConfig, stream: TextIO) -> None:
    started = trio.current_time()
    try:
        while True:
            await trio.sleep(_PROGRESS_INTERVAL)
            line = progress_line(
                config,
                recorder.finished,
                sum(recorder.errors.values()),
                trio.current_time() - started,
            )
            # \r and "erase line": the bar redraws in place; it never scrolls the terminal.
            stream.write(f"\r\x1b[K{line}")
            stream.flush()
    finally:
        stream.write("\r\x1b[K")
        stream.flush()


async def run_load(
    dispatcher: _Dispatcher, config: BenchConfig, progress: TextIO | None
) -> Summary:
    """Send the configured requests through ``dispatcher``; return the summary.

    Args:
        dispatcher: An entered ``Pool`` or ``BalancedPool``.
        config: What to send, how many, how concurrently.
        progress: Where to draw a live progress line, or None.

    Raises:
        BenchFailed: The server could not be reached at all.
    """
    recorder = Recorder()
    scope = trio.CancelScope()
    load = _Load(dispatcher, config, recorder, scope, config.requests)
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        if progress is not None:
            nursery.start_soon(_show_progress, recorder, config, progress)
        if config.duration is not None:
            scope.deadline = trio.current_time() + config.duration
        with scope:
            async with trio.open_nursery() as workers:
                for _ in range(config.concurrency):
                    workers.start_soon(load.worker)
        nursery.cancel_scope.cancel()
    elapsed = time.perf_counter() - started
    if recorder.unreachable is not None:
        target = config.origins[0] if config.origins else "the embedded server"
        raise BenchFailed(f"cannot reach {target}: {_root_cause(recorder.unreachable)}", 2)
    if not recorder.latencies and recorder.first_error is not None:
        raise BenchFailed(f"no request got a response: {_describe(recorder.first_error)}")
    return Summary.of(recorder, elapsed)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    if cause is not None and str(cause) not in str(exc):  # messages often quote their cause
        text += f" ({type(cause).__name__}: {cause})"
    return _one_line(text)


def _root_cause(exc: BaseException) -> str:
    """What actually went wrong under a connect error, e.g. ``Connection refused``: the
    innermost causes (every attempt's, for a host with several addresses), each once."""
    reasons: list[str] = []
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        elif current.__cause__ is not None:
            pending.append(current.__cause__)
        else:
            reason = str(current)
            if isinstance(current, ssl.SSLError):
                pass  # its errno is OpenSSL's, not the C library's: keep its own message
            elif isinstance(current, OSError) and current.errno and current.errno > 0:
                reason = os.strerror(current.errno)  # not trio's "Error connecting to ..."
            elif isinstance(current, OSError) and current.strerror:
                reason = current.strerror  # a DNS failure: "Name or service not known"
            if reason not in reasons:
                reasons.append(reason)
    return _one_line("; ".join(reasons))


def _one_line(text: str) -> str:
    # Whatever the messages hold: this ends up as a one-line error or a table cell.
    return " ".join(text.split())


# --------------------------------------------------------------------------- results


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of a non-empty sorted sequence."""
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


@attrs.frozen
class Summary:
    """What ``bench`` reports; :meth:`to_json` is the ``--json`` object."""

    requests: int
    errors: int
    duration_s: float
    rps: float
    #: ``p50``, ``p90``, ``p99``, ``max`` in milliseconds; None when no response came back.
    latency_ms: dict[str, float | None]
    #: Responses by status code (as a string, since it is a JSON object key).
    status_counts: dict[str, int]
    #: Errors by exception class name, and the first one in full.
    error_counts: dict[str, int]
    first_error: str | None

    @classmethod
    def of(cls, recorder: Recorder, duration_s: float) -> Summary:
        """Summarise ``recorder`` over ``duration_s`` seconds."""
        ordered = sorted(recorder.latencies)
        latency: dict[str, float | None] = dict.fromkeys(("p50", "p90", "p99", "max"))
        if ordered:
            latency = {
                "p50": _percentile(ordered, 0.50) * 1000,
                "p90": _percentile(ordered, 0.90) * 1000,
                "p99": _percentile(ordered, 0.99) * 1000,
                "max": ordered[-1] * 1000,
            }
        return cls(
            requests=len(ordered),
            errors=recorder.errors.total(),
            duration_s=duration_s,
            rps=len(ordered) / duration_s if duration_s > 0 else 0.0,
            latency_ms=latency,
            status_counts={str(code): n for code, n in sorted(recorder.statuses.items())},
            error_counts=dict(recorder.errors.most_common()),
            first_error=(
                _describe(recorder.first_error) if recorder.first_error is not None else None
            ),
        )

    def to_json(self) -> dict[str, object]:
        """The ``--json`` output."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "duration_s": round(self.duration_s, 6),
            "rps": round(self.rps, 1),
            "latency_ms": {
                key: None if value is None else round(value, 3)
                for key, value in self.latency_ms.items()
            },
            "status_counts": self.status_counts,
        }

    def table(self, target: str, config: BenchConfig) -> str:
        """The human-readable report."""

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        amount = (
            f"{config.requests} requests"
            if config.requests is not None
            else f"{config.duration:g} s"
        )
        rows = [
            ("target", target),
            (
                "load",
                f"{config.method}, {amount}, concurrency {config.concurrency}, "
                f"connections {config.connections or 'unlimited'}, "
                f"pipelining {config.pipelining}",
            ),
            ("requests", str(self.requests)),
            ("errors", str(self.errors)),
            ("duration", f"{self.duration_s:.3f} s"),
            ("req/s", f"{self.rps:,.1f}"),
            ("latency ms", "  ".join(f"{k} {ms(v)}" for k, v in self.latency_ms.items())),
            (
                "statuses",
                ", ".join(f"{code}: {n}" for code, n in self.status_counts.items()) or "-",
            ),
        ]
        if self.error_counts:
            kinds = ", ".join(f"{kind}: {n}" for kind, n in self.error_counts.items())
            rows.append(("error kinds", kinds))
            rows.append(("first error", self.first_error or "-"))
        return "\n".join(f"{name:<12} {value}" for name, value in rows)


# --------------------------------------------------------------------------- entry point


async def _bench(config: BenchConfig, out: TextIO, err: TextIO) -> None:
    async with AsyncExitStack() as stack:
        if config.origins:
            origins: Sequence[str] = config.origins
            label = ", ".join(origin + config.target for origin in origins)
        else:
            origins = [await stack.enter_async_context(embedded_server())]
            label = f"{origins[0]}{config.target} (embedded server)"
        dispatcher = await stack.enter_async_context(_open_dispatcher(origins, config))
        summary = await run_load(dispatcher, config, err if err.isatty() else None)
    if config.json:
        out.write(json.dumps(summary.to_json()) + "\n")
    else:
        out.write(summary.table(label, config) + "\n")
    out.flush()


async def _interruptible_bench(config: BenchConfig, out: TextIO, err: TextIO) -> bool:
    """Run :func:`_bench`, turning Ctrl-C into a cancellation; return True if interrupted.

    A ``KeyboardInterrupt`` can be raised inside whichever task happens to run, the pool's
    own connection tasks included. A cancellation instead unwinds every task in order: the
    load stops, the pool is closed, the embedded server is stopped.
    """
    interrupted = False

    async def cancel_on_sigint(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
        nonlocal interrupted
        async for _ in signals:
            interrupted = True
            scope.cancel()
            return

    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_sigint, signals, nursery.cancel_scope)
            await _bench(config, out, err)
            nursery.cancel_scope.cancel()
    return interrupted


def _sole(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (Trio wraps what nurseries raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 when the benchmark failed, 2 for a bad command line or a server
        that cannot be reached, 130 when interrupted with Ctrl-C.
    """
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"{exc.prog}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    try:
        interrupted = trio.run(_interruptible_bench, config, sys.stdout, sys.stderr)
    except BaseException as exc:
        sole = _sole(exc)
        if isinstance(sole, BenchFailed):
            print(f"{PROG} bench: error: {sole}", file=sys.stderr)
            return sole.status
        # Ctrl-C before the signal receiver was installed, or after it was removed.
        interrupted = isinstance(sole, KeyboardInterrupt)
        if not interrupted:
            raise
    if interrupted:
        print(f"{PROG} bench: interrupted", file=sys.stderr)
        return 130
    return 0
