"""Load generation: worker tasks sending requests, closed-loop or on a schedule, recorded.

Theory of operation
-------------------
:func:`run_load` runs one phase (the warm-up, then the measured run) with its own
:class:`Recorder`. ``--concurrency`` worker tasks share one budget, kept by :class:`_Load`
(only its methods change it; every method runs in one Trio thread and never awaits while it
changes state, so no lock is needed):

* ``-n``: a countdown of requests to start.
* ``-d``: a timer task sets ``stopping`` at the deadline; workers then start nothing new, and
  requests in flight are finished and counted. Should one still be in flight ``--timeout``
  after the deadline, the phase is cut there and each such request counts as an error of kind
  ``timeout`` (it has run for at least ``--timeout``).
* ``--rate``: open-loop. Request *i* is due at ``start + i / rate``; a free worker takes the
  next slot, sleeps until it (if it is in the future), sends it, and measures its latency
  from the **scheduled** time, as wrk2 does: when the server stalls, the requests that should
  have gone out meanwhile count their wait, instead of the stall being hidden because fewer
  requests were sent (coordinated omission). ``--concurrency`` caps the requests in flight.
  With ``-d`` the schedule ends at the deadline, but every slot due before it is sent, however
  late (the cut at ``--timeout`` after the deadline still applies).

A response whose request took longer than ``--timeout`` (from when it was sent) is an error
of kind ``timeout``, not a request: the pool's own timeouts bound each phase of a request,
this bounds the whole. The recorder never awaits, so recording needs no lock either.

Stopping early: :meth:`Phase.interrupt` (Ctrl-C) cancels the phase at once; what finished is
kept and requests then in flight are not counted. A connect error before any response from a
single origin means the server is unreachable, and an ``InvalidArgumentError`` (a header or
body the pool refuses, nothing sent) would repeat for every request: either stops the phase at
once and the command fails with one line naming the cause.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import TextIO

import attrs
import trio

import trio_pool

from ._args import BenchConfig
from ._send import Sender

__all__ = ["Phase", "Recorder", "describe", "progress_line", "run_load"]

_PROGRESS_INTERVAL = 0.2
_BAR_WIDTH = 24
_TIMEOUTS = (
    trio_pool.ConnectTimeoutError,
    trio_pool.HeadersTimeoutError,
    trio_pool.BodyTimeoutError,
)
#: The error kind of a request over ``--timeout``.
TIMEOUT = "timeout"


def describe(exc: BaseException) -> str:
    """``Class: message (Cause: message)`` on one line."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    if cause is not None and str(cause) not in str(exc):  # messages often quote their cause
        text += f" ({type(cause).__name__}: {cause})"
    return " ".join(text.split())


@attrs.define(eq=False)
class Recorder:
    """The outcomes of one phase's requests (or of one upstream's), recorded as they end."""

    #: Seconds, per response (any status).
    latencies: list[float] = attrs.field(factory=list)
    statuses: Counter[int] = attrs.field(factory=Counter)
    #: Errors by kind: ``timeout``, or the exception's class name.
    errors: Counter[str] = attrs.field(factory=Counter)
    first_error: str | None = None
    #: Response body bytes.
    received: int = 0

    @property
    def finished(self) -> int:
        """Requests finished so far, with or without a response."""
        return len(self.latencies) + self.errors.total()

    def error(self, kind: str, text: str, count: int = 1) -> None:
        """Count ``count`` errors of ``kind``; ``text`` describes the first one."""
        self.errors[kind] += count
        if self.first_error is None:
            self.first_error = text


@attrs.define(eq=False)
class Phase:
    """A running phase: what Ctrl-C needs to stop it (:meth:`interrupt`)."""

    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    interrupted: bool = False

    def interrupt(self) -> None:
        """Stop the phase now; what finished so far is kept. Not a checkpoint."""
        self.interrupted = True
        self.scope.cancel()


