"""One httpx transport over any trio_pool ``Dispatcher``, shared by ``httpx`` and ``httpx2``.

Theory of operation
-------------------
``httpx`` and ``httpx2`` have the same transport interface: the client calls
``handle_async_request(request)``, which returns a response whose body stream the client reads
later and then closes. Everything here is written against that interface through small
protocols and a :class:`Flavour` (the classes of one of the two packages); the public modules
``trio_pool.httpx`` and ``trio_pool.httpx2`` only bind a flavour and subclass the package's
base classes. Nothing here imports either package.

One httpx request is one :class:`Exchange`, run in the caller's task:

* ``HEAD``: :meth:`Exchange.start` enters the dispatcher's ``stream()`` context manager (the
  request is queued, a connection leased, the request written, the head read) inside one
  cancel scope, the *head scope*, whose deadline carries httpx's timeouts (below).
* ``BODY``: the response is handed to httpx with a :class:`ResponseBody` whose reads pull the
  ``StreamResponse``'s chunks one at a time (bounded memory both ways: nothing is buffered
  beyond one chunk).
* ``CLOSED``: :meth:`Exchange.close` (httpx closing the response) leaves the ``stream()``
  block, which frees the connection (kept if the body ended, else closed). Idempotent.

A request with an ``upgrade`` header goes through ``upgrade()`` instead (``_httpx_upgrade``:
the 101 response carries the connection as its ``network_stream`` extension).

Entering ``stream()`` in one call and leaving it in another is sound because a non-duplex
``stream()`` holds no cancel scope nor nursery between its entry and its exit; the tests close
a response from another task and after leaving the scope it was opened in.

Timeouts (httpx's ``timeout`` extension: ``connect``, ``read``, ``write``, ``pool``, each
seconds or None) are deadlines of one cancel scope per request up to its head
(:class:`HeadScope`), moved as the request goes from one phase (:class:`Phase`) to the next.
Two sources tell the phases:

* The dispatcher, through the hook of ``trio_pool.http._watch``: the head scope is set as
  the watcher of the ``stream()`` call, and the runner says whether the request waits in the
  queue (``QUEUED``: ``pool`` bounds the wait, ``PoolTimeout``), waits for a connection being
  opened for it (``CONNECTING``: ``connect``, ``ConnectTimeout``), or holds its connection
  (then the writes and the wait for the head). So ``pool`` bounds only the wait for a
  connection and ``connect`` only the connect, as httpcore's do. A request re-sent after a
  stale keep-alive connection goes through them again. (Over the ``retry`` interceptor, a
  backoff is waited out in the phase the last attempt reached: ``read`` bounds it too.)
* A streamed request body, the *upload probe* (:class:`_Upload`): while a chunk is being
  written (``WRITING``) the deadline is ``write`` (``WriteTimeout``; the request head, written
  first, counts as one); while httpx's body iterator makes the next chunk there is none (the
  producer is not the network, ``PRODUCING``); once the body has been written (``READING``)
  it is ``read`` (``ReadTimeout``).

A request without a streamed body (none, or one httpx already holds as bytes, which the
dispatcher may then re-send after a stale keep-alive connection) shows nothing between its
lease and its head: ``read`` bounds that, extended by ``write`` when there is a body.
``None`` is no bound. Until the dispatcher tells anything (``UNTOLD``) the deadline is that
of a request leased at once, so a lease at once changes no deadline; a ``Dispatcher`` of
another kind, which never tells, keeps it (its waits count as ``read``). Each read of a
response body chunk runs in a scope with the ``read`` deadline.

The dispatcher's own options (``connect_timeout``, ``headers_timeout``, ``body_timeout``)
still apply; their errors map as below.

Errors map to the flavour's classes (:meth:`Flavour.translate`), the trio_pool error as
``__cause__``; anything else (a cancellation, an error of httpx's body iterator) passes as is.
Closing the transport never closes the dispatcher: its ``async with`` owns it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from types import ModuleType
from typing import Generic, Protocol, TypeVar

import attrs
import trio

import trio_pool
from trio_pool.http._watch import unwatch, watch

from ._httpx_upgrade import NetworkStream, Upgrade, UpgradedLike

__all__ = ["Exchange", "Flavour", "RequestLike", "ResponseBody", "TransportBase", "TransportCore"]

R = TypeVar("R", covariant=True)  # a response class: only ever produced
T = TypeVar("T")

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Sent by the dispatcher's upgrade() itself (it refuses them from the caller).
_UPGRADE_HEADERS = frozenset({b"upgrade", b"connection"})


class URLLike(Protocol):
    """What the transport reads of ``httpx.URL``."""

    @property
    def scheme(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int | None: ...
    @property
    def raw_path(self) -> bytes: ...


class HeadersLike(Protocol):
    """What the transport reads of ``httpx.Headers``."""

    @property
    def raw(self) -> list[tuple[bytes, bytes]]: ...


class RequestLike(Protocol):
    """What the transport reads of ``httpx.Request``."""

    method: str

    @property
    def extensions(self) -> Mapping[str, object]: ...
    @property
    def url(self) -> URLLike: ...
    @property
    def headers(self) -> HeadersLike: ...
    @property
    def content(self) -> bytes: ...
    @property
    def stream(self) -> object: ...


@attrs.frozen
class Flavour(Generic[R]):
    """The classes of one httpx-like package, for :class:`TransportCore`.

    ``response`` builds the package's ``Response(status_code, headers=, stream=,
    extensions=)``; the rest are its exception classes, all called as ``cls(message)``.
    """

    response: Callable[..., R]
    request_not_read: type[Exception]
    connect_error: type[Exception]
    connect_timeout: type[Exception]
    read_timeout: type[Exception]
    write_timeout: type[Exception]
    pool_timeout: type[Exception]
    read_error: type[Exception]
    write_error: type[Exception]
    local_protocol_error: type[Exception]
    remote_protocol_error: type[Exception]
    proxy_error: type[Exception]
    transport_error: type[Exception]

    @classmethod
    def of(cls, package: ModuleType) -> Flavour[R]:
        """The flavour of ``package`` (``httpx`` or ``httpx2``: the same names in both)."""
        return cls(
            response=package.Response,
            request_not_read=package.RequestNotRead,
            connect_error=package.ConnectError,
            connect_timeout=package.ConnectTimeout,
            read_timeout=package.ReadTimeout,
            write_timeout=package.WriteTimeout,
            pool_timeout=package.PoolTimeout,
            read_error=package.ReadError,
            write_error=package.WriteError,
            local_protocol_error=package.LocalProtocolError,
            remote_protocol_error=package.RemoteProtocolError,
            proxy_error=package.ProxyError,
            transport_error=package.TransportError,
        )

    def translate(self, error: trio_pool.TrioPoolError, *, writing: bool) -> Exception:
        """The httpx error for a trio_pool one (``writing``: the request body was being
        written, so a dropped connection is a write error)."""
        cls: type[Exception]
        proxy_error = getattr(trio_pool, "ProxyError", None)  # once ProxyAgent brings it
        if proxy_error is not None and isinstance(error, proxy_error):
            cls = self.proxy_error
        elif isinstance(error, trio_pool.ConnectTimeoutError):  # (before its base class)
            cls = self.connect_timeout
        elif isinstance(error, trio_pool.ConnectError):
            cls = self.connect_error
        elif isinstance(error, trio_pool.HeadersTimeoutError | trio_pool.BodyTimeoutError):
            cls = self.read_timeout
        elif isinstance(error, trio_pool.SocketError | trio_pool.RequestAbortedError):
            cls = self.write_error if writing else self.read_error
        elif isinstance(
            error,
            trio_pool.HTTPParserError
            | trio_pool.HeadersOverflowError
            | trio_pool.ResponseContentLengthMismatchError
            | trio_pool.InformationalError,
        ):
            cls = self.remote_protocol_error
        elif isinstance(
            error, trio_pool.InvalidArgumentError | trio_pool.RequestContentLengthMismatchError
        ):
            # A request trio_pool refuses to send (nothing was sent): another origin than a
            # one-origin dispatcher's, a forbidden header, a body shorter than announced.
            cls = self.local_protocol_error
        elif isinstance(error, trio_pool.ResponseExceededMaxSizeError):
            cls = self.read_error
        else:  # closed or destroyed dispatcher, a missing upstream, anything newer
            cls = self.transport_error
        translated = cls(str(error) or type(error).__name__)
        translated.__cause__ = error
        return translated


class Phase(enum.Enum):
    """Where an exchange's request is on its way to the response head (see the module
    docstring); each phase has its own deadline and its own timeout error."""

    UNTOLD = "untold"  # nothing told yet: as if leased at once
    QUEUED = "queued"  # waiting in the queue for a connection: ``pool``
    CONNECTING = "connecting"  # a connection is being opened for it: ``connect``
    PRODUCING = "producing"  # httpx's body iterator is making the next chunk: no limit
    WRITING = "writing"  # the dispatcher is writing the head or a chunk: ``write``
    READING = "reading"  # the request has been written (or is, unseen): ``read``


class Timeouts:
    """httpx's ``timeout`` extension, as seconds or None (no limit). Read once per request: a
    plain slotted class, cheaper to make than an attrs one."""

    __slots__ = ("connect", "pool", "read", "write")

    def __init__(
        self,
        connect: float | None = None,
        read: float | None = None,
        write: float | None = None,
        pool: float | None = None,
    ) -> None:
        for key, value in (("connect", connect), ("read", read), ("write", write), ("pool", pool)):
            if value is not None and not isinstance(value, int | float):
                raise trio_pool.InvalidArgumentError(f"invalid timeout {key!r}: {value!r}")
        self.connect = connect
        self.read = read
        self.write = write
        self.pool = pool

    @classmethod
    def of(cls, extensions: Mapping[str, object]) -> Timeouts:
        given = extensions.get("timeout")
        if not isinstance(given, Mapping):
            return cls()
        return cls(given.get("connect"), given.get("read"), given.get("write"), given.get("pool"))


def _bound(own: float | None, *hidden: float | None) -> float:
    """A phase's budget: its ``own`` timeout (None: unbounded), extended by the timeouts of
    the phases hidden in it (None adds nothing)."""
    if own is None:
        return math.inf
    return own + sum(part for part in hidden if part is not None)


class TransportCore(Generic[R]):
    """The transport's logic: ``handle(request)`` sends one httpx request over
    ``dispatcher``. The public ``AsyncTransport`` classes hold one."""

    __slots__ = ("_dispatcher", "_flavour")

    def __init__(self, dispatcher: trio_pool.Dispatcher, flavour: Flavour[R]) -> None:
        if not isinstance(dispatcher, trio_pool.Dispatcher):
            raise trio_pool.InvalidArgumentError(
                f"invalid dispatcher: expected a trio_pool.Dispatcher, got {dispatcher!r}"
            )
        self._dispatcher = dispatcher
        self._flavour = flavour

    @property
    def dispatcher(self) -> trio_pool.Dispatcher:
        """The dispatcher requests go through (never closed by the transport)."""
        return self._dispatcher

    async def handle(
        self, request: RequestLike, make_body: Callable[[Receiver], ResponseBody]
    ) -> R:
        """Send ``request``; return the flavour's response once its head arrived. A
        checkpoint. ``make_body`` wraps the exchange in the package's ``AsyncByteStream``."""
        outgoing = self._outgoing(request)
        if outgoing.protocol is not None:
            return await self._upgrade(request, outgoing, make_body)
        exchange = Exchange(self, request)
        response = await exchange.start(outgoing)
        extensions = {
            "http_version": b"HTTP/" + response.http_version.encode("ascii"),
            "reason_phrase": response.reason.encode("latin-1", "replace"),
        }
        return self._flavour.response(
            response.status,
            headers=_raw_headers(response.headers),
            stream=make_body(exchange),
            extensions=extensions,
        )

    async def _upgrade(
        self,
        request: RequestLike,
        outgoing: Outgoing,
        make_body: Callable[[Receiver], ResponseBody],
    ) -> R:
        """A request with ``upgrade: protocol``: through ``upgrade()``; the response carries
        the connection as ``extensions["network_stream"]`` (see ``_httpx_upgrade``)."""
        flavour = self._flavour
        context: AbstractAsyncContextManager[UpgradedLike]
        try:
            if outgoing.error is not None:
                raise outgoing.error
            headers = [(n, v) for n, v in outgoing.headers if n.lower() not in _UPGRADE_HEADERS]
            if request.method != "GET":
                raise trio_pool.InvalidArgumentError(f"invalid upgrade method {request.method}")
            head = HeadScope(Timeouts.of(request.extensions), body=False, streamed=False)
            assert outgoing.protocol is not None
            context = self._dispatcher.upgrade(
                outgoing.target, protocol=outgoing.protocol, headers=headers
            )
        except trio_pool.TrioPoolError as exc:
            raise flavour.translate(exc, writing=False) from exc
        upgraded = await head.enter(context, flavour)
        stream = NetworkStream(
            upgraded.stream,
            read_error=flavour.read_error,
            write_error=flavour.write_error,
            read_timeout=flavour.read_timeout,
            write_timeout=flavour.write_timeout,
        )
        return flavour.response(
            upgraded.status,
            headers=_raw_headers(upgraded.headers),
            stream=make_body(Upgrade(context)),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": b"Switching Protocols",
                "network_stream": stream,
            },
        )

    @staticmethod
    def _outgoing(request: RequestLike) -> Outgoing:
        """What to pass the dispatcher, in one pass over the request's headers (see
        :class:`Outgoing`). Not a checkpoint; an invalid URL scheme is its ``error``."""
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            error = trio_pool.InvalidArgumentError(f"invalid URL scheme {scheme!r}")
            return Outgoing("", [], None, framed=False, error=error)
        default_host = _authority_of(url).encode("ascii")
        headers = []
        protocol = None
        framed = False
        for pair in request.headers.raw:
            name = pair[0].lower()
            if name == b"host":
                if pair[1].lower() == default_host:
                    continue
            elif name == b"content-length":
                framed = True
            elif name == b"transfer-encoding":
                framed = True
                continue  # framing is the dispatcher's
            elif name == b"upgrade":
                protocol = pair[1].decode("latin-1")
            headers.append(pair)
        return Outgoing(str(url), headers, protocol, framed=framed)


