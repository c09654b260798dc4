"""Responses built from the handler protocol: what a composed dispatcher's ``request()`` and
``stream()`` hand to its dispatch chain.

Theory of operation
-------------------
A composed dispatcher (``compose()``) has nothing but a dispatch function: its interceptors
see every request as ``dispatch(options, handler)`` calls. Its ``request()`` and
``stream()`` are therefore handlers:

* :func:`collect` drives the chain in the caller's task with a :class:`_Collect` handler
  that keeps the head, the chunks and the trailers, and builds the ``Response`` once the
  chain returned (or raises the error its ``on_response_error`` got).
* :func:`stream` runs the chain in a helper task of the caller's block (``open_helpers``:
  nothing outlives the block, the block's own exception leaves as itself) with a
  :class:`_Relay` handler. The head wakes the caller; each chunk is handed over a
  zero-capacity memory channel, so the chain (and the connection) is read only as fast as
  the caller reads the body: the channel is the backpressure. Leaving the block before the
  end cancels the helper task, and with it the request (its connection is closed, never
  reused half-read, as a plain ``stream()`` does).

The helper task is the only writer of a :class:`_Relay`'s fields; the caller reads them only
after the events that publish them (the head event, the channel's end).

The final URL of a request (``Response.url``) is the one an interceptor that moved the
request (``redirect()``) reports on the controller it gives the handler (a ``url``
attribute), else the URL the request was sent to: :func:`final_url`.

The request-level fast path (the one seam)
------------------------------------------
Driving a chain of handlers costs, per request, a handler object per interceptor, a
``_Collect``, and a call per event through each of them. ``request()`` does not need that
when every interceptor can do its work on a *finished* response: each built-in interceptor
offers a request level (:func:`offer_request_level`), a ``(send) -> send`` function over
``async (RequestOptions) -> Response`` that sends with the ``send`` below it and looks at the
whole response (``redirect()`` follows a 3xx, ``retry()`` sends again after a retryable
status or error, ``decompress()`` decodes a body with a ``content-encoding``), with the same
rules as its handler (they share the deciding functions). :func:`request_levels` returns
them when *every* interceptor of a ``compose()`` has one, and :func:`fast_eligible` says
whether a request can take them: no body (nothing to rewind, nothing one-shot). Then
``Composed.request()`` (over a dispatcher of one origin) sends through the levels down to
the base dispatcher's own ``request()`` path, the request's path as the caller gave it (a
level that needs it absolute, ``redirect()`` following a 3xx, makes it so from the
response's URL: :func:`absolute`); anything else (a user-written interceptor anywhere in
the chain, a body, ``stream()``, ``dispatch()``, an ``Agent`` or ``BalancedPool`` below)
runs the dispatch chain. What differs is only *how much* of a
response that is not the answer is read: the fast path has read it whole (bounded by the
dispatcher's ``max_response_size``) where a handler drains it (redirect: up to 64 KiB,
else it is the answer; retry: discarded, its connection closed past 64 KiB). Hence also:
a retryable status whose body then fails to arrive is, on the fast path, that error
(retried if it is one of ``retry()``'s ``errors``), where a handler had already decided
to retry at the head. :func:`finish` makes the ``Response`` say what
:func:`collect` would (the request's method, HTTP/1.1).

What keeps it cheap: a level that has nothing to do costs one call and one comparison
(``decompress()`` looks for ``content-encoding`` in the undecoded headers); the headers a
level adds to every request are a :class:`ConstantHeaders` (one object), which the bottom
of the path hands to the base's ``_request_headed`` so a ``Pool`` prepares that request once
(``Prepared``), as it does a request with no headers; options are copied with
:func:`with_headers` (``attrs.evolve`` costs three times as much).

The folded levels (the plain request's shortcut)
------------------------------------------------
Even so, each level is a coroutine frame and a copy of the options, which on a plain 200
cost as much as the request itself. So a level may also say, when it is offered, *when it
acts* (a :class:`Settles`): the statuses it may act on, whether a ``content-encoding`` may
concern it, and the constant headers it adds to a request that has none; on its first send
it passes the request on otherwise unchanged, and a response outside those cases (not an
error) it returns untouched. When every level of a chain says so (:func:`fold`), a request
with only a method and a path (``Composed._request_plain``) is sent *once*, straight to the
base's ``_request_headed`` with the headers of the whole chain, in one coroutine; if the
answer is one no level acts on, it is the answer (what the levels would have returned).
Otherwise — an error, or a status or a coding some level acts on — the levels run as usual,
over a send that hands back that first answer for their first send (:func:`unfold`), and
the real one after: every decision is still the levels' own code, and a request is never
sent twice for it. Measured by ``benchmarks/interceptors_overhead.py`` (target: 1.10x a
bare ``request()``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import attrs
import trio

from .._errors import RequestAbortedError, TrioPoolError
from .._supervisor import open_helpers
from ._headers import Headers
from ._models import HeadersType, RequestOptions, Response, StreamResponse
from ._prepare import encode_query

if TYPE_CHECKING:
    from ._dispatch import Controller, DispatchFunction, Interceptor

__all__ = [
    "ConstantHeaders",
    "Fold",
    "RequestLevel",
    "Send",
    "Settles",
    "absolute",
    "collect",
    "fast_eligible",
    "final_url",
    "finish",
    "fold",
    "offer_request_level",
    "request_levels",
    "stream",
    "unfold",
    "with_headers",
]

Send = Callable[[RequestOptions], Awaitable[Response]]
"""A request level's view of what is below it: send ``options``, return the whole response."""
RequestLevel = Callable[[Send], Send]
"""What an interceptor does at the request level (see the module docstring)."""
_LEVEL = "_trio_pool_request_level"  # the attribute an interceptor offers its level by


