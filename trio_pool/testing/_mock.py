"""``MockPool``: a dispatcher that answers declared routes, for testing an application's code.

Theory of operation
-------------------
A test declares *routes*: ``mock.intercept(method, path, query=..., headers=..., body=...)``
returns a :class:`MockInterceptor`, whose ``reply(...)`` or ``reply_with_error(...)`` registers
a :class:`MockScope` (what to answer, how often, after how long) at the end of the mock's
list. A request goes through the library's own ``prepare`` (so a bad argument raises the very
``InvalidArgumentError`` a real ``Pool`` raises), its body is read whole, and the resulting
:class:`MockCall` is matched against the routes in declaration order: the first route whose
matchers all pass and that has replies left answers it, and is charged for it at once (so
two concurrent requests never share a ``times(1)`` reply). No route → the call is recorded
anyway and the request raises :class:`MockNotMatchedError`, naming it and every route.

A route's delay is a plain ``trio.sleep`` in the caller's task: cancellable, and instant on
``autojump_clock``. A delay longer than the mock's ``headers_timeout`` ends in
``HeadersTimeoutError`` after ``headers_timeout``, as a real pool's would.

The request's life reuses the library's models: a ``Request`` (its ``finish`` is first-wins,
so an abort, a destroy and the reply cannot both end it), ``Response``/``StreamResponse`` and
the ``Controller`` of ``dispatch()``. The set of requests between acceptance and their end
(for a ``stream()``, the end of its body or block) is the whole state: ``statistics()``
counts it as ``running``, ``destroy()`` aborts it, ``close()`` waits for it to empty —
the close/destroy rules are ``Pool``'s own (``Lifecycle``).
"""

from __future__ import annotations

import inspect
import logging
import math
import re
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeAlias, cast
from urllib.parse import parse_qs, urlencode

import attrs
import trio

from .._errors import (
    HeadersTimeoutError,
    InvalidArgumentError,
    RequestAbortedError,
    RequestContentLengthMismatchError,
    TrioPoolError,
)
from .._validate import check_count
from ..http._dispatch import Controller, Handler, call, tell_cancelled
from ..http._events import Emitter
from ..http._headers import Headers
from ..http._interface import Dispatcher
from ..http._lifecycle import Lifecycle
from ..http._models import PoolStats, RequestOptions, Response, StreamResponse, Upgraded
from ..http._options import ClientOptions
from ..http._origin import parse_origin
from ..http._prepare import prepare
from ..http._request import Owner, Request, State

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType

    from typing_extensions import Self

    from ..http._models import HeadersType

__all__ = [
    "MockCall",
    "MockInterceptor",
    "MockNotMatchedError",
    "MockNotSupportedError",
    "MockPool",
    "MockReply",
    "MockScope",
]

Matcher: TypeAlias = str | re.Pattern[str] | Callable[[str], bool]
"""Matches a str: equal to it, a compiled pattern that ``fullmatch``-es it, or a predicate."""
BodyMatcher: TypeAlias = bytes | str | re.Pattern[bytes] | re.Pattern[str] | Callable[[bytes], bool]
"""Matches a request body: equal bytes (a str is UTF-8 encoded), a pattern that
``fullmatch``-es it (a str pattern sees the body decoded as UTF-8), or a predicate."""
HeadersMatcher: TypeAlias = Mapping[str, Matcher] | Callable[[Headers], bool]
"""Header name (any case) → :data:`Matcher` of its first value, or a predicate on them all."""
QueryMatcher: TypeAlias = Mapping[str, str | Sequence[str]] | Callable[[dict[str, list[str]]], bool]
"""The whole decoded query, equal to the mapping (a value may be a list, for repeated
names), or a predicate on the decoded query (``{name: [values]}``)."""

_log = logging.getLogger("trio_pool.testing")


class MockNotMatchedError(TrioPoolError):
    """A request reached a :class:`MockPool` and no declared route with replies left matches it.

    The message names the request (method and target) and lists every route; the request is
    in :attr:`MockPool.calls` all the same (and in :attr:`MockPool.unmatched`), so a test can
    also catch an application that swallows this error.

    Attributes:
        call: the :class:`MockCall` that was not matched.
    """

    def __init__(self, message: str, call: MockCall) -> None:
        super().__init__(message)
        self.call = call