class Outgoing:
    """A request as the dispatcher is given it: the absolute URL (every dispatcher takes
    one, and a one-origin dispatcher refuses another origin's), the headers to send, the
    protocol its ``upgrade`` header asks for, and whether httpx framed a body
    (``content-length`` or ``transfer-encoding``).

    httpx always sends a ``Host`` naming the URL's authority; that one is dropped so each
    dispatcher sets its own (a ``BalancedPool``'s upstream may not be the URL's). A ``Host``
    the program set to something else (a virtual host) is kept. ``transfer-encoding`` is
    dropped: the dispatcher frames a streamed body itself."""

    __slots__ = ("error", "framed", "headers", "protocol", "target")

    def __init__(
        self,
        target: str,
        headers: list[tuple[bytes, bytes]],
        protocol: str | None,
        *,
        framed: bool,
        error: trio_pool.TrioPoolError | None = None,
    ) -> None:
        self.target = target
        self.headers = headers
        self.protocol = protocol
        self.framed = framed
        self.error = error


def _raw_headers(headers: trio_pool.Headers) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def _authority_of(url: URLLike) -> str:
    """The URL's authority as httpx writes its ``Host`` header (default port omitted)."""
    host = url.host.lower()
    if ":" in host:
        host = f"[{host}]"
    port = url.port
    if port is None or port == _DEFAULT_PORTS[url.scheme]:
        return host
    return f"{host}:{port}"