class ConstantHeaders(tuple[tuple[str, str], ...]):
    """Request headers a request level adds, the same object for every request (valid
    ``str`` pairs): at the bottom of the fast path a dispatcher of one origin prepares a
    request with them once, as it does a request with no headers (``Prepared``)."""

    __slots__ = ()


def with_headers(options: RequestOptions, headers: HeadersType) -> RequestOptions:
    """``options`` with ``headers`` (``attrs.evolve``, at a third of its cost: this is per
    request). Not a checkpoint."""
    return RequestOptions(
        options.method,
        options.path,
        headers=headers,
        body=options.body,
        query=options.query,
        idempotent=options.idempotent,
        reset=options.reset,
        capability=options.capability,
        json=options.json,
        attempt=options.attempt,
    )


# with_headers() copies every field by name: a field added to RequestOptions must be added
# there too (this fails at import until it is).
assert tuple(attrs.fields_dict(RequestOptions)) == (
    "method",
    "path",
    "headers",
    "body",
    "query",
    "idempotent",
    "reset",
    "capability",
    "json",
    "attempt",
)


@attrs.frozen
class Settles:
    """When a request level acts, for :func:`fold` (see the module docstring): it adds
    ``headers`` (None: none) to a request that has none and passes it on otherwise
    unchanged, and returns untouched any response whose status is not in ``statuses`` and,
    unless ``encoded``, whatever its ``content-encoding``."""

    statuses: frozenset[int] = frozenset()
    encoded: bool = False
    headers: ConstantHeaders | None = None


@attrs.frozen
class _Offer:
    level: RequestLevel
    settles: Settles | None


@attrs.frozen
class Fold:
    """What a chain of levels that all said when they act (:func:`fold`) makes of a request
    with only a method and a path: it is sent with ``headers``, and its answer is the
    levels' (untouched) unless its status is in ``statuses`` or, if ``encoded``, it has a
    ``content-encoding``. ``levels`` are the levels themselves, outermost first."""

    headers: ConstantHeaders
    statuses: frozenset[int]
    encoded: bool
    levels: tuple[RequestLevel, ...]


def offer_request_level(
    interceptor: Interceptor, level: RequestLevel, settles: Settles | None = None
) -> Interceptor:
    """``interceptor``, offering ``level`` as its request level, and if ``settles`` is
    given, saying when that level acts (see :class:`Settles`). Not a checkpoint."""
    setattr(interceptor, _LEVEL, _Offer(level, settles))
    return interceptor


def _offers(interceptors: Sequence[object]) -> list[_Offer] | None:
    offers = []
    for interceptor in interceptors:
        offer = getattr(interceptor, _LEVEL, None)
        if not isinstance(offer, _Offer):
            return None
        offers.append(offer)
    return offers