class MockNotSupportedError(TrioPoolError, NotImplementedError):
    """The :class:`MockPool` does not simulate this method (``upgrade()`` and ``connect()``):
    test that code against :func:`~trio_pool.testing.serve_memory` instead."""


@attrs.frozen(eq=False)
class MockCall:
    """A request as the :class:`MockPool` received it (after the library's own validation).

    Attributes:
        method: e.g. ``"GET"``.
        target: the request target as it would be sent, e.g. ``"/users?page=2"``.
        path: the target without its query, e.g. ``"/users"``.
        query: the decoded query, ``{name: [values]}`` (blank values kept).
        headers: the request headers as they would be sent (``host`` and
            ``content-length`` included), case-insensitive.
        body: the whole request body.
        scope: the route that answered it, or None if none matched.
    """

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: Headers
    body: bytes
    scope: MockScope | None = None

    @property
    def matched(self) -> bool:
        """Whether a route answered it."""
        return self.scope is not None


@attrs.frozen
class MockReply:
    """A response for a route to give: what a dynamic ``reply(callable)`` returns.

    Attributes:
        status: the status code, 200 to 999.
        body: ``bytes``, ``str`` (UTF-8) or a sequence of ``bytes`` chunks (a
            ``StreamResponse`` yields them one by one).
        headers: response headers, a mapping or ``(name, value)`` pairs (str or bytes).
        trailers: response trailers, the same way.
        reason: the reason phrase; None = the standard one for ``status`` (or empty).
    """

    status: int = 200
    body: bytes | str | Sequence[bytes] = b""
    headers: HeadersType = ()
    trailers: HeadersType = ()
    reason: str | None = None


@attrs.frozen
class _Rendered:
    """A validated reply, as the response objects need it."""

    status: int
    reason: str
    headers: Headers
    chunks: tuple[bytes, ...]
    trailers: Headers


def _render(reply: MockReply) -> _Rendered:
    """Validate ``reply``; ``InvalidArgumentError`` names the bad field."""
    status = reply.status
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 999:
        raise InvalidArgumentError(f"invalid status {status!r}: expected an int from 200 to 999")
    reason = reply.reason
    if reason is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:  # not a registered status
            reason = ""
    elif not isinstance(reason, str):
        raise InvalidArgumentError(f"invalid reason {reason!r}: expected a str")
    body = reply.body
    if isinstance(body, str):
        chunks: tuple[bytes, ...] = (body.encode("utf-8"),)
    elif isinstance(body, bytes | bytearray | memoryview):
        chunks = (bytes(body),)
    elif isinstance(body, Sequence) and all(isinstance(c, bytes) for c in body):
        chunks = tuple(cast("Sequence[bytes]", body))  # checked just above
    else:
        raise InvalidArgumentError(
            f"invalid body {body!r}: expected bytes, str or a sequence of bytes"
        )
    return _Rendered(
        status,
        reason,
        _headers(reply.headers, "headers"),
        tuple(chunk for chunk in chunks if chunk),  # no empty chunk, as from a real server
        _headers(reply.trailers, "trailers"),
    )


def _headers(headers: object, what: str) -> Headers:
    items: Any = headers.items() if isinstance(headers, Mapping) else headers
    if isinstance(items, str | bytes):
        raise InvalidArgumentError(f"invalid {what}: expected a mapping or (name, value) pairs")
    pairs = []
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"invalid {what}: {item!r} is not a pair") from None
        pairs.append((_text(name, what).lower(), _text(value, what)))
    return Headers(pairs)


def _text(value: object, what: str) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    raise InvalidArgumentError(f"invalid {what}: {value!r} is not str or bytes")


# ---------------------------------------------------------------------------------- matching


def _check_matcher(value: object, what: str) -> None:
    if not (isinstance(value, str | re.Pattern) or callable(value)):
        raise InvalidArgumentError(
            f"invalid {what} {value!r}: expected a str, a pattern or a callable"
        )