class HeadScope:
    """The cancel scope a request runs in up to its response head, whose deadline follows
    the request's phase (see the module docstring). It is the dispatcher's
    :class:`~trio_pool.http._watch.Watcher` while the head is awaited, and the upload probe's
    :class:`_Progress`. Changed only by its own methods."""

    __slots__ = ("_body", "_phase", "_streamed", "scope", "timeouts")

    def __init__(self, timeouts: Timeouts, *, body: bool, streamed: bool) -> None:
        self.timeouts = timeouts
        self._body = body  # a request body is sent
        self._streamed = streamed  # ... from httpx's stream, through an upload probe
        self._phase = Phase.UNTOLD
        # Until the dispatcher tells where the request is (at once: a lease, or a wait), the
        # deadline is that of a request leased at once; a dispatcher of another kind that
        # never tells keeps it.
        budget = _bound(timeouts.read, timeouts.write if body else None)
        self.scope = trio.CancelScope(deadline=trio.current_time() + budget)

    def _enter(self, phase: Phase, budget: float) -> None:
        self._phase = phase
        self.scope.deadline = trio.current_time() + budget

    def waiting(self, *, connecting: bool) -> None:
        """The dispatcher: the request waits for a connection (``pool``) or for the one
        being opened for it (``connect``)."""
        timeouts = self.timeouts
        if connecting:
            self._enter(Phase.CONNECTING, _bound(timeouts.connect))
        else:
            self._enter(Phase.QUEUED, _bound(timeouts.pool))

    def leased(self) -> None:
        """The dispatcher: the request has its connection and is written next. A streamed
        body shows its writes (the probe); otherwise the writes hide in the wait for the
        head, and ``write`` (if there is a body) extends ``read``."""
        timeouts = self.timeouts
        if self._phase is Phase.UNTOLD and not self._streamed:
            # Leased at once: the deadline set a moment ago is this one's (no scope change).
            self._phase = Phase.READING
        elif self._streamed:
            self._enter(Phase.WRITING, _bound(timeouts.write))
        else:
            self._enter(
                Phase.READING, _bound(timeouts.read, timeouts.write if self._body else None)
            )

    def producing(self) -> None:
        """The probe: httpx's iterator makes the next chunk (not the network: no limit)."""
        self._enter(Phase.PRODUCING, math.inf)

    def writing(self) -> None:
        """The probe: a chunk goes to the dispatcher to be written."""
        self._enter(Phase.WRITING, _bound(self.timeouts.write))

    def written(self) -> None:
        """The probe: the body has been written; the head is awaited."""
        self._enter(Phase.READING, _bound(self.timeouts.read))

    @property
    def writing_body(self) -> bool:
        """Whether a write was under way (a dropped connection is then a write error)."""
        return self._phase is Phase.WRITING

    def expired(self, flavour: Flavour[object]) -> Exception:
        """The flavour's timeout error for the phase whose deadline expired."""
        phase = self._phase
        if phase is Phase.QUEUED:
            return flavour.pool_timeout("timed out waiting for a connection")
        if phase is Phase.CONNECTING:
            return flavour.connect_timeout("timed out connecting")
        if phase is Phase.WRITING:
            return flavour.write_timeout("timed out writing the request")
        return flavour.read_timeout("timed out waiting for the response head")

    async def enter(self, context: AbstractAsyncContextManager[T], flavour: Flavour[object]) -> T:
        """Enter ``context`` (the dispatcher's ``stream()`` or ``upgrade()``) in this scope,
        telling the dispatcher about it; its result. A checkpoint. Raises the flavour's
        errors: a timeout for the phase that expired, or the translated trio_pool error."""
        with self.scope:
            token = watch(self)
            try:
                return await context.__aenter__()
            except trio_pool.TrioPoolError as exc:
                if self.scope.cancel_called:  # the request failed of our own deadline
                    raise self.expired(flavour) from exc
                raise flavour.translate(exc, writing=self.writing_body) from exc
            finally:
                unwatch(token)
        raise self.expired(flavour)


