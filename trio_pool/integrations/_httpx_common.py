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

httpx's timeouts (its ``timeout`` extension) are the deadlines of the head scope, a
:class:`~trio_pool.integrations._httpx_timeouts.HeadScope` that moves them as the request goes
from one phase to the next (``_httpx_timeouts``: the dispatcher and the upload probe of a
streamed request body tell the phases). Each read of a response body chunk runs in a scope
with the ``read`` deadline.

The dispatcher's own options (``connect_timeout``, ``headers_timeout``, ``body_timeout``)
still apply; their errors map as below.

Errors map to the flavour's classes (``_httpx_flavour``: :meth:`Flavour.translate`), the
trio_pool error as ``__cause__``; anything else (a cancellation, an error of httpx's body
iterator) passes as is.
Closing the transport never closes the dispatcher: its ``async with`` owns it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Generic, Protocol, TypeVar

import trio

import trio_pool
from trio_pool.http._dispatcher import StreamCall

from ._httpx_flavour import Flavour
from ._httpx_timeouts import HeadScope, Timeouts, Upload
from ._httpx_upgrade import NetworkStream, Upgrade, UpgradedLike

__all__ = ["Exchange", "Flavour", "RequestLike", "ResponseBody", "TransportBase", "TransportCore"]

R = TypeVar("R", covariant=True)  # a response class: only ever produced

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
    # As received (names as the server sent them, as httpx's own transport gives them),
    # never decoded and encoded again.
    return headers._raw_pairs()


def _authority_of(url: URLLike) -> str:
    """The URL's authority as httpx writes its ``Host`` header (default port omitted)."""
    host = url.host.lower()
    if ":" in host:
        host = f"[{host}]"
    port = url.port
    if port is None or port == _DEFAULT_PORTS[url.scheme]:
        return host
    return f"{host}:{port}"


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
                self.timeouts, body=body is not None, streamed=isinstance(body, Upload)
            )
            if isinstance(body, Upload):
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
        length = response.headers._raw_get(b"content-length")  # not decoding the others
        if length is not None and length.isdigit():
            self._left = int(length)
        return response

    # ------------------------------------------------------------------ body

    async def receive(self) -> bytes | None:
        """The next response body chunk, or None at its end. A checkpoint."""
        response = self._response
        assert response is not None
        body = self._body_it
        if body is None:
            body = self._body_it = response.body
        read = self.timeouts.read
        left = self._left
        try:
            if read is None or left == 0 or response._ready():
                # No deadline; or the announced length has all arrived, or the next step
                # has, so it comes without another read from the network (a cancel scope
                # less per chunk).
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
        closed. Idempotent; a checkpoint only the first time, and never over a ``Pool`` or
        a ``Client`` (their ``stream()`` is left synchronously)."""
        if self._closed:
            return
        self._closed = True
        context, self._context = self._context, None
        if isinstance(context, StreamCall):
            context.close()  # a Pool's or a Client's: synchronous
        elif context is not None:
            # Shielded: closing is bookkeeping, it must finish even for a cancelled caller.
            with trio.CancelScope(shield=True):
                await context.__aexit__(None, None, None)


def _body_of(request: RequestLike, flavour: Flavour[object]) -> bytes | Upload:
    """The body of a request httpx framed: bytes (httpx holds it whole), or an upload probe
    over httpx's stream."""
    try:
        return request.content
    except flavour.request_not_read:
        return Upload(request.stream)


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