def _matches(matcher: Any, value: Any) -> bool:
    """Apply a :data:`Matcher` (or a :data:`BodyMatcher`) to ``value``."""
    if isinstance(matcher, re.Pattern):
        if isinstance(value, bytes) and isinstance(matcher.pattern, str):
            value = value.decode("utf-8", errors="replace")
        return matcher.fullmatch(value) is not None
    if callable(matcher):
        return bool(matcher(value))
    if isinstance(value, bytes) and isinstance(matcher, str):
        matcher = matcher.encode("utf-8")
    return bool(matcher == value)


def _shown(matcher: object) -> str:
    if isinstance(matcher, re.Pattern):
        return f"re.compile({matcher.pattern!r})"
    if callable(matcher):
        return f"<{getattr(matcher, '__qualname__', type(matcher).__name__)}>"
    return str(matcher)


@attrs.frozen
class _Matchers:
    """What a route requires of a request; every given matcher must pass."""

    method: Matcher
    path: Matcher
    query: QueryMatcher | None
    headers: HeadersMatcher | None
    body: BodyMatcher | None

    def __attrs_post_init__(self) -> None:
        _check_matcher(self.method, "method")
        _check_matcher(self.path, "path")
        if isinstance(self.path, str) and (not self.path.startswith("/") or "?" in self.path):
            raise InvalidArgumentError(
                f"invalid path {self.path!r}: must start with '/'; match a query with query="
            )
        if self.headers is not None and not (
            callable(self.headers) or isinstance(self.headers, Mapping)
        ):
            raise InvalidArgumentError("invalid headers: expected a mapping or a callable")
        if isinstance(self.headers, Mapping):
            for name, matcher in self.headers.items():
                _check_matcher(matcher, f"matcher of header {name!r}")
        if self.query is not None and not (callable(self.query) or isinstance(self.query, Mapping)):
            raise InvalidArgumentError("invalid query: expected a mapping or a callable")
        if self.body is not None and not isinstance(self.body, bytes):
            _check_matcher(self.body, "body")

    def accept(self, call: MockCall) -> bool:
        """Whether ``call`` passes every matcher. Not a checkpoint."""
        return (
            _matches(self.method, call.method)
            and _matches(self.path, call.path)
            and self._query_ok(call.query)
            and self._headers_ok(call.headers)
            and (self.body is None or _matches(self.body, call.body))
        )

    def _query_ok(self, query: dict[str, list[str]]) -> bool:
        if self.query is None:
            return True
        if callable(self.query):
            return bool(self.query(query))
        return parse_qs(urlencode(self.query, doseq=True), keep_blank_values=True) == query

    def _headers_ok(self, headers: Headers) -> bool:
        if self.headers is None:
            return True
        if callable(self.headers):
            return bool(self.headers(headers))
        for name, matcher in self.headers.items():
            value = headers.get(name)
            if value is None or not _matches(matcher, value):
                return False
        return True

    def describe(self) -> str:
        extra = [
            f"{name} {_shown(value) if callable(value) else value!r}"
            for name, value in (
                ("query", self.query),
                ("headers", self.headers),
                ("body", self.body),
            )
            if value is not None
        ]
        return " ".join([_shown(self.method), _shown(self.path), *extra])


# ---------------------------------------------------------------------------------- routes

Answer: TypeAlias = Callable[[MockCall], MockReply | Awaitable[MockReply]]
"""A dynamic reply: called with the :class:`MockCall`, returns (or is a coroutine that returns)
the :class:`MockReply`. What it raises is the request's error."""


