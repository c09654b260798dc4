"""The ``trio-pool`` entry point: parse, run the benchmark, print, choose the exit status.

Theory of operation
-------------------
:func:`main` parses and validates every argument before any I/O (:mod:`._args`); a usage
error is one line on stderr and exit status 2, and no command at all prints the usage. Then
one ``trio.run`` does the work:

1. Without a URL, the embedded server starts in a child process (:mod:`._target`).
2. One URL opens a ``Pool``, several a ``BalancedPool`` (:mod:`._send`).
3. ``--warmup`` seconds of load, not counted; then the measured phase (:mod:`._load`),
   between two CPU samples of this process and of the embedded server.
4. The summary is printed as a table or as JSON (:mod:`._report`).

Ctrl-C (SIGINT) is received as a signal, never as ``KeyboardInterrupt`` in whichever task
happens to run. The first one stops the current phase (:class:`_Control` owns which phase
that is); the report of what ran is printed and the exit status is 130. A second one cancels
everything at once (the pool and the embedded server still close in order).

Exit status: 0 done; 1 the run failed (no response at all, the embedded server did not
start); 2 a bad command line or an unreachable server; 130 interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import TextIO

import attrs
import trio

import trio_pool

from ._args import PROG, BenchConfig, UsageError, build_parser, parse_args
from ._load import LoadResult, Phase, describe, run_load
from ._report import Summary
from ._send import open_dispatcher, sender
from ._target import CpuMeter, ServerFailed, embedded_server

if sys.version_info < (3, 11):  # pragma: no cover - trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup

__all__ = ["main"]


class BenchFailed(Exception):
    """The benchmark could not run: one line on stderr, exit status :attr:`status`.

    Attributes:
        status: 2 when the target cannot be reached at all (a bad URL, like a bad argument),
            1 when the run itself failed (no response came back, the embedded server failed).
    """

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


@attrs.define(eq=False)
class _Control:
    """Which phase Ctrl-C stops; set only by :func:`_bench` (phases) and the signal task."""

    phase: Phase | None = None
    interrupted: bool = False

    def start(self) -> Phase:
        """A new phase, stopped at once if Ctrl-C came before it. Not a checkpoint."""
        self.phase = Phase()
        if self.interrupted:
            self.phase.interrupt()
        return self.phase

    def interrupt(self) -> None:
        self.interrupted = True
        if self.phase is not None:
            self.phase.interrupt()


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
    return " ".join("; ".join(reasons).split())


async def _measure(
    config: BenchConfig,
    control: _Control,
    origins: Sequence[str],
    server_pid: int | None,
    err: TextIO,
) -> tuple[LoadResult, tuple[float, float | None]]:
    progress = err if err.isatty() else None
    balanced = len(origins) > 1
    async with open_dispatcher(origins, config) as dispatcher:
        send = sender(dispatcher, config, balanced=balanced)
        upstreams = len(origins) if balanced else 0
        if config.warmup > 0:
            warm = await run_load(
                send, config, control.start(), progress, upstreams=upstreams, warmup=True
            )
            _check_reachable(warm, origins)
        meter = CpuMeter(server_pid)
        meter.start()
        result = await run_load(send, config, control.start(), progress, upstreams=upstreams)
        meter.stop()
    _check_reachable(result, origins)
    if not result.recorder.latencies and not result.interrupted:
        first = result.recorder.first_error
        if first is not None:
            raise BenchFailed(f"no request got a response: {first}")
    return result, (meter.client, meter.server)


def _check_reachable(result: LoadResult, origins: Sequence[str]) -> None:
    if isinstance(result.fatal, trio_pool.InvalidArgumentError):
        raise BenchFailed(describe(result.fatal), 2)
    if result.fatal is not None:
        raise BenchFailed(f"cannot reach {origins[0]}: {_root_cause(result.fatal)}", 2)


async def _bench(config: BenchConfig, control: _Control, out: TextIO, err: TextIO) -> None:
    async with AsyncExitStack() as stack:
        server_pid = None
        if config.origins:
            origins: Sequence[str] = config.origins
            label = ", ".join(origin + config.target for origin in origins)
        else:
            server = await stack.enter_async_context(embedded_server())
            origins, server_pid = [server.origin], server.pid
            label = f"{server.origin}{config.target} (embedded server)"
        result, cpu = await _measure(config, control, origins, server_pid, err)
    summary = Summary.of(config, result, [origin + config.target for origin in origins], cpu)
    if config.json:
        out.write(json.dumps(summary.to_json()) + "\n")
    else:
        out.write(summary.table(label) + "\n")
    out.flush()


async def _interruptible_bench(config: BenchConfig, out: TextIO, err: TextIO) -> bool:
    """Run :func:`_bench` with Ctrl-C handled (see the module header); return True if it
    was interrupted."""
    control = _Control()

    async def on_sigint(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
        async for _ in signals:
            if control.interrupted:
                scope.cancel()  # the second Ctrl-C: stop everything now
                return
            control.interrupt()

    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(on_sigint, signals, nursery.cancel_scope)
            await _bench(config, control, out, err)
            nursery.cancel_scope.cancel()
    return control.interrupted


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
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        build_parser().print_help()
        return 0
    try:
        config = parse_args(argv)
    except UsageError as exc:
        print(f"{exc.prog}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    try:
        interrupted = trio.run(_interruptible_bench, config, sys.stdout, sys.stderr)
    except BaseException as exc:
        sole = _sole(exc)
        if isinstance(sole, (BenchFailed, ServerFailed)):
            print(f"{PROG} bench: error: {sole}", file=sys.stderr)
            return sole.status if isinstance(sole, BenchFailed) else 1
        # Ctrl-C before the signal receiver was installed, or after it was removed.
        interrupted = isinstance(sole, KeyboardInterrupt)
        if not interrupted:
            raise
    if interrupted:
        print(f"{PROG} bench: interrupted", file=sys.stderr)
        return 130
    return 0
