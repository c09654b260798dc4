"""The callers of the chaos soak: many tasks sending requests through one dispatcher, some
cancelled at random points, and the checks every run ends with.

Theory of operation
-------------------
:func:`run_load` starts ``callers`` tasks, each sending ``per_caller`` requests drawn from
its own ``random.Random`` (seeded from the run's seed and its number): ``request()`` or
``dispatch()`` (with a handler that may be async, abort or raise), ``stream()`` or
``pipeline()`` (read whole, or left early); GET/HEAD/PUT (idempotent) or POST / GET with
``idempotent=False`` (never to be sent twice); now and then a 1 MB upload. A request may
get a deadline of its own
(``move_on_after``), and a *canceller* task cancels the scope of a random running request
every so often, so cancellations land at every point of a request's life.

Each request ends with one outcome, tallied in :class:`Tally`: success (its body must be
the request's own), a stream left early, a cancellation, or the name of the
``TrioPoolError`` it raised. Anything else is a bug, collected apart: another exception
reaching a caller, a crossed body, a ``dispatch()`` handler called out of its protocol.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import attrs
import trio
import trio.testing
from _faulty_server import Fault, FaultyServer, is_own_body
from _helpers import assert_idle

from trio_pool import RequestOptions, TrioPoolError

__all__ = ["Load", "Tally", "assert_settled", "check_run", "open_fds", "run_load"]

_log = logging.getLogger("tests.chaos")


@attrs.define
class Load:
    """The shape of one run. Durations are in the clock's seconds (virtual in memory).

    Attributes:
        seed: every random choice of the callers derives from it.
        callers: concurrent caller tasks.
        per_caller: requests each caller sends.
        cancel_rate: share of requests given a random deadline of their own.
        cancel_within: the longest such deadline, and the longest pause between two
            cancellations by the canceller task.
        stream_rate: share of requests made with ``stream()`` or ``pipeline()`` (half of
            them left early).
    """

    seed: int
    callers: int
    per_caller: int
    cancel_rate: float = 0.1
    cancel_within: float = 1.0
    stream_rate: float = 0.25


@attrs.define
class Tally:
    """What reached the callers of one run."""

    requests: int = 0
    # One outcome per request: "ok", "left early" (a stream left before its body ended),
    # "cancelled" (its scope caught a cancellation), or the name of the error it raised.
    outcomes: Counter[str] = attrs.Factory(Counter)
    foreign: list[BaseException] = attrs.Factory(list)  # not a TrioPoolError: a bug
    crossed: list[str] = attrs.Factory(list)  # a body that was not the request's own
    non_idempotent: set[str] = attrs.Factory(set)  # ids that must never arrive twice

    def summary(self) -> str:
        return f"{self.requests} requests: {dict(self.outcomes.most_common())}"


def _check_body(tally: Tally, rid: str, body: bytes) -> None:
    if not is_own_body(rid, body):
        tally.crossed.append(f"{rid}: {body[:40]!r}...")


# Larger than loopback socket buffers take at once: a server that does not read it
# makes the client's write wait, or fail when the server closes.
_LARGE = b"x" * 1_000_000


async def _one(dispatcher: Any, load: Load, rng: random.Random, rid: str, tally: Tally) -> str:
    """Send request ``rid`` the way ``rng`` says; its outcome unless it raised."""
    body: bytes | AsyncIterator[bytes] | None
    method, idempotent, body = rng.choice(
        [("GET", None, None)] * 5
        + [("HEAD", None, None), ("PUT", None, b"put")]
        + [("POST", None, b"post"), ("POST", None, None)]
        + [("GET", False, None)]
    )
    if body is not None and rng.random() < 0.05:
        body = _LARGE
    how = rng.choices(
        ["request", "dispatch", "stream", "pipeline"],
        [0.8 - load.stream_rate, 0.2, *[0.5 * load.stream_rate] * 2],
    )[0]
    if how == "pipeline":  # full duplex, with a streaming body: never re-sent
        method, body = "POST", _streaming_body(rng.randrange(0, 4))
    if method == "POST" or idempotent is False:
        tally.non_idempotent.add(rid)
    options: dict[str, Any] = {"body": body, "idempotent": idempotent}
    if how == "request":
        response = await dispatcher.request(method, f"/{rid}", **options)
        _check_body(tally, rid, response.body)
    elif how == "dispatch":
        request = RequestOptions(method, f"/{rid}", **options)
        return await _dispatch(dispatcher, rng, rid, tally, request)
    else:
        leave_early = rng.random() < 0.5
        opener = dispatcher.stream if how == "stream" else dispatcher.pipeline
        async with opener(method, f"/{rid}", **options) as response:
            chunks = []
            async for chunk in response.body:
                chunks.append(chunk)
                if leave_early:
                    break
        if leave_early and chunks:
            return "left early"
        _check_body(tally, rid, b"".join(chunks))
    return "ok"


class _Boom(Exception):
    """What a handler raises on purpose (it is passed to its ``on_response_error``)."""


# The calls a handler may see, one letter each: on_request_start, on_response_start,
# on_response_data*, then on_response_end; or, instead of the rest, one on_response_error.
_HANDLER_PROTOCOL = re.compile(r"q(sd*e|(sd*)?x)")
# A handler method that fails is followed by on_response_error (API.md 1.3), and that
# includes an async on_response_end cancelled with its caller.
_ASYNC_HANDLER_PROTOCOL = re.compile(r"q(sd*e|(sd*e?)?x)")


@attrs.define(eq=False)
class _Handler:
    """A ``dispatch()`` handler that records its calls; it may be ``async`` (backpressure)
    and may abort its request, or raise, at the first call of a drawn kind."""

    asynchronous: bool
    strike: str | None  # the call to strike at: "q", "s" or "d" (see _HANDLER_PROTOCOL)
    abort: bool  # strike by aborting (else by raising)
    calls: list[str] = attrs.Factory(list)
    chunks: list[bytes] = attrs.Factory(list)
    error: BaseException | None = None

    def _call(self, letter: str, controller: Any) -> Awaitable[None] | None:
        self.calls.append(letter)
        if letter == self.strike:
            self.strike = None
            if not self.abort:
                raise _Boom(letter)
            controller.abort("chaos")
        return _backpressure() if self.asynchronous else None

    def on_request_start(self, controller: Any) -> Awaitable[None] | None:
        return self._call("q", controller)

    def on_response_start(self, controller: Any, *head: object) -> Awaitable[None] | None:
        return self._call("s", controller)

    def on_response_data(self, controller: Any, chunk: bytes) -> Awaitable[None] | None:
        self.chunks.append(chunk)
        return self._call("d", controller)

    def on_response_end(self, controller: Any, trailers: object) -> Awaitable[None] | None:
        return self._call("e", controller)

    def on_response_error(self, controller: Any, error: BaseException) -> None:
        self.calls.append("x")
        self.error = error


def _check_handler(tally: Tally, rid: str, handler: _Handler, expected: str | None) -> None:
    """The handler's calls were ``expected`` (None: in the protocol's order)."""
    calls = "".join(handler.calls)
    protocol = _ASYNC_HANDLER_PROTOCOL if handler.asynchronous else _HANDLER_PROTOCOL
    if calls != expected if expected is not None else not protocol.fullmatch(calls):
        tally.foreign.append(AssertionError(f"{rid}: handler calls {calls!r}, not {expected}"))


async def _backpressure() -> None:
    await trio.lowlevel.checkpoint()


async def _dispatch(
    dispatcher: Any, rng: random.Random, rid: str, tally: Tally, options: RequestOptions
) -> str:
    """``dispatch()`` with a :class:`_Handler`; its outcome. The handler must see its calls
    in the protocol's order, also when the caller is cancelled; what reaches its
    ``on_response_error`` must be a ``TrioPoolError`` or what it raised itself."""
    strike = rng.choice([None, None, "q", "s", "d"])
    handler = _Handler(rng.random() < 0.5, strike, rng.random() < 0.5)
    try:
        await dispatcher.dispatch(options, handler)
    except TrioPoolError:  # refused before it started (closed, no upstream): no handler call
        _check_handler(tally, rid, handler, "")
        raise
    except trio.Cancelled:  # the handler still hears of its end
        _check_handler(tally, rid, handler, None)
        raise
    _check_handler(tally, rid, handler, None)
    if handler.error is None:
        _check_body(tally, rid, b"".join(handler.chunks))
        return "ok"
    if not isinstance(handler.error, TrioPoolError | _Boom):
        tally.foreign.append(handler.error)
    return f"dispatch: {type(handler.error).__name__}"


async def _streaming_body(pieces: int) -> AsyncIterator[bytes]:
    for _ in range(pieces):
        await trio.lowlevel.checkpoint()
        yield b"piece"


async def _caller(
    dispatcher: Any,
    load: Load,
    number: int,
    tally: Tally,
    running: dict[str, trio.CancelScope],
) -> None:
    rng = random.Random(f"{load.seed}/caller/{number}")
    for index in range(load.per_caller):
        rid = f"c{number}r{index}"
        tally.requests += 1
        outcome = "cancelled"
        with trio.CancelScope() as scope:
            if rng.random() < load.cancel_rate:
                scope.deadline = trio.current_time() + rng.uniform(0, load.cancel_within)
            running[rid] = scope
            try:
                outcome = await _one(dispatcher, load, rng, rid, tally)
            except TrioPoolError as exc:
                outcome = type(exc).__name__
            except Exception as exc:
                outcome = f"foreign {type(exc).__name__}"
                tally.foreign.append(exc)
            finally:
                del running[rid]
        tally.outcomes[outcome] += 1


async def _canceller(load: Load, running: dict[str, trio.CancelScope]) -> None:
    rng = random.Random(f"{load.seed}/canceller")
    while True:
        # Waiting on the clock lands cancellations where every task waits for I/O (all
        # of them, on the autojump clock); spinning through scheduling rounds lands them
        # between any two steps of the callers.
        if rng.random() < 0.5:
            await trio.sleep(rng.uniform(0, load.cancel_within))
        else:
            for _ in range(rng.randrange(1, 50)):
                await trio.lowlevel.checkpoint()
        if running:
            running[rng.choice(sorted(running))].cancel()


async def run_load(dispatcher: Any, load: Load) -> Tally:
    """Run ``load`` through ``dispatcher`` (a ``Pool`` or ``BalancedPool``). A checkpoint."""
    tally = Tally()
    running: dict[str, trio.CancelScope] = {}
    async with trio.open_nursery() as outer:
        outer.start_soon(_canceller, load, running)
        async with trio.open_nursery() as callers:
            for number in range(load.callers):
                callers.start_soon(_caller, dispatcher, load, number, tally, running)
        outer.cancel_scope.cancel()
    return tally


async def assert_settled(dispatcher: Any, what: str) -> None:
    """``statistics()`` is back to idle: nothing pending, queued or running, and every
    open connection free, once the background tasks had their turn (a connection that
    is closing is still counted until its task ends)."""
    await trio.testing.wait_all_tasks_blocked()
    assert_idle(dispatcher, all_free=True, what=what)


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def check_run(what: str, tally: Tally, servers: list[FaultyServer]) -> None:
    """The checks on what reached the callers and the servers; logs the figures."""
    faults: Counter[Fault] = Counter()
    for server in servers:
        faults.update(server.faults)
    report = f"{what}: {tally.summary()}; faults { ({f.name: n for f, n in faults.items()}) }"
    _log.info("%s", report)
    assert not tally.foreign, f"{report}; not TrioPoolError: {tally.foreign!r}"
    assert not tally.crossed, f"{report}; crossed responses: {tally.crossed}"
    twice = {
        rid: n
        for server in servers
        for rid, n in server.arrivals.items()
        if n > 1 and rid in tally.non_idempotent
    }
    assert not twice, f"{report}; non-idempotent requests sent more than once: {twice}"