class Exchange:
    """One httpx request over the dispatcher (see the module docstring for its phases).
    Changed only by its own methods."""

    __slots__ = (
        "_body_it",
        "_closed",
        "_context",
        "_core",
        "_left",
        "_request",
        "_response",
        "timeouts",
    )

    def __init__(self, core: TransportCore[object], request: RequestLike) -> None:
        self._core = core
        self._request = request
        self.timeouts = Timeouts.of(request.extensions)
        self._context: AbstractAsyncContextManager[trio_pool.StreamResponse] | None = None
        self._response: trio_pool.StreamResponse | None = None
        self._body_it: AsyncIterator[bytes] | None = None
        self._left = -1  # body bytes announced (content-length) and not read yet; -1: unknown
        self._closed = False

    # ------------------------------------------------------------------ head

    async def start(self, outgoing: Outgoing) -> trio_pool.StreamResponse:
        """Send the request (as ``outgoing`` says) and wait for the response head (the
        ``HEAD`` phase). A checkpoint. Raises the flavour's errors."""
        core = self._core
        flavour = core._flavour
        request = self._request
        try:
            if outgoing.error is not None:
                raise outgoing.error
            body = _body_of(request, flavour) if outgoing.framed else None
            head = HeadScope(
                self.timeouts, body=body is not None, streamed=isinstance(body, _Upload)
            )
            if isinstance(body, _Upload):
                body.progress = head
            # stream() validates its arguments at once (a URL of another origin, a bad
            # header): refused before anything is sent.
            context = core._dispatcher.stream(
                request.method, outgoing.target, headers=outgoing.headers, body=body
            )
        except trio_pool.TrioPoolError as exc:
            raise flavour.translate(exc, writing=False) from exc
        response = await head.enter(context, flavour)
        self._context = context
        self._response = response
        length = response.headers.get("content-length")
        if length is not None and length.isdigit():
            self._left = int(length)
        return response

    # ------------------------------------------------------------------ body

    async def receive(self) -> bytes | None:
        """The next response body chunk, or None at its end. A checkpoint."""
        body = self._body_it
        if body is None:
            assert self._response is not None
            body = self._body_it = self._response.body
        read = self.timeouts.read
        left = self._left
        try:
            if read is None or left == 0:
                # No deadline; or the announced length has all arrived, so the end comes
                # without another read from the network (a cancel scope less per response).
                chunk = await body.__anext__()
            else:
                with trio.move_on_after(read) as scope:
                    chunk = await body.__anext__()
                if scope.cancelled_caught:
                    raise self._core._flavour.read_timeout("timed out reading the response body")
        except StopAsyncIteration:
            return None
        except trio_pool.TrioPoolError as exc:
            raise self._core._flavour.translate(exc, writing=False) from exc
        if left > 0:
            self._left = left - len(chunk)
        return chunk

    async def close(self) -> None:
        """Leave the ``stream()`` block: the connection is kept if the body ended, else
        closed. Idempotent; a checkpoint only the first time."""
        if self._closed:
            return
        self._closed = True
        context, self._context = self._context, None
        if context is not None:
            # Shielded: closing is bookkeeping, it must finish even for a cancelled caller.
            with trio.CancelScope(shield=True):
                await context.__aexit__(None, None, None)