class MockInterceptor:
    """The route being declared by :meth:`MockPool.intercept`; give it its answer.

    Nothing is registered until :meth:`reply` or :meth:`reply_with_error` is called.
    """

    def __init__(self, pool: MockPool, matchers: _Matchers) -> None:
        self._pool = pool
        self._matchers = matchers

    def reply(
        self,
        status: int | Answer,
        body: bytes | str | Sequence[bytes] = b"",
        *,
        headers: HeadersType = (),
        trailers: HeadersType = (),
        reason: str | None = None,
    ) -> MockScope:
        """Answer matching requests with this response, or with what ``status`` returns when
        it is a callable (an :data:`Answer`; the other arguments must then be left out).

        The fields are those of :class:`MockReply`. Headers are sent as declared (no
        ``content-length`` is added). Not a checkpoint.

        Returns:
            The registered route: set its ``delay``, ``times`` or ``persist`` on it.

        Raises:
            InvalidArgumentError: a bad status, body, headers or trailers.
        """
        if callable(status):
            if body or headers or trailers or reason is not None:
                raise InvalidArgumentError(
                    "invalid reply: give either a callable or the response's fields"
                )
            return self._register(status)
        rendered = _render(MockReply(status, body, headers, trailers, reason))
        return self._register(rendered)

    def reply_with_error(self, error: Exception) -> MockScope:
        """Make matching requests raise ``error`` (e.g. ``trio_pool.SocketError("reset")``)
        instead of answering. Not a checkpoint.

        Returns:
            The registered route.

        Raises:
            InvalidArgumentError: ``error`` is not an exception instance.
        """
        if not isinstance(error, Exception):
            raise InvalidArgumentError(f"invalid error {error!r}: expected an exception instance")
        return self._register(error)

    def _register(self, answer: _Rendered | Exception | Answer) -> MockScope:
        scope = MockScope(self._matchers, answer)
        self._pool._scopes.append(scope)
        return scope


class MockScope:
    """A declared route: what it matches, what it answers, how often and after how long.

    By default a route answers once (undici's rule); :meth:`times` and :meth:`persist`
    change that. Each setter returns the route, so calls chain.

    Attributes:
        calls: the requests this route answered, in order.
    """

    def __init__(self, matchers: _Matchers, answer: _Rendered | Exception | Answer) -> None:
        self._matchers = matchers
        self._answer = answer
        self._delay = 0.0
        self._times: int | None = 1  # None: persist
        self.calls: list[MockCall] = []

    def delay(self, seconds: float) -> MockScope:
        """Answer ``seconds`` after the request (``math.inf``: never), in the caller's task:
        a ``trio.sleep``, so it is cancellable and instant on ``autojump_clock``."""
        if (
            not isinstance(seconds, int | float)
            or isinstance(seconds, bool)
            or math.isnan(seconds)
            or seconds < 0
        ):
            raise InvalidArgumentError(f"invalid delay: expected seconds >= 0, got {seconds!r}")
        self._delay = float(seconds)
        return self

    def times(self, count: int) -> MockScope:
        """Answer ``count`` matching requests (at least 1), then stop matching."""
        self._times = check_count("times", count, minimum=1)
        return self

    def persist(self) -> MockScope:
        """Answer every matching request, for ever."""
        self._times = None
        return self

    @property
    def pending(self) -> bool:
        """Whether the route still expects a request: replies left, or persistent and never
        used."""
        return len(self.calls) < (1 if self._times is None else self._times)

    def _available(self) -> bool:
        return self._times is None or len(self.calls) < self._times

    async def _produce(self, call: MockCall, headers_timeout: float | None) -> _Rendered:
        """Wait the delay, then make the answer (raising the declared error). A checkpoint."""
        if headers_timeout is not None and self._delay > headers_timeout:
            await trio.sleep(headers_timeout)
            raise HeadersTimeoutError(f"no response data within {headers_timeout} s")
        await trio.sleep(self._delay)
        answer = self._answer
        if isinstance(answer, _Rendered):
            return answer
        if isinstance(answer, Exception):
            # The same instance may be raised many times: start each from a clean traceback.
            raise answer.with_traceback(None)
        reply = answer(call)
        if inspect.isawaitable(reply):
            reply = await reply
        if not isinstance(reply, MockReply):
            raise InvalidArgumentError(
                f"invalid reply {reply!r}: the callable must return a MockReply"
            )
        return _render(reply)

    def describe(self) -> str:
        """The route in one line, e.g. ``GET /users: 1 of 2 replies used``."""
        used = len(self.calls)
        if self._times is None:
            return f"{self._matchers.describe()}: persistent, {used} replies used"
        return f"{self._matchers.describe()}: {used} of {self._times} replies used"

    def __repr__(self) -> str:
        return f"<MockScope {self.describe()}>"


# ---------------------------------------------------------------------------------- the pool


