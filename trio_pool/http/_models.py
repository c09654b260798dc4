"""The value objects of the HTTP API: requests, responses and pool statistics."""

from __future__ import annotations

import json as _json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias, final

import attrs
import trio

from .._errors import ResponseDecodeError, ResponseStatusError
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


class BinaryFile(Protocol):
    """A binary file object, as ``body=`` takes it: ``read(n)`` returns up to ``n`` bytes
    (``b""`` at the end). Read in 64 KiB blocks in a worker thread."""

    def read(self, size: int, /) -> bytes: ...


class AsyncBinaryFile(Protocol):
    """A Trio async binary file (``await trio.open_file(path, "rb")``): awaited in 64 KiB
    blocks."""

    async def read(self, size: int, /) -> bytes: ...


BodyType: TypeAlias = (
    bytes
    | bytearray
    | memoryview
    | str
    | Iterable[bytes]
    | AsyncIterable[bytes]
    | BinaryFile
    | AsyncBinaryFile
)
QueryType: TypeAlias = Mapping[str, Any] | Sequence[tuple[str, Any]] | str


@final
@attrs.frozen(kw_only=True)
class RequestOptions:
    """One request, as :meth:`dispatch` takes it; the fields mirror ``request()``'s arguments.

    Attributes:
        method: the request method (``"GET"``, ``"POST"``, ...).
        path: the request target: starts with ``/``, or an absolute URL of the dispatcher's
            own origin (``"http://host/x"``).
        headers: a mapping or an iterable of ``(name, value)`` pairs (``str`` or ``bytes``).
        body: ``bytes``, ``bytearray``, ``memoryview``, ``str`` (UTF-8), an iterable or async
            iterable of ``bytes``, a binary file object (read in 64 KiB blocks: a plain file in
            a worker thread, a Trio async file awaited), or None. Anything else (a ``dict``,
            a text-mode file...) raises ``InvalidArgumentError`` before anything is sent.
        json: a JSON-serialisable value sent as the body (compact UTF-8 JSON, with
            ``content-type: application/json`` unless ``headers`` has one); not with ``body``.
            None = no JSON body.
        query: a mapping or sequence of pairs (URL-encoded; a value None is sent empty,
            booleans as ``true``/``false``, numbers with ``str()``, a list or tuple as the key
            repeated) or a pre-encoded ``str``.
        idempotent: overrides the method's idempotency (retries, pipelining); None = by method.
        reset: close the connection after this request (``connection: close``).
        capability: the upstream tag a ``BalancedPool`` must route this request to.
        attempt: which attempt of a request this is, reported as ``RequestTrace.attempt``
            (``interceptors.retry()`` sets 2, 3, ... on the attempts it sends again); an
            ``int`` >= 1.
    """

    method: str = attrs.field(kw_only=False)
    path: str = attrs.field(kw_only=False)
    headers: HeadersType | None = attrs.field(default=None, repr=lambda h: _headers_repr(h))
    body: BodyType | None = attrs.field(default=None, repr=lambda b: _body_repr(b))
    query: QueryType | None = None
    idempotent: bool | None = None
    reset: bool = False
    capability: str | None = None
    json: Any = attrs.field(default=None, repr=lambda j: "<json>" if j is not None else "None")
    attempt: int = 1


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


@attrs.frozen
class PoolStats:
    """A snapshot of a dispatcher's counters (``statistics()``).

    The first six fields say what the dispatcher holds now; the ``*_total`` fields are
    cumulative since it was made (they only grow, are kept whether or not anyone listens to
    events, and are left out of ``==``, so a snapshot still compares equal to
    ``PoolStats(0, 0, 0, 0, 0, 0)`` when idle). A request counts once a dispatcher of one
    origin (a ``Pool``, ``Client`` or ``MockPool``, or one inside a ``BalancedPool`` or
    ``Agent``) accepted it; one refused before (a bad argument, a closed dispatcher, no
    upstream for its capability) raised at once and counts nowhere. A ``BalancedPool``'s and
    an ``Agent``'s totals are their pools' summed, those of pools already closed included.
    """

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
    requests_total: int = attrs.field(default=0, kw_only=True, eq=False)
    """Requests that ended, successfully or not (each one ``"request_end"`` event)."""
    errors_total: int = attrs.field(default=0, kw_only=True, eq=False)
    """Of those, requests that ended with an error (``RequestTrace.error`` set): a failure,
    a timeout, or an abort (the caller cancelled, a stream left before its end)."""
    connects_total: int = attrs.field(default=0, kw_only=True, eq=False)
    """Connections that connected (each one ``"connect"`` event)."""
    connect_errors_total: int = attrs.field(default=0, kw_only=True, eq=False)
    """Connection attempts that failed to connect (a ``ConnectError``: refused, timed out,
    TLS failed; each one ``"connection_error"`` event). Attempts given up because the pool
    was destroyed or nobody needed the connection any more count in neither."""


class _ResponseFields:
    """What :class:`Response` and :class:`StreamResponse` share."""

    status: int
    reason: str
    http_version: str
    headers: Headers
    url: str
    _method: str

    def raise_for_status(self) -> None:
        """Raise :class:`~trio_pool.ResponseStatusError` for a 4xx or 5xx status. Its message
        says the request and the status: ``GET http://h/x: 503 Service Unavailable``."""
        if self.status >= 400:
            status = f"{self.status} {self.reason}" if self.reason else str(self.status)
            request = " ".join(part for part in (self._method, self.url) if part)
            raise ResponseStatusError(f"{request}: {status}" if request else status, self)