def _body_of(request: RequestLike, flavour: Flavour[object]) -> bytes | _Upload:
    """The body of a request httpx framed: bytes (httpx holds it whole), or an upload probe
    over httpx's stream."""
    try:
        return request.content
    except flavour.request_not_read:
        return _Upload(request.stream)


class _Progress(Protocol):
    """What an :class:`_Upload` tells (a :class:`HeadScope`)."""

    def producing(self) -> None: ...
    def writing(self) -> None: ...
    def written(self) -> None: ...


class _Upload:
    """The request body handed to the dispatcher: httpx's stream, telling its ``progress``
    when a chunk is being produced and when written (the probe of the module docstring)."""

    __slots__ = ("_iterator", "_source", "progress")

    def __init__(self, source: object) -> None:
        self._source = source
        self._iterator: AsyncIterator[bytes] | None = None
        self.progress: _Progress | None = None

    def __aiter__(self) -> _Upload:
        return self

    async def __anext__(self) -> bytes:
        progress = self.progress
        if self._iterator is None:
            if not isinstance(self._source, AsyncIterable):
                raise trio_pool.InvalidArgumentError("invalid request stream: not async")
            self._iterator = aiter(self._source)
        if progress is not None:
            progress.producing()
        try:
            chunk = await self._iterator.__anext__()
        except StopAsyncIteration:
            if progress is not None:
                progress.written()
            raise
        if progress is not None:
            progress.writing()
        return chunk