class MockPool(Lifecycle, Emitter, Owner, Dispatcher):
    """A dispatcher with ``Pool``'s methods that answers declared routes, with no sockets.

    Args:
        origin: the origin requests go to (only its ``host`` header is visible).
        **options: ``Client`` options, validated as a ``Pool`` validates them. The mock
            honours ``strict_content_length`` and ``pipelining`` (as a real request is
            prepared, ``connection: close`` included) and ``headers_timeout`` (a route's
            delay beyond it ends in ``HeadersTimeoutError``); the others change nothing.

    Use it as ``async with MockPool() as mock:``, declare routes with :meth:`intercept` and
    hand ``mock`` to the code under test wherever it takes a ``Pool``, a ``BalancedPool`` or
    a :class:`trio_pool.Dispatcher`. Its ``close``/``destroy``/``async with`` rules are a
    ``Pool``'s. ``pipeline()`` reads the request body whole before answering (for a real
    duplex conversation use :func:`~trio_pool.testing.serve_memory` with ``streaming=True``);
    ``upgrade()`` and ``connect()`` raise :class:`MockNotSupportedError`. ``on``/``off``
    accept the events of a ``Pool``, which the mock never emits (it has no connections).

    Attributes:
        calls: every request received, matched or not, in arrival order.
    """

    _log = _log

    def __init__(self, origin: str = "http://mock.test", **options: Any) -> None:
        Lifecycle.__init__(self)
        Emitter.__init__(self)
        self._origin = parse_origin(origin)
        self._options = ClientOptions.from_kwargs(options)
        self._scopes: list[MockScope] = []
        self._active: dict[Request, None] = {}  # accepted, not ended; insertion-ordered
        # Requests keep their owner's per-state counts; the mock reports from ``_active``
        # instead (kept by ``_end``, through which every request ends).
        self._counts = [0] * len(State)
        self.calls: list[MockCall] = []

    @property
    def origin(self) -> str:
        """The normalised origin."""
        return self._origin.text

    # ------------------------------------------------------------------ declaring

    def intercept(
        self,
        method: Matcher,
        path: Matcher,
        *,
        query: QueryMatcher | None = None,
        headers: HeadersMatcher | None = None,
        body: BodyMatcher | None = None,
    ) -> MockInterceptor:
        """Start declaring a route: the requests it matches. Not a checkpoint.

        Args:
            method: a :data:`Matcher` of the method (``"GET"``).
            path: a :data:`Matcher` of the path without its query (``"/users"``).
            query: a :data:`QueryMatcher`; None = any query.
            headers: a :data:`HeadersMatcher`; None = any headers.
            body: a :data:`BodyMatcher`; None = any body.

        Returns:
            The interceptor: call its ``reply(...)`` or ``reply_with_error(...)``.

        Raises:
            InvalidArgumentError: a matcher of the wrong type, or a ``str`` path that does not
                start with ``/`` or has a query in it.
        """
        return MockInterceptor(self, _Matchers(method, path, query, headers, body))

    def pending_interceptors(self) -> list[MockScope]:
        """The routes that still expect a request (see :attr:`MockScope.pending`)."""
        return [scope for scope in self._scopes if scope.pending]

    def assert_no_pending_interceptors(self) -> None:
        """Raise ``AssertionError`` listing the routes that still expect a request."""
        pending = self.pending_interceptors()
        if pending:
            lines = "".join(f"\n  {scope.describe()}" for scope in pending)
            raise AssertionError(f"{len(pending)} interceptor(s) still pending:{lines}")

    @property
    def unmatched(self) -> list[MockCall]:
        """The requests no route matched."""
        return [c for c in self.calls if c.scope is None]

    # ------------------------------------------------------------------ lifetime

    async def __aenter__(self) -> Self:
        self._check_enter()
        await self._supervisor.enter()
        return self

    def _describe(self) -> str:
        return f"MockPool {self._origin.text}"

    def _path_origin(self) -> str:
        return self._origin.text

    def _abort_all(self, error: Callable[[], BaseException]) -> None:
        for request in list(self._active):
            self._abort(request, error())

    def _check_shutdown(self) -> None:
        if self._closed and not self._active:
            self._shut.set()

    def statistics(self) -> PoolStats:
        """Requests in progress count as ``running`` (a ``stream()``'s until its body is read
        or its block left); with no connections, everything else is 0. Not a checkpoint."""
        running = len(self._active)
        return PoolStats(connected=0, free=0, pending=0, queued=0, running=running, size=running)

    # ------------------------------------------------------------------ one request

    def _accept(self, options: RequestOptions) -> Request:
        self._check_open()
        request = prepare(options, self._origin, self._options)
        request.owner = self
        self._active[request] = None
        return request

    def _end(self, request: Request, error: BaseException | None) -> None:
        """End ``request`` (first caller wins). Not a checkpoint."""
        if request.ended:
            return
        request.finish(error)
        del self._active[request]
        self._check_shutdown()

    def _abort(self, request: Request, error: BaseException) -> None:
        """End ``request`` with ``error`` now; a delay it is waiting out is cut short."""
        self._end(request, error)
        if request.scope is not None:
            request.scope.cancel()

    async def _respond(self, request: Request) -> _Rendered | None:
        """Receive ``request`` and produce its answer; None if it failed (its error is on it).
        A checkpoint. A cancelled caller aborts it."""
        rendered = None
        request.scope = scope = trio.CancelScope()
        try:
            with scope:
                rendered = await self._receive(request)
        except Exception as exc:  # not matched, the declared error, the body iterable's error
            self._end(request, exc)
        except BaseException:
            self._end(request, RequestAbortedError("the caller was cancelled"))
            raise
        finally:
            request.scope = None
        return None if request.ended else rendered

    async def _receive(self, request: Request) -> _Rendered:
        body = await _read_body(request)
        target = request.target.decode("ascii")
        path, _, query = target.partition("?")
        received = MockCall(
            request.method.decode("ascii"),
            target,
            path,
            parse_qs(query, keep_blank_values=True),
            Headers._from_raw(request.headers),
            body,
        )
        scope = next(
            (s for s in self._scopes if s._available() and s._matchers.accept(received)), None
        )
        received = attrs.evolve(received, scope=scope)
        self.calls.append(received)
        if scope is None:
            routes = "".join(f"\n  {s.describe()}" for s in self._scopes) or " none"
            raise MockNotMatchedError(
                f"no route of MockPool {self._origin.text} matches {received.method} {target}; "
                f"routes:{routes}",
                received,
            )
        scope.calls.append(received)
        return await scope._produce(received, self._options.headers_timeout)

    def _raise_if_failed(self, request: Request) -> None:
        if request.error is not None:
            raise request.error

    # ------------------------------------------------------------------ the dispatcher methods

    async def _request_options(self, options: RequestOptions) -> Response:
        request = self._accept(options)
        rendered = await self._respond(request)
        self._end(request, None)
        self._raise_if_failed(request)
        assert rendered is not None
        return Response(
            rendered.status,
            rendered.reason,
            "1.1",
            rendered.headers,
            rendered.trailers,
            b"".join(rendered.chunks),
        )

    @asynccontextmanager
    async def _stream(
        self, options: RequestOptions, *, duplex: bool
    ) -> AsyncIterator[StreamResponse]:
        # The mock is not duplex (``duplex`` changes nothing): it reads the request body
        # whole before the route answers, so a pipeline() is a stream().
        request = self._accept(options)
        rendered = await self._respond(request)
        self._raise_if_failed(request)
        assert rendered is not None
        source = _MockBody(self, request, rendered)
        try:
            yield StreamResponse(
                rendered.status, rendered.reason, "1.1", rendered.headers, source=source
            )
        finally:
            source.close()

    async def dispatch(self, options: RequestOptions, handler: Handler) -> None:
        """Like ``Pool.dispatch``: drives ``handler`` with the route's answer, or its
        ``on_response_error`` with the failure. A checkpoint.

        Raises:
            InvalidArgumentError, ClientClosedError, ClientDestroyedError: as ``Pool``.
        """
        if not isinstance(options, RequestOptions):
            raise InvalidArgumentError("invalid options: expected a RequestOptions")
        request = self._accept(options)
        controller = Controller(request, self._abort)
        try:
            await call(handler.on_request_start, controller)
        except Exception as exc:
            controller.abort(exc)
        try:
            if not request.ended:
                rendered = await self._respond(request)
                if rendered is not None:
                    await self._drive(request, handler, controller, rendered)
        except trio.Cancelled:
            await tell_cancelled(handler, controller, request.error)
            raise
        if request.error is not None:
            await call(handler.on_response_error, controller, request.error)

    async def _drive(
        self, request: Request, handler: Handler, controller: Controller, rendered: _Rendered
    ) -> None:
        """Feed the answer to ``handler``; stop as soon as the request is aborted. What a
        handler method raises ends the request, as with a real pool."""
        steps: list[tuple[Callable[..., object], tuple[object, ...]]] = [
            (handler.on_response_start, (rendered.status, rendered.headers, rendered.reason)),
            *((handler.on_response_data, (chunk,)) for chunk in rendered.chunks),
            (handler.on_response_end, (rendered.trailers,)),
        ]
        try:
            for method, args in steps:
                if request.ended:
                    return
                await call(method, controller, *args)
        except Exception as exc:
            self._end(request, exc)
        except BaseException:
            self._end(request, RequestAbortedError("the caller was cancelled"))
            raise
        self._end(request, None)

    def upgrade(
        self, path: str, *, protocol: str = "websocket", headers: HeadersType | None = None
    ) -> AbstractAsyncContextManager[Upgraded]:
        """Validates its arguments like ``Pool.upgrade``, then entering raises
        :class:`MockNotSupportedError`."""
        return _NotSimulated(
            self, "upgrade()", RequestOptions("GET", path, headers=headers), {"protocol": protocol}
        )

    def connect(
        self, authority: str, *, headers: HeadersType | None = None
    ) -> AbstractAsyncContextManager[Upgraded]:
        """Validates its arguments like ``Pool.connect``, then entering raises
        :class:`MockNotSupportedError`."""
        return _NotSimulated(
            self,
            "connect()",
            RequestOptions("CONNECT", "/", headers=headers),
            {"authority": authority},
        )