@attrs.define(eq=False)
class _Load:
    """One phase's shared budget and schedule (see the module header); its workers and its
    deadline timer are the only tasks that change it."""

    send: Sender
    config: BenchConfig
    recorder: Recorder
    upstreams: Sequence[Recorder]
    phase: Phase
    remaining: int | None
    #: Seconds the phase sends for (``-d``, ``--warmup``); None = until ``remaining`` is 0.
    duration: float | None
    stopping: bool = False
    in_flight: int = 0
    #: Open-loop: the next slot, and the schedule's origin on both clocks.
    slot: int = 0
    trio_start: float = 0.0
    perf_start: float = 0.0
    #: Why the phase was stopped early: the server is unreachable, or the request is invalid.
    fatal: trio_pool.ConnectError | trio_pool.InvalidArgumentError | None = None

    def _take(self) -> bool:
        if self.stopping:
            return False
        if self.remaining is not None:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
        return True

    async def closed_loop(self) -> None:
        """A worker: send the next request as soon as the last one ended, while the budget
        lasts. A checkpoint."""
        send = self.send
        while self._take():
            self.in_flight += 1
            started = time.perf_counter()
            outcome = await send()
            self.in_flight -= 1
            self._record(started, started, *outcome)

    async def open_loop(self) -> None:
        """A worker: take the next slot of the schedule, wait until it is due, send it,
        while the schedule lasts. A checkpoint."""
        assert self.config.rate is not None
        interval = 1.0 / self.config.rate
        send = self.send
        # Not _take(): every slot due before the deadline is sent, late or not (its latency
        # then shows how late); the schedule itself ends with the phase.
        while self.remaining is None or self.remaining > 0:
            offset = self.slot * interval
            if self.duration is not None and offset >= self.duration:
                return
            self.slot += 1
            if self.remaining is not None:
                self.remaining -= 1
            due = self.trio_start + offset
            if due > trio.current_time():
                await trio.sleep_until(due)
            self.in_flight += 1
            started = time.perf_counter()
            outcome = await send()
            self.in_flight -= 1
            self._record(self.perf_start + offset, started, *outcome)

    def _record(
        self,
        scheduled: float,
        started: float,
        status: int,
        size: int,
        upstream: int,
        error: trio_pool.TrioPoolError | None,
    ) -> None:
        ended = time.perf_counter()
        if error is None and ended - started <= self.config.timeout:
            latency = ended - scheduled
            recorder = self.recorder
            recorder.latencies.append(latency)
            recorder.statuses[status] += 1
            recorder.received += size
            if upstream >= 0 and self.upstreams:
                recorder = self.upstreams[upstream]
                recorder.latencies.append(latency)
                recorder.statuses[status] += 1
                recorder.received += size
            return
        if isinstance(error, trio_pool.InvalidArgumentError) or (
            isinstance(error, trio_pool.ConnectError) and self._unreachable()
        ):
            self._stop(error)
            return
        if error is None:
            kind = TIMEOUT
            took = ended - started
            text = f"no response within --timeout {self.config.timeout:g} s ({took:.3f} s)"
        else:
            kind = TIMEOUT if isinstance(error, _TIMEOUTS) else type(error).__name__
            text = describe(error)
        self.recorder.error(kind, text)
        if upstream >= 0 and self.upstreams:
            self.upstreams[upstream].error(kind, text)

    def _unreachable(self) -> bool:
        """A connect error before any response from the only origin: it is down."""
        return not (self.recorder.latencies or self.upstreams)

    def _stop(self, error: trio_pool.ConnectError | trio_pool.InvalidArgumentError) -> None:
        # Every request would fail the same way: stop now, and say why once.
        if self.fatal is None:
            self.fatal = error
        self.phase.scope.cancel()

    async def deadline(self, duration: float) -> None:
        """The ``-d`` timer: stop new requests after ``duration``, and cut the phase
        ``--timeout`` later. A checkpoint; cancelled when the workers end first."""
        await trio.sleep(duration)
        self.stopping = True
        # Requests in flight now are finished and counted, each within --timeout (and the
        # pool's own timeouts already end most of them by then).
        await trio.sleep(self.config.timeout)
        cut = self.in_flight
        text = f"still in flight --timeout {self.config.timeout:g} s after the deadline"
        self.recorder.error(TIMEOUT, text, cut)
        self.phase.scope.cancel()