class ResponseBody:
    """The response body handed to httpx; the public modules mix in the package's
    ``AsyncByteStream``. Iterating it reads the connection (a checkpoint per chunk); a
    failed read closes the exchange at once."""

    def __init__(self, exchange: Receiver) -> None:
        self._exchange = exchange

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _Chunks(self._exchange)

    async def aclose(self) -> None:
        await self._exchange.close()


class _Chunks:
    """The iterator of :class:`ResponseBody` (a class, not an async generator: httpx may
    abandon it half-way, which then needs no finalisation)."""

    __slots__ = ("_exchange",)

    def __init__(self, exchange: Receiver) -> None:
        self._exchange = exchange

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        exchange = self._exchange
        try:
            chunk = await exchange.receive()
        except BaseException:
            await exchange.close()
            raise
        if chunk is None:
            raise StopAsyncIteration
        return chunk


class Receiver(Protocol):
    """What a :class:`ResponseBody` reads: an :class:`Exchange`, or an upgrade's (empty)."""

    async def receive(self) -> bytes | None: ...
    async def close(self) -> None: ...


class TransportBase(Generic[R]):
    """The public ``AsyncTransport`` classes, but for the package's base classes: each
    public module lists this first, then the package's ``AsyncBaseTransport``, and sets
    the two class variables."""

    # Bound by each subclass to its package's (a ClassVar may not name R: hence plain).
    flavour: Flavour[R]
    body_class: type[ResponseBody]

    def __init__(self, dispatcher: trio_pool.Dispatcher) -> None:
        self._core = TransportCore(dispatcher, self.flavour)

    @property
    def dispatcher(self) -> trio_pool.Dispatcher:
        """The dispatcher this transport sends through."""
        return self._core.dispatcher

    async def handle_async_request(self, request: RequestLike) -> R:
        """Send ``request``; return once the response head arrived (the body is read as
        httpx iterates it). A checkpoint."""
        return await self._core.handle(request, self.body_class)

    async def aclose(self) -> None:
        """Does nothing to the dispatcher (its ``async with`` owns it). A checkpoint."""
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.AsyncTransport over {self._core.dispatcher!r}>"