def _decoded(response: _ResponseFields, body: bytes, encoding: str | None) -> str:
    """``body`` as text (``encoding``, else the content-type charset, else UTF-8)."""
    _check_not_encoded(response.headers, body)
    if encoding is None:
        encoding = _charset(response.headers.get("content-type", "")) or "utf-8"
    return body.decode(encoding, errors="replace")


def _parsed(response: _ResponseFields, body: bytes) -> Any:
    _check_not_encoded(response.headers, body)
    return _json.loads(body)


def _check_not_encoded(headers: Headers, body: bytes) -> None:
    """A body still in a content-encoding (compressed) is not text: say so, not a
    ``UnicodeDecodeError`` or a JSON syntax error about binary bytes. (An empty body, as a
    HEAD's, has nothing to decode.)"""
    coding = headers.get("content-encoding", "").strip().lower()
    if body and coding and coding != "identity":
        raise ResponseDecodeError(
            f"the body is encoded (content-encoding: {coding}) and was not decoded; "
            "compose the dispatcher with interceptors.decompress() to decode it"
        )


@final
@attrs.define(eq=False)
class Response(_ResponseFields):
    """A complete response, body read (``request()``).

    Attributes:
        url: the absolute URL that was requested (``http://host/path?query``).
    """

    status: int
    reason: str
    http_version: str
    headers: Headers
    trailers: Headers
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    url: str = attrs.field(default="", kw_only=True, repr=False)
    _method: str = attrs.field(default="", kw_only=True, alias="method", repr=False)

    def text(self, encoding: str | None = None) -> str:
        """The body decoded with ``encoding``, else the content-type charset, else UTF-8
        (undecodable bytes replaced). Not a checkpoint.

        Raises:
            ResponseDecodeError: the body has a ``content-encoding`` (e.g. gzip) nobody
                decoded (see ``interceptors.decompress()``).
        """
        return _decoded(self, self.body, encoding)

    def json(self) -> Any:
        """The body parsed as JSON. Not a checkpoint.

        Raises:
            ResponseDecodeError: as :meth:`text`.
            ValueError: the body is not JSON (``json.JSONDecodeError``).
        """
        return _parsed(self, self.body)


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
    the reader's task (each step a checkpoint). Leaving ``stream()``'s ``async with`` block
    (or :meth:`aclose`) before the end of the body frees the connection at once: kept if the
    rest of the body had already arrived, else closed — an unread body never holds one.

    Attributes:
        url: the absolute URL that was requested (``http://host/path?query``).
    """

    status: int
    reason: str
    http_version: str
    headers: Headers
    _source: BodySource = attrs.field(alias="source", repr=False)
    url: str = attrs.field(default="", kw_only=True, repr=False)
    _method: str = attrs.field(default="", kw_only=True, alias="method", repr=False)
    _finished: bool = attrs.field(default=False, init=False, repr=False)
    _content: bytes | None = attrs.field(default=None, init=False, repr=False)

    @property
    def body(self) -> AsyncIterator[bytes]:
        """The body chunks, as they arrive (each step a checkpoint). After :meth:`read`,
        the body it returned, as one chunk."""
        return _Body(self)

    @property
    def trailers(self) -> Headers:
        """The trailers; empty until the body has been read to its end."""
        return self._source.trailers() if self._finished else Headers()

    async def read(self) -> bytes:
        """Read the rest of the body and return it; a later call returns the same bytes
        (chunks iterated from :attr:`body` before the first call are not in them). A
        checkpoint, even when the body is already here."""
        content = self._content
        if content is None:
            content = self._content = b"".join([chunk async for chunk in _Body(self)])
        else:
            await trio.lowlevel.checkpoint()
        return content

    async def text(self, encoding: str | None = None) -> str:
        """:meth:`read`, decoded like :meth:`Response.text`. A checkpoint.

        Raises:
            ResponseDecodeError: as :meth:`Response.text`.
        """
        return _decoded(self, await self.read(), encoding)

    async def json(self) -> Any:
        """:meth:`read`, parsed as JSON. A checkpoint.

        Raises:
            ResponseDecodeError: as :meth:`Response.text`.
            ValueError: the body is not JSON.
        """
        return _parsed(self, await self.read())

    async def aclose(self) -> None:
        """Stop reading; an unread rest closes the connection. A checkpoint."""
        self._source.close()
        await trio.lowlevel.checkpoint()

    def _ready(self) -> bool:
        """Whether the next step of :attr:`body` reads no socket (the next chunk, the end or
        an error has already arrived). Internal: the httpx transport then enters no read
        deadline. False for a source that cannot tell. Not a checkpoint."""
        if self._content is not None:
            return True
        ready = getattr(self._source, "ready", None)  # BodySource's optional method
        return ready is not None and bool(ready())


class _Body:
    """The async iterator behind :attr:`StreamResponse.body` (a class, not an async
    generator, so abandoning it half-way needs no finalisation)."""

    __slots__ = ("_done", "_response")

    def __init__(self, response: StreamResponse) -> None:
        self._response = response
        self._done = False

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        # A checkpoint even when the next chunk is already buffered (no wait for the
        # socket): a cancelled reader stops here rather than run on through the body, and
        # ends the request, as a read cancelled while waiting for bytes does.
        response = self._response
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
        except trio.Cancelled:
            response._source.close()
            raise
        content = response._content
        if content is not None:  # read() has it all: one chunk, then the end
            if self._done or not content:
                raise StopAsyncIteration
            self._done = True
            return content
        chunk = await response._source.receive()
        if chunk is None:
            response._finished = True
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