async def _read_body(request: Request) -> bytes:
    """The whole request body; a streamed one must match its declared ``content-length``."""
    body = request.body
    if body is None or isinstance(body, bytes):
        return body or b""
    if isinstance(body, AsyncIterable):
        data = b"".join([bytes(chunk) async for chunk in body])
    else:
        data = b"".join(bytes(chunk) for chunk in body)
    declared = next((v for n, v in request.headers if n == b"content-length"), None)
    if declared is not None and int(declared) != len(data):
        raise RequestContentLengthMismatchError(
            f"request body is {len(data)} bytes, content-length says {int(declared)}"
        )
    return data


class _MockBody:
    """The body of a mock ``StreamResponse``: the route's chunks, one per read."""

    def __init__(self, pool: MockPool, request: Request, rendered: _Rendered) -> None:
        self._pool = pool
        self._request = request
        self._chunks = deque(rendered.chunks)
        self._trailers = rendered.trailers

    async def receive(self) -> bytes | None:
        request = self._request
        try:
            await trio.lowlevel.checkpoint()
        except BaseException:
            self._pool._end(request, RequestAbortedError("the caller was cancelled"))
            raise
        if request.error is not None:
            raise request.error
        if self._chunks and not request.ended:
            return self._chunks.popleft()
        self._pool._end(request, None)
        return None

    def trailers(self) -> Headers:
        return self._trailers

    def close(self) -> None:
        error = RequestAbortedError("the stream was closed before its end")
        self._pool._end(self._request, error)


class _NotSimulated(AbstractAsyncContextManager[Upgraded]):
    """What ``upgrade()``/``connect()`` return: entering validates, then refuses."""

    def __init__(
        self, pool: MockPool, what: str, options: RequestOptions, special: dict[str, str]
    ) -> None:
        self._pool = pool
        self._what = what
        self._options = options
        self._special = special

    async def __aenter__(self) -> Upgraded:
        await trio.lowlevel.checkpoint()
        pool = self._pool
        pool._check_open()
        prepare(self._options, pool._origin, pool._options, **self._special)
        raise MockNotSupportedError(
            f"MockPool does not simulate {self._what}: test it against "
            "trio_pool.testing.serve_memory (ServerConnection.switch_protocols)"
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # pragma: no cover - entering always raises, so this is never called
        return None
