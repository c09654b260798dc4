"""The routes of a ``MockPool``: what a route matches, what it answers, how often and when.

Theory of operation
-------------------
``mock.intercept(method, path, query=..., headers=..., body=...)`` returns a
:class:`MockInterceptor`; its ``reply(...)`` or ``reply_with_error(...)`` appends a
:class:`MockScope` to the mock's list of routes. A received request becomes a
:class:`MockCall`, matched against the routes in declaration order: the first route whose
matchers all pass and that has replies left answers it, and is charged for it at once (its
``calls`` grow before its delay is waited out), so two concurrent requests never share a
``times(1)`` reply. Everything here is synchronous and validated when declared
(``InvalidArgumentError`` names the bad field), except :meth:`MockScope._produce`, which the
mock's in-memory server awaits to wait out the delay and build the answer.

A route's state is its ``calls`` list (appended only by the mock's router) and its settings
(``delay``/``times``/``persist``, changed only by their setters).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, TypeAlias, cast, final
from urllib.parse import parse_qs, urlencode

import attrs
import trio

from trio_pool import Headers, InvalidArgumentError, TrioPoolError

__all__ = [
    "Answer",
    "BodyMatcher",
    "HeadersMatcher",
    "Matcher",
    "MockCall",
    "MockInterceptor",
    "MockNotMatchedError",
    "MockReply",
    "MockScope",
    "QueryMatcher",
    "Tunnel",
]

HeaderPairs: TypeAlias = (
    Mapping[str, str] | Mapping[bytes, bytes] | Iterable[tuple[str | bytes, str | bytes]]
)
"""Response headers or trailers: a mapping, or ``(name, value)`` pairs (str or bytes)."""

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


@final
@attrs.frozen(eq=False)
class MockCall:
    """A request as the :class:`MockPool` received it (after the library's own validation).

    Attributes:
        method: e.g. ``"GET"``.
        target: the request target as it was sent, e.g. ``"/users?page=2"``.
        path: the target without its query, e.g. ``"/users"``.
        query: the decoded query, ``{name: [values]}`` (blank values kept).
        headers: the request headers as they were sent (``host`` and
            ``content-length`` included), case-insensitive.
        body: the whole request body (a chunked one decoded).
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


@final
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
    headers: HeaderPairs = ()
    trailers: HeaderPairs = ()
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
Tunnel: TypeAlias = Callable[[MockCall, trio.abc.Stream], Awaitable[None]]
"""The server's side of an upgraded connection or a tunnel (:meth:`MockInterceptor.switch`)."""


@attrs.frozen
class _Switch:
    """A route that switches protocols, then serves the connection."""

    serve: Tunnel
    headers: Headers


_Answer: TypeAlias = "_Rendered | Exception | Answer | _Switch"


@final
class MockInterceptor:
    """The route being declared by :meth:`MockPool.intercept`; give it its answer.

    Nothing is registered until :meth:`reply` or :meth:`reply_with_error` is called.
    """

    def __init__(self, routes: list[MockScope], matchers: _Matchers) -> None:
        self._routes = routes  # the mock's, in declaration order
        self._matchers = matchers

    def reply(
        self,
        status: int | Answer,
        body: bytes | str | Sequence[bytes] = b"",
        *,
        headers: HeaderPairs = (),
        trailers: HeaderPairs = (),
        reason: str | None = None,
    ) -> MockScope:
        """Answer matching requests with this response, or with what ``status`` returns when
        it is a callable (an :data:`Answer`; the other arguments must then be left out).

        The fields are those of :class:`MockReply`. Headers are sent as declared, plus the
        framing a server adds when none is declared: ``transfer-encoding: chunked`` for
        trailers or several chunks (each chunk then arrives as one), else
        ``content-length``. Not a checkpoint.

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

    def switch(self, serve: Tunnel, *, headers: HeaderPairs = ()) -> MockScope:
        """Accept matching ``upgrade()`` requests (101) and ``connect()`` tunnels (200), then
        run ``serve(call, stream)`` in the mock's server task: ``stream`` is the server's
        side of the switched connection, closed when ``serve`` returns. What ``serve``
        raises is raised by the client's next read of the connection. Not a checkpoint.

        Args:
            serve: ``async def serve(call, stream)``, the server's side of the new protocol.
            headers: headers of the 101 (or 200) response, e.g. ``upgrade: websocket``.

        Returns:
            The registered route.

        Raises:
            InvalidArgumentError: ``serve`` is not callable, or bad headers.
        """
        if not callable(serve):
            raise InvalidArgumentError(f"invalid serve {serve!r}: expected an async callable")
        return self._register(_Switch(serve, _headers(headers, "headers")))

    def _register(self, answer: _Answer) -> MockScope:
        scope = MockScope(self._matchers, answer)
        self._routes.append(scope)
        return scope


@final
class MockScope:
    """A declared route: what it matches, what it answers, how often and after how long.

    By default a route answers once (undici's rule); :meth:`times` and :meth:`persist`
    change that. Each setter returns the route, so calls chain.

    Attributes:
        calls: the requests this route answered, in order.
    """

    def __init__(self, matchers: _Matchers, answer: _Answer) -> None:
        self._matchers = matchers
        self._answer = answer
        self._delay = 0.0
        self._times: int | None = 1  # None: persist
        self.calls: list[MockCall] = []

    def delay(self, seconds: float) -> MockScope:
        """Answer ``seconds`` after the request arrived (``math.inf``: never): a
        ``trio.sleep`` in the mock's server task, instant on ``autojump_clock``; the caller's
        cancellation or the pool's ``headers_timeout`` ends the wait as with a real server."""
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
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise InvalidArgumentError(f"invalid times: expected an int >= 1, got {count!r}")
        self._times = count
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

    def _accepts(self, call: MockCall) -> bool:
        """Whether this route has replies left and matches ``call``. Not a checkpoint."""
        return self._available() and self._matchers.accept(call)

    def _charge(self, call: MockCall) -> None:
        """Record that this route answers ``call`` (before its delay). Not a checkpoint."""
        self.calls.append(call)

    async def _produce(self, call: MockCall) -> _Rendered | _Switch:
        """Wait the delay, then make the answer (raising the declared error, or
        ``InvalidArgumentError`` for a dynamic reply that is not a ``MockReply``). A
        checkpoint."""
        await trio.sleep(self._delay)
        answer = self._answer
        if isinstance(answer, _Rendered | _Switch):
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