def progress_line(
    config: BenchConfig, done: int, errors: int, elapsed: float, *, warmup: bool = False
) -> str:
    """The live line: a bar filled by requests done (``-n``) or time spent (``-d``,
    ``--warmup``), then the counts and the rate so far. Not a checkpoint."""
    if warmup:
        fraction, goal = elapsed / config.warmup, ""
    elif config.requests is not None:
        fraction, goal = done / config.requests, f"/{config.requests:,}"
    else:
        assert config.duration is not None
        fraction, goal = elapsed / config.duration, ""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * _BAR_WIDTH)
    bar = "#" * filled + "." * (_BAR_WIDTH - filled)
    rate = done / elapsed if elapsed > 0 else 0.0
    return (
        f"{'warm-up ' if warmup else ''}[{bar}] {fraction:4.0%} {done:,}{goal} requests, "
        f"{errors:,} errors, {rate:,.0f} req/s, {elapsed:.1f} s"
    )


async def _show_progress(
    recorder: Recorder, config: BenchConfig, stream: TextIO, warmup: bool
) -> None:
    started = trio.current_time()
    try:
        while True:
            await trio.sleep(_PROGRESS_INTERVAL)
            elapsed = trio.current_time() - started
            errors = recorder.errors.total()
            line = progress_line(config, recorder.finished, errors, elapsed, warmup=warmup)
            # \r and "erase line": the bar redraws in place; it never scrolls the terminal.
            stream.write(f"\r\x1b[K{line}")
            stream.flush()
    finally:
        stream.write("\r\x1b[K")
        stream.flush()


@attrs.frozen
class LoadResult:
    """What one phase did."""

    recorder: Recorder
    #: Per upstream, in the order of the URLs (empty for a single origin).
    upstreams: tuple[Recorder, ...]
    #: Seconds from the first request to the end of the last one.
    elapsed: float
    interrupted: bool
    #: Set when the phase stopped because every request would fail (see ``_Load.fatal``).
    fatal: trio_pool.ConnectError | trio_pool.InvalidArgumentError | None


async def run_load(
    send: Sender,
    config: BenchConfig,
    phase: Phase,
    progress: TextIO | None,
    *,
    upstreams: int = 0,
    warmup: bool = False,
) -> LoadResult:
    """Run one phase of requests through ``send``. A checkpoint.

    Args:
        send: Sends one request (see :mod:`trio_pool._cli._send`).
        config: What to send, how many, how concurrently, at which rate.
        phase: Lets Ctrl-C stop this phase.
        progress: Where to draw a live progress line, or None.
        upstreams: Several upstreams to record one by one (0: report totals only).
        warmup: Run for ``config.warmup`` seconds instead of the configured amount.
    """
    recorder = Recorder()
    per_upstream = tuple(Recorder() for _ in range(upstreams))
    duration = config.warmup if warmup else config.duration
    remaining = None if warmup else config.requests
    load = _Load(send, config, recorder, per_upstream, phase, remaining, duration)
    load.trio_start, load.perf_start = trio.current_time(), time.perf_counter()
    worker = load.closed_loop if config.rate is None else load.open_loop
    async with trio.open_nursery() as nursery:
        if progress is not None:
            nursery.start_soon(_show_progress, recorder, config, progress, warmup)
        with phase.scope:
            async with trio.open_nursery() as workers:
                if duration is not None:
                    workers.start_soon(load.deadline, duration)
                async with trio.open_nursery() as senders:
                    for _ in range(config.concurrency):
                        senders.start_soon(worker)
                workers.cancel_scope.cancel()  # every worker is done: stop the timer
        nursery.cancel_scope.cancel()
    elapsed = time.perf_counter() - load.perf_start
    return LoadResult(recorder, per_upstream, elapsed, phase.interrupted, load.fatal)
