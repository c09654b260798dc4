"""``interceptors.retry()``: send a request again after a retryable status or error.

Theory of operation
-------------------
One :class:`_Attempts` handler serves every attempt of a request, in the caller's task. At
each attempt's head (or error) it decides, synchronously, whether there will be another:

* the method may be retried (in ``methods``, or the request says ``idempotent=True``);
* attempts are left (``max_retries`` retries after the first);
* a status in ``status_codes``, whose body can be sent again (the server has read it), or
  an error in ``errors``: any of them if the body can be sent again, else only a
  ``ConnectError`` (nothing was sent);
* the wait — ``Retry-After`` (seconds or an HTTP date) if the response has one and
  ``retry_after`` is on, else exponential backoff with full jitter, uniform in
  ``[0, min(max_timeout, min_timeout * timeout_factor ** (retry - 1))]``, both capped at
  ``max_timeout`` — ends before the caller's effective Trio deadline
  (``trio.current_effective_deadline()``): a retry that could not finish its wait is not
  started, and the caller gets the last response, or the last error with a note counting
  the attempts.

Each attempt is dispatched with ``RequestOptions.attempt`` counting up from the request's
own (1, 2, ...), so each one's ``"request_end"`` trace says which attempt it was.

A response that will be retried is *discarded* (``_relay.Discard``: read to its end if short,
else its connection is closed) and never reaches the outer handler; the outer handler hears
``on_request_start`` once, then the response or the error it is meant to see. Between
attempts the caller's task sleeps (``trio.sleep``); cancelled there, the outer handler is
told (``on_response_error``) and the cancellation propagates. Only this task changes an
``_Attempts``.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING

import attrs
import trio

from .._errors import (
    ConnectError,
    ConnectTimeoutError,
    HeadersTimeoutError,
    InvalidArgumentError,
    SocketError,
    TrioPoolError,
)
from ..http._chain import Settles, offer_request_level
from ..http._dispatch import call, start_call
from ._relay import Discard, Relay, between
from ._replay import readable_again, replay_of

if TYPE_CHECKING:
    from ..http._chain import Send
    from ..http._dispatch import Controller, DispatchFunction, Handler, Interceptor
    from ..http._headers import Headers
    from ..http._models import RequestOptions, Response

__all__ = ["add_note", "retry", "retry_after_seconds"]

DEFAULT_METHODS = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE")
DEFAULT_STATUS_CODES = (429, 500, 502, 503, 504)
DEFAULT_ERRORS: tuple[type[Exception], ...] = (
    ConnectError,
    ConnectTimeoutError,
    SocketError,
    HeadersTimeoutError,
)


def retry(
    max_retries: int = 5,
    min_timeout: float = 0.5,
    max_timeout: float = 30.0,
    timeout_factor: float = 2.0,
    retry_after: bool = True,
    methods: Iterable[str] = DEFAULT_METHODS,
    status_codes: Iterable[int] = DEFAULT_STATUS_CODES,
    errors: Iterable[type[Exception]] = DEFAULT_ERRORS,
) -> Interceptor:
    """An interceptor that sends a request again after a status in ``status_codes`` or an
    error in ``errors``, up to ``max_retries`` times, waiting in between (see the module
    docstring for the rules; durations in seconds).

    A request is retried only if its method is in ``methods`` or it says
    ``idempotent=True`` (``idempotent=False`` never). Its body is sent again only if it can
    be (``bytes``, ``str``, ``json=``, a list of chunks, a file that can seek); a one-shot
    body is retried only after a ``ConnectError``, when nothing was sent. **No retry is
    started whose wait would end after the caller's effective Trio deadline**: the caller
    then gets the last response, or the last error, whose notes count the attempts.

    The waits run in the caller's task (a checkpoint); cancelling it ends the request.

    Raises:
        InvalidArgumentError: an argument out of its domain (named in the message).
    """
    policy = _Policy.make(
        max_retries,
        min_timeout,
        max_timeout,
        timeout_factor,
        retry_after,
        methods,
        status_codes,
        errors,
    )

    def interceptor(dispatch: DispatchFunction) -> DispatchFunction:
        def retrying(options: RequestOptions, handler: Handler) -> Awaitable[None]:
            allowed = options.idempotent
            if allowed is None:
                allowed = options.method in policy.methods
            if not allowed:  # nothing to decide: no wrapper
                return dispatch(options, handler)
            return _attempts(dispatch, options, handler, policy)

        return retrying

    def level(send: Send) -> Send:
        def retrying(options: RequestOptions) -> Awaitable[Response]:
            allowed = options.idempotent
            if allowed is None:
                allowed = options.method in policy.methods
            if not allowed:
                return send(options)
            return _attempts_level(send, options, policy)

        return retrying

    # A response it may retry has one of status_codes (an error always concerns it).
    return offer_request_level(interceptor, level, Settles(statuses=policy.status_codes))


@attrs.frozen
class _Policy:
    """The validated arguments of :func:`retry`."""

    max_retries: int
    min_timeout: float
    max_timeout: float
    timeout_factor: float
    retry_after: bool
    methods: frozenset[str]
    status_codes: frozenset[int]
    errors: tuple[type[Exception], ...]

    @classmethod
    def make(
        cls,
        max_retries: object,
        min_timeout: object,
        max_timeout: object,
        timeout_factor: object,
        retry_after: object,
        methods: object,
        status_codes: object,
        errors: object,
    ) -> _Policy:
        if type(max_retries) is not int or max_retries < 0:
            raise InvalidArgumentError(f"invalid max_retries {max_retries!r}: expected an int >= 0")
        low = _seconds("min_timeout", min_timeout)
        high = _seconds("max_timeout", max_timeout)
        if high < low:
            raise InvalidArgumentError(
                f"invalid max_timeout {max_timeout!r}: below min_timeout ({min_timeout!r})"
            )
        factor = _seconds("timeout_factor", timeout_factor)
        if factor < 1:
            raise InvalidArgumentError(f"invalid timeout_factor {timeout_factor!r}: expected >= 1")
        if type(retry_after) is not bool:
            raise InvalidArgumentError(f"invalid retry_after {retry_after!r}: expected a bool")
        return cls(
            max_retries,
            low,
            high,
            factor,
            retry_after,
            _members("methods", methods, str),
            _members("status_codes", status_codes, int),
            _error_classes(errors),
        )

    def backoff(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1, 2, ...): full jitter."""
        try:
            cap = min(self.max_timeout, self.min_timeout * self.timeout_factor ** (retry - 1))
        except OverflowError:
            cap = self.max_timeout
        return random.uniform(0.0, cap)

    def wait(self, retry: int, headers: Headers | None) -> float:
        """The wait before retry ``retry`` after a response with ``headers`` (or an error)."""
        if headers is not None and self.retry_after:
            value = headers.get("retry-after")
            if value is not None:
                seconds = retry_after_seconds(value)
                if seconds is not None:
                    return min(seconds, self.max_timeout)
        return self.backoff(retry)

    def status_wait(
        self, status: int, headers: Headers, attempts: int, replayable: bool
    ) -> float | None:
        """The wait before retrying after attempt ``attempts`` answered ``status``, or None
        if it is the answer. Not a checkpoint."""
        if status in self.status_codes and replayable and attempts <= self.max_retries:
            wait = self.wait(attempts, headers)
            if _fits(wait):
                return wait
        return None

    def error_wait(self, error: BaseException, attempts: int, replayable: bool) -> float | None:
        """The wait before retrying after attempt ``attempts`` failed with ``error``, or
        None if ``error`` is the answer (then, if it is one of ``errors``, a note on it says
        why it was not retried). Not a checkpoint."""
        if not isinstance(error, self.errors):
            return None
        if not (replayable or isinstance(error, ConnectError)):
            why = "its body cannot be sent again"
        elif attempts > self.max_retries:
            why = f"no retries left (max_retries={self.max_retries})"
        else:
            wait = self.wait(attempts, None)
            if _fits(wait):
                return wait
            why = f"the next wait ({wait:.3g} s) would end after the deadline"
        plural = "s" if attempts > 1 else ""
        add_note(error, f"trio_pool retry: gave up after {attempts} attempt{plural}: {why}")
        return None


