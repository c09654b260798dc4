"""The value objects of the HTTP API: requests, responses and pool statistics."""

from __future__ import annotations

import json as _json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias, final

import attrs
import trio

from .._errors import ResponseStatusError
from ._headers import Headers, redacted

__all__ = [
    "BodyType",
    "HeadersType",
    "PoolStats",
    "QueryType",
    "RequestOptions",
    "Response",
    "StreamResponse",
    "Upgraded",
]

HeaderValue: TypeAlias = str | bytes
# Mapping keys are invariant: one alternative per key type, so a plain ``dict[str, str]``
# (or a literal ``{"x": "y"}``) type-checks, not only a ``dict[str | bytes, ...]``.
HeadersType: TypeAlias = (
    Mapping[str, HeaderValue]
    | Mapping[bytes, HeaderValue]
    | Mapping[HeaderValue, HeaderValue]
    | Iterable[tuple[HeaderValue, HeaderValue]]
)
BodyType: TypeAlias = bytes | bytearray | memoryview | str | Iterable[bytes] | AsyncIterable[bytes]
QueryType: TypeAlias = Mapping[str, Any] | Sequence[tuple[str, Any]] | str


@final
@attrs.frozen(kw_only=True)
class RequestOptions:
    """One request, as :meth:`dispatch` takes it; the fields mirror ``request()``'s arguments.

    Attributes:
        method: the request method (``"GET"``, ``"POST"``, ...).
        path: the request target; must start with ``/``.
        headers: a mapping or an iterable of ``(name, value)`` pairs (``str`` or ``bytes``).
        body: ``bytes``, ``str`` (UTF-8), an iterable or async iterable of ``bytes``, or None.
        query: a mapping or sequence of pairs (URL-encoded) or a pre-encoded ``str``.
        idempotent: overrides the method's idempotency (retries, pipelining); None = by method.
        reset: close the connection after this request (``connection: close``).
        capability: the upstream tag a ``BalancedPool`` must route this request to.
    """

    method: str = attrs.field(kw_only=False)
    path: str = attrs.field(kw_only=False)
    headers: HeadersType | None = attrs.field(default=None, repr=lambda h: _headers_repr(h))
    body: BodyType | None = attrs.field(default=None, repr=lambda b: _body_repr(b))
    query: QueryType | None = None
    idempotent: bool | None = None
    reset: bool = False
    capability: str | None = None


def _headers_repr(headers: HeadersType | None) -> str:
    # Credentials redacted; a one-shot iterable (a generator) is not consumed by a repr.
    if isinstance(headers, Mapping):
        return repr(dict(redacted(headers.items())))
    if isinstance(headers, list | tuple):
        return repr(redacted(headers))
    return repr(headers)


def _body_repr(body: BodyType | None) -> str:
    # A size, never the content: bodies can be large or hold secrets (a login form).
    if isinstance(body, bytes | bytearray | memoryview | str):
        return f"<{len(body)} {'characters' if isinstance(body, str) else 'bytes'}>"
    return repr(body)


@final
@attrs.frozen
class PoolStats:
    """A snapshot of a dispatcher's counters (``statistics()``)."""

    connected: int
    """Open connections."""
    free: int
    """Connected and able to take a request now."""
    pending: int
    """Accepted, not yet written: ``queued`` plus those assigned to a connection but unsent."""
    queued: int
    """Waiting in the dispatcher's FIFO queue for a connection."""
    running: int
    """Being written or written, response not finished."""
    size: int
    """``pending + running``."""


class _ResponseFields:
    """What :class:`Response` and :class:`StreamResponse` share."""

    status: int
    reason: str
    http_version: str
    headers: Headers

    def raise_for_status(self) -> None:
        """Raise :class:`~trio_pool.ResponseStatusError` for a 4xx or 5xx status."""
        if self.status >= 400:
            kind = "client" if self.status < 500 else "server"
            raise ResponseStatusError(f"{self.status} {self.reason} ({kind} error)", self)


@final
@attrs.define(eq=False)
class Response(_ResponseFields):
    """A complete response, body read (``request()``)."""

    status: int
    reason: str
    http_version: str
    headers: Headers
    trailers: Headers
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")

    def text(self, encoding: str | None = None) -> str:
        """The body decoded with ``encoding``, else the content-type charset, else UTF-8."""
        if encoding is None:
            encoding = _charset(self.headers.get("content-type", "")) or "utf-8"
        return self.body.decode(encoding, errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return _json.loads(self.body)


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip('"')
    return None


class BodySource(Protocol):
    """Where a :class:`StreamResponse` gets its body chunks (internal)."""

    async def receive(self) -> bytes | None:
        """The next chunk, or None at the end. Raises the request's error. A checkpoint."""

    def trailers(self) -> Headers:
        """The trailers, once the body has ended."""

    def close(self) -> None:
        """Give the body up: the connection is closed (never reused half-read)."""


@final
@attrs.define(eq=False)
class StreamResponse(_ResponseFields):
    """A response whose body is read as it arrives (``stream()``).

    ``body`` is an async iterator of ``bytes`` chunks; iterating it reads the connection in
    the reader's task (a checkpoint per chunk). Leaving ``stream()``'s ``async with`` block
    (or :meth:`aclose`) before the end of the body frees the connection at once: kept if the
    rest of the body had already arrived, else closed — an unread body never holds one.
    """

    status: int
    reason: str
    http_version: str
    headers: Headers
    _source: BodySource = attrs.field(alias="source", repr=False)
    _finished: bool = attrs.field(default=False, init=False, repr=False)

    @property
    def body(self) -> AsyncIterator[bytes]:
        """The body chunks, as they arrive."""
        return _Body(self)

    @property
    def trailers(self) -> Headers:
        """The trailers; empty until the body has been read to its end."""
        return self._source.trailers() if self._finished else Headers()

    async def read(self) -> bytes:
        """Read the rest of the body and return it. A checkpoint."""
        return b"".join([chunk async for chunk in _Body(self)])

    async def aclose(self) -> None:
        """Stop reading; an unread rest closes the connection. A checkpoint."""
        self._source.close()
        await trio.lowlevel.checkpoint()


class _Body:
    """The async iterator behind :attr:`StreamResponse.body` (a class, not an async
    generator, so abandoning it half-way needs no finalisation)."""

    __slots__ = ("_response",)

    def __init__(self, response: StreamResponse) -> None:
        self._response = response

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._response._source.receive()
        if chunk is None:
            self._response._finished = True
            raise StopAsyncIteration
        return chunk


@attrs.frozen
class Upgraded:
    """A connection handed over by ``upgrade()`` (status 101) or ``connect()`` (2xx).

    Attributes:
        stream: the connection, as a :class:`trio.abc.Stream`; it no longer belongs to the
            dispatcher. Leaving the ``async with`` block closes it.
        status: the response status.
        headers: the response headers.
    """

    stream: trio.abc.Stream
    status: int
    headers: Headers