def request_levels(interceptors: Sequence[object]) -> tuple[RequestLevel, ...] | None:
    """The request levels of ``interceptors`` (outermost first) if each one has one, else
    None. Not a checkpoint."""
    offers = _offers(interceptors)
    return None if offers is None else tuple(offer.level for offer in offers)


def fold(interceptors: Sequence[object]) -> Fold | None:
    """The :class:`Fold` of ``interceptors`` if each one offers a request level and says
    when it acts, and at most one adds headers (a second would see the first's: a request
    that has some); else None. Not a checkpoint."""
    offers = _offers(interceptors)
    if offers is None:
        return None
    headers: ConstantHeaders | None = None
    statuses: frozenset[int] = frozenset()
    encoded = False
    for offer in offers:
        settles = offer.settles
        if settles is None:
            return None
        if settles.headers is not None:
            if headers is not None:
                return None
            headers = settles.headers
        statuses |= settles.statuses
        encoded = encoded or settles.encoded
    levels = tuple(offer.level for offer in offers)
    return Fold(headers or ConstantHeaders(), statuses, encoded, levels)


class _Primed:
    """The send under the levels of :func:`unfold`: its first call hands back the answer
    the request already had, the next ones send."""

    __slots__ = ("_first", "_send")

    def __init__(self, send: Send, first: Response | Exception) -> None:
        self._send = send
        self._first: Response | Exception | None = first

    def __call__(self, options: RequestOptions) -> Awaitable[Response]:
        first = self._first
        if first is None:
            return self._send(options)
        self._first = None
        return _given(first)


async def _given(first: Response | Exception) -> Response:
    if isinstance(first, Exception):
        try:
            raise first
        finally:
            del first  # not kept by this frame, which its traceback holds (no cycle)
    return first


def unfold(levels: Sequence[RequestLevel], send: Send, first: Response | Exception) -> Send:
    """The request levels ``levels`` over ``send``, the first send answered by ``first``
    (the response, or the error, of the request as :class:`Fold` sent it). Not a
    checkpoint."""
    composed: Send = _Primed(send, first)
    for level in reversed(levels):
        composed = level(composed)
    return composed


def fast_eligible(options: RequestOptions) -> bool:
    """Whether ``options`` may take the request levels: no body. Not a checkpoint."""
    return options.body is None and options.json is None


def absolute(options: RequestOptions, response: Response) -> RequestOptions:
    """``options`` with its path absolute, as a dispatch chain sees it, its origin taken from
    ``response`` (its answer, from a dispatcher of one origin). Not a checkpoint."""
    path = options.path
    if not path.startswith("/"):
        return options
    parts = urlsplit(response.url)
    return attrs.evolve(options, path=f"{parts.scheme}://{parts.netloc}{path}")


def finish(response: Response, method: str) -> Response:
    """``response`` (from the request levels, for a request of ``method``) as
    :func:`collect` makes it: the request's own method, HTTP/1.1. Not a checkpoint."""
    if response._method == method and response.http_version == "1.1":
        return response
    return attrs.evolve(response, http_version="1.1", method=method)


def request_url(options: RequestOptions) -> str:
    """The URL ``options`` asks for: its path (absolute in a composed dispatcher of one
    origin, or for an Agent) with its query. Not a checkpoint."""
    query = options.query
    if not query:
        return options.path
    encoded = encode_query(query)
    return f"{options.path}{'&' if '?' in options.path else '?'}{encoded}"


def final_url(controller: object, options: RequestOptions) -> str:
    """Where the response came from: the ``url`` an interceptor put on the controller (after
    redirects), else the request's own URL. Not a checkpoint."""
    url = getattr(controller, "url", None)
    return url if isinstance(url, str) else request_url(options)


def new_response(
    status: int,
    reason: str,
    headers: Headers,
    trailers: Headers,
    body: bytes,
    url: str,
    method: str,
) -> Response:
    """The one place a composed dispatcher builds a ``Response``."""
    return Response(status, reason, "1.1", headers, trailers, body, url=url, method=method)


def new_stream_response(
    status: int, reason: str, headers: Headers, source: _Relay, url: str, method: str
) -> StreamResponse:
    """The one place a composed dispatcher builds a ``StreamResponse``."""
    return StreamResponse(status, reason, "1.1", headers, source=source, url=url, method=method)


