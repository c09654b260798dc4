"""Failover of a ``BalancedPool`` request: an upstream that could not be connected to is
replaced by the next one (API.md 6, ``failover=True``).

Theory of operation
-------------------
A request is sent through :func:`fail_over`, which asks the BalancedPool for an upstream
(``route(tried)``), runs ``send`` on its Pool and, when that raises a ``ConnectError``
(``ConnectTimeoutError`` and ``ProxyError`` included), asks again with that upstream added
to ``tried``: every upstream is tried at most once per request. It stops when

* an attempt succeeds or fails with any other error (that error is the caller's);
* no untried capable upstream is left (``route`` returns None), or the caller's effective
  Trio deadline has passed: the last ``ConnectError`` is raised, each earlier one named in
  a note on it (``__notes__``; their objects are in :attr:`FailoverNotes.errors`);
* the caller is cancelled: ``Cancelled`` goes through untouched. Each attempt releases its
  upstream in its own ``async with`` (``route``'s), so nothing is left counted.

Why a ``ConnectError`` is safe to re-send anywhere, body included: it means no byte of this
request was written on the connection that failed. A ``Pool`` only writes a request again
(after a stale keep-alive connection failed, API.md 1.6) when its body can be replayed, so
a one-shot body (a generator, a file) reaching a ``ConnectError`` was never consumed, and a
body that was consumed is replayable. Any other error (``SocketError``, a timeout after the
head went out) may follow a partly sent request and is never failed over.

``dispatch()`` (and so a ``compose()``-d BalancedPool, whose interceptors all dispatch) fails
over in :func:`dispatch_failing_over` through a :class:`Relay`: the caller's handler sees
one request, whatever the attempts. The relay passes on ``on_request_start`` once (with a
:class:`_RelayController` that always acts on the current attempt), swallows an attempt's
``ConnectError`` (that attempt wrote nothing and sent no response event), and passes
everything else on; when no upstream is left, the handler gets the last ``ConnectError``
(earlier ones noted) as its one ``on_response_error``.

Only the calling task's own state lives here; nothing is shared between requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import trio

from .._errors import ConnectError, TrioPoolError
from ._dispatch import Controller, Handler, call, tell_cancelled, tell_unrouted
from ._models import RequestOptions

if TYPE_CHECKING:
    from ._headers import Headers
    from ._pool import Pool

__all__ = ["Relay", "Route", "dispatch_failing_over", "fail_over", "failing_over"]

T = TypeVar("T")

Route = Callable[[list[str]], AbstractAsyncContextManager["tuple[str, Pool] | None"]]
"""``route(tried)``: ``async with`` an (origin, Pool) not in ``tried``, or None if none is
left; leaving releases it."""


def _note(error: BaseException, note: str) -> None:
    """``error.add_note(note)``, also on Python 3.10 (``__notes__`` by hand there)."""
    notes = getattr(error, "__notes__", None)
    if not isinstance(notes, list):
        notes = []
        error.__notes__ = notes  # type: ignore[attr-defined]
    notes.append(note)


def _give_up(errors: list[tuple[str, ConnectError]]) -> ConnectError:
    """The error of the last attempt, with the earlier ones noted on it."""
    origin, last = errors[-1]
    for earlier_origin, earlier in errors[:-1]:
        _note(last, f"failover: {earlier_origin} failed first: {earlier!r}")
    if len(errors) > 1:
        _note(last, f"failover: {len(errors)} upstreams tried, the last {origin}")
    return last


def _past_deadline() -> bool:
    return trio.current_effective_deadline() <= trio.current_time()


async def fail_over(
    route: Route, send: Callable[[Pool], Awaitable[T]], errors: list[tuple[str, ConnectError]]
) -> T:
    """Run ``send`` on an untried upstream's Pool after the failed attempts in ``errors``
    ((origin, error) pairs, at least one; the caller made the first attempt itself, on its
    hot path), failing over again on ``ConnectError`` (see the module docstring). A
    checkpoint when it sends.

    Raises:
        ConnectError: every capable upstream failed to connect (the last one's error).
        Whatever ``send`` raises otherwise.
    """
    while True:
        if _past_deadline():
            raise _give_up(errors)
        async with route([origin for origin, _ in errors]) as routed:
            if routed is None:
                raise _give_up(errors)
            origin, pool = routed
            try:
                return await send(pool)
            except ConnectError as exc:
                errors.append((origin, exc))


@asynccontextmanager
async def failing_over(
    route: Route, enter: Callable[[Pool], AbstractAsyncContextManager[T]]
) -> AsyncIterator[T]:
    """``async with`` ``enter(pool)`` on an upstream, failing over while *entering* raises
    ``ConnectError`` (a stream's response head, an upgrade's); once entered, the block's
    errors are the caller's. Entering is a checkpoint.

    Raises:
        Like :func:`fail_over`.
    """
    tried: list[str] = []
    errors: list[tuple[str, ConnectError]] = []
    while True:
        async with route(tried) as routed:
            if routed is None:
                raise _give_up(errors)
            origin, pool = routed
            async with AsyncExitStack() as stack:
                try:
                    value = await stack.enter_async_context(enter(pool))
                except ConnectError as exc:
                    errors.append((origin, exc))
                    tried.append(origin)
                else:
                    yield value  # the block's own errors are not caught here
                    return
        if _past_deadline():
            raise _give_up(errors)


class _RelayController(Controller):
    """The controller the caller's handler holds across attempts: it acts on the current
    attempt's controller (an abort reaches the attempt under way)."""

    __slots__ = ("current",)

    def __init__(self) -> None:  # no request of its own: see ``current``
        self.current: Controller | None = None

    @property
    def aborted(self) -> bool:
        return self.current is not None and self.current.aborted

    @property
    def origin(self) -> str | None:
        return None if self.current is None else self.current.origin

    def abort(self, reason: object = None) -> None:
        if self.current is not None:
            self.current.abort(reason)


class Relay:
    """A handler in front of the caller's, for every attempt (see the module docstring)."""

    __slots__ = ("_inner", "_responded", "controller", "failed", "started")

    def __init__(self, inner: Handler) -> None:
        self._inner = inner
        self.controller = _RelayController()
        self.started = self._responded = False  # started: the handler heard on_request_start
        self.failed: ConnectError | None = None  # the current attempt's, if it could not connect

    @property
    def inner(self) -> Handler:
        """The caller's handler."""
        return self._inner

    def next_attempt(self) -> None:
        """Forget the last attempt's ``ConnectError`` (it is in the caller's list)."""
        self.failed = None

    def on_request_start(self, controller: Controller) -> object:
        self.controller.current = controller
        if self.started:
            return None  # a later attempt of the request the handler already knows
        self.started = True
        return self._inner.on_request_start(self.controller)

    def on_response_start(
        self, controller: Controller, status: int, headers: Headers, reason: str
    ) -> object:
        self._responded = True
        return self._inner.on_response_start(self.controller, status, headers, reason)

    def on_response_data(self, controller: Controller, chunk: bytes) -> object:
        return self._inner.on_response_data(self.controller, chunk)

    def on_response_end(self, controller: Controller, trailers: Headers) -> object:
        return self._inner.on_response_end(self.controller, trailers)

    def on_response_error(self, controller: Controller, error: BaseException) -> object:
        if isinstance(error, ConnectError) and not self._responded:
            self.failed = error  # nothing was written: the next upstream may take it
            return None
        return self._inner.on_response_error(self.controller, error)


async def dispatch_failing_over(route: Route, options: RequestOptions, handler: Handler) -> None:
    """``dispatch(options, handler)`` on an upstream, failing over while an attempt cannot
    connect (see the module docstring). A checkpoint. Like ``Pool.dispatch``, it reports
    failures to ``handler`` and returns."""
    relay = Relay(handler)
    tried: list[str] = []
    errors: list[tuple[str, ConnectError]] = []
    refused: TrioPoolError | None = None  # a later upstream's Pool that no longer takes requests
    while True:
        try:
            attempt = route(tried)
            routed = await attempt.__aenter__()
        except trio.Cancelled:
            if not tried:  # cancelled while queued for the first upstream: nothing started
                await tell_unrouted(handler)
            raise
        try:
            if routed is None:
                break
            origin, pool = routed
            relay.next_attempt()
            try:
                await pool.dispatch(options, relay)
            except TrioPoolError as exc:
                # Refused before it started (that Pool is closing: removed, or the
                # BalancedPool ends). The first attempt's refusal is the caller's, as without
                # failover; a later one's handler has heard on_request_start already.
                if not relay.started:
                    raise
                refused = exc
            except BaseException:
                # Cancelled (or worse) after the relay swallowed this attempt's ConnectError
                # (a Pool tells a cancelled request's error as its outcome): the handler
                # must still hear of its end.
                if relay.failed is not None:
                    await tell_cancelled(handler, relay.controller, relay.failed)
                raise
            else:
                if relay.failed is None:
                    return
                errors.append((origin, relay.failed))
            tried.append(origin)
        finally:
            await attempt.__aexit__(None, None, None)
        if _past_deadline():
            break
    # Not empty-handed: the first route waits for an upstream (or raises), so one was tried.
    assert errors or refused is not None
    error = _give_up(errors) if errors else refused
    await call(handler.on_response_error, relay.controller, error)