def _fits(wait: float) -> bool:
    """Whether a retry after ``wait`` can start before the caller's deadline."""
    return trio.current_time() + wait < trio.current_effective_deadline()


def _seconds(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidArgumentError(f"invalid {name} {value!r}: expected seconds >= 0")
    return float(value)


def _members(name: str, values: object, kind: type) -> frozenset:  # type: ignore[type-arg]
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidArgumentError(f"invalid {name} {values!r}: expected a collection")
    items = frozenset(values)
    for item in items:
        if type(item) is not kind or (isinstance(item, int) and not 100 <= item <= 599):
            raise InvalidArgumentError(f"invalid {name}: {item!r} is not a {kind.__name__}")
    return items


def _error_classes(errors: object) -> tuple[type[Exception], ...]:
    if isinstance(errors, type) or not isinstance(errors, Iterable):
        raise InvalidArgumentError(f"invalid errors {errors!r}: expected a collection of classes")
    classes = tuple(errors)
    for item in classes:
        if not (isinstance(item, type) and issubclass(item, Exception)):
            raise InvalidArgumentError(f"invalid errors: {item!r} is not an exception class")
    return classes


def retry_after_seconds(value: str) -> float | None:
    """The delay a ``Retry-After`` value asks for, in seconds (>= 0), or None if it is
    neither a number of seconds nor an HTTP date. Not a checkpoint."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        return None
    return max(0.0, when.timestamp() - time.time())


def add_note(error: BaseException, note: str) -> None:
    """``error.add_note(note)``, also on Python 3.10 (which has ``__notes__`` only by
    convention)."""
    if hasattr(error, "add_note"):
        error.add_note(note)
    else:  # pragma: no cover - Python 3.10
        notes = getattr(error, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
            error.__notes__ = notes  # type: ignore[attr-defined]
        notes.append(note)


async def _attempts(
    dispatch: DispatchFunction, options: RequestOptions, handler: Handler, policy: _Policy
) -> None:
    """Send ``options`` until an attempt is not to be retried. A checkpoint."""
    options = readable_again(options)  # another attempt sends them again
    replay = replay_of(options.body)
    if replay is not None and replay.marks:
        await replay.mark()
    attempts = _Attempts(handler, policy, replayable=replay is not None)
    await dispatch(options, attempts)
    attempt = options.attempt
    while (wait := attempts.wait) is not None:
        attempts.wait = None
        if not await between(handler, attempts.relay, wait, replay):
            return
        attempt += 1  # RequestTrace.attempt of the next one
        try:
            await dispatch(attrs.evolve(options, attempt=attempt), attempts)
        except TrioPoolError as exc:  # refused at once (the dispatcher closed meanwhile)
            await call(handler.on_response_error, attempts.relay, exc)
            return


async def _attempts_level(send: Send, options: RequestOptions, policy: _Policy) -> Response:
    """The request level of :func:`retry` (see trio_pool/http/_chain.py): send ``options``
    (no body) until an attempt is not to be retried, by the rules of :class:`_Attempts`.
    A checkpoint; cancelled in a wait, nothing is left behind."""
    options = readable_again(options)  # another attempt sends its headers again
    attempts = 0
    attempt = options.attempt
    current = options
    while True:
        attempts += 1
        try:
            response = await send(current)
        except Exception as exc:
            wait = policy.error_wait(exc, attempts, True)
            if wait is None:
                raise
        else:
            wait = policy.status_wait(response.status, response.headers, attempts, True)
            if wait is None:
                return response
        if wait > 0:
            await trio.sleep(wait)
        attempt += 1  # RequestTrace.attempt of the next one
        current = attrs.evolve(options, attempt=attempt)


class _Attempts:
    """The handler every attempt of one request reports to (see the module docstring)."""

    __slots__ = ("attempts", "discard", "outer", "policy", "relay", "replayable", "wait")

    def __init__(self, outer: Handler, policy: _Policy, *, replayable: bool) -> None:
        self.outer = outer
        self.policy = policy
        self.replayable = replayable
        self.relay = Relay()
        self.attempts = 0  # started
        self.wait: float | None = None  # set: the current attempt is discarded, retry after
        self.discard: Discard | None = None

    def on_request_start(self, controller: Controller) -> Awaitable[object] | None:
        self.relay.inner = controller
        self.attempts += 1
        self.discard = None
        if self.attempts > 1:
            return None
        return start_call(self.outer.on_request_start, self.relay)

    def on_response_start(
        self, controller: Controller, status: int, headers: Headers, reason: str
    ) -> Awaitable[object] | None:
        self.relay.inner = controller
        if not self.relay._aborted:
            wait = self.policy.status_wait(status, headers, self.attempts, self.replayable)
            if wait is not None:
                self.wait = wait
                self.discard = Discard()
                return None
        return start_call(self.outer.on_response_start, self.relay, status, headers, reason)

    def on_response_data(self, controller: Controller, chunk: bytes) -> Awaitable[object] | None:
        discard = self.discard
        if discard is None:
            return start_call(self.outer.on_response_data, self.relay, chunk)
        discard.data(controller, chunk)
        return None

    def on_response_end(
        self, controller: Controller, trailers: Headers
    ) -> Awaitable[object] | None:
        if self.discard is None:
            return start_call(self.outer.on_response_end, self.relay, trailers)
        return None

    def on_response_error(
        self, controller: Controller, error: BaseException
    ) -> Awaitable[object] | None:
        if self.discard is not None:
            return None  # the discarded body failed (or was cut): the retry stands
        if not self.relay._aborted:
            wait = self.policy.error_wait(error, self.attempts, self.replayable)
            if wait is not None:
                self.wait = wait
                return None
        return start_call(self.outer.on_response_error, self.relay, error)