class _Head:
    """What both handlers keep of a response's start."""

    __slots__ = ("controller", "head")

    def __init__(self) -> None:
        self.controller: Controller | None = None
        self.head: tuple[int, Headers, str] | None = None

    def on_request_start(self, controller: Controller) -> None:
        self.controller = controller

    def on_response_start(
        self, controller: Controller, status: int, headers: Headers, reason: str
    ) -> None:
        self.controller = controller
        self.head = (status, headers, reason)


class _Collect(_Head):
    """The handler of :func:`collect`: keeps everything, for one ``Response``."""

    __slots__ = ("chunks", "error", "trailers")

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[bytes] = []
        self.trailers: Headers | None = None
        self.error: BaseException | None = None

    def on_response_data(self, controller: Controller, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def on_response_end(self, controller: Controller, trailers: Headers) -> None:
        self.trailers = trailers

    def on_response_error(self, controller: Controller, error: BaseException) -> None:
        self.error = error


async def collect(dispatch: DispatchFunction, options: RequestOptions) -> Response:
    """Run ``options`` through ``dispatch`` in this task and return the whole response. A
    checkpoint. Raises what the chain raised, or the error its handler was given."""
    handler = _Collect()
    await dispatch(options, handler)
    if handler.error is not None:
        raise handler.error
    if handler.head is None or handler.trailers is None:
        raise TrioPoolError("an interceptor ended a request without a response or an error")
    status, headers, reason = handler.head
    chunks = handler.chunks
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    url = final_url(handler.controller, options)
    return new_response(status, reason, headers, handler.trailers, body, url, options.method)


class _Relay(_Head):
    """The handler of :func:`stream` (the helper task's side) and the body source of its
    ``StreamResponse`` (the reader's side)."""

    def __init__(self) -> None:
        super().__init__()
        self.headed = trio.Event()  # the head or an error is there
        self.trailers_ = Headers()
        self.error: BaseException | None = None
        self.scope = trio.CancelScope()
        self._send, self._receive = trio.open_memory_channel[bytes](0)

    # The handler (helper task).

    def on_response_start(
        self, controller: Controller, status: int, headers: Headers, reason: str
    ) -> None:
        super().on_response_start(controller, status, headers, reason)
        self.headed.set()

    async def on_response_data(self, controller: Controller, chunk: bytes) -> None:
        await self._send.send(chunk)  # waits for the reader: the backpressure

    def on_response_end(self, controller: Controller, trailers: Headers) -> None:
        self.trailers_ = trailers
        self._send.close()

    def on_response_error(self, controller: Controller, error: BaseException) -> None:
        self.error = error
        self.headed.set()
        self._send.close()

    async def run(self, dispatch: DispatchFunction, options: RequestOptions) -> None:
        with self.scope:
            try:
                await dispatch(options, self)
            except Exception as exc:  # refused before it started (a bad argument)
                self.error = exc
        self.headed.set()
        self._send.close()

    # The body source (reader's task).

    async def receive(self) -> bytes | None:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self.error is not None:
                raise self.error from None
            return None
        except trio.ClosedResourceError:
            raise RequestAbortedError("the stream was closed before its end") from None

    def trailers(self) -> Headers:
        return self.trailers_

    def close(self) -> None:
        self._receive.close()
        self.scope.cancel()  # a request still running is aborted, its connection closed


@asynccontextmanager
async def stream(
    dispatch: DispatchFunction, options: RequestOptions
) -> AsyncIterator[StreamResponse]:
    """Run ``options`` through ``dispatch`` in a helper task; the block gets the response
    once its head arrived and reads the body as the chain delivers it. Entering is a
    checkpoint; leaving stops the request if it has not ended (see the module docstring)."""
    relay = _Relay()
    async with open_helpers() as helpers:
        helpers.start_soon(relay.run, dispatch, options)
        try:
            await relay.headed.wait()
            if relay.head is None:
                raise relay.error or TrioPoolError(
                    "an interceptor ended a request without a response or an error"
                )
            status, headers, reason = relay.head
            url = final_url(relay.controller, options)
            yield new_stream_response(status, reason, headers, relay, url, options.method)
        finally:
            relay.close()
