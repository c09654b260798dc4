"""``interceptors.redirect()``: follow 301/302/303/307/308.

Theory of operation
-------------------
One :class:`_Follow` handler serves every hop of a request, in the caller's task. A hop's
response is either *passed on* to the outer handler (anything but a redirect it can follow)
or *held*: a redirect it will follow, whose head is kept and whose body is read into a small
buffer (:data:`~._relay.DRAIN_LIMIT` bytes; past that the redirect is passed on as it is,
which is also what happens to a redirect that cannot be followed). Once the held body has
ended, the next hop is sent with the options :func:`next_hop` computed; its
``on_request_start`` drops the held response for good.

The next hop goes to the dispatch below, which refuses, with ``InvalidArgumentError`` and
before anything is sent, a URL it cannot reach (a dispatcher of one origin, asked for
another; see ``Composed``). The held redirect is then given to the outer handler as the
answer: so a one-origin dispatcher returns a cross-origin 3xx as is, and an ``Agent``
follows it, with no list of what reaches where.

Only this task changes a ``_Follow``; the outer handler hears ``on_request_start`` once and
then one response or one ``on_response_error`` (see ``_relay.py``).

Rules (RFC 9110 15.4, as undici and the browsers): 303 becomes ``GET`` without a body
(``HEAD`` stays ``HEAD``), as do 301 and 302 answering a ``POST``; otherwise the method and
body are kept, if the body can be sent again (else the redirect is returned as is). A
``Location`` is resolved against the request's URL (its fragment dropped); one that is not
``http``/``https`` is not followed. On a change of origin, ``authorization``, ``cookie``,
``proxy-authorization`` and ``host`` are dropped; with the body, its ``content-*`` headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urldefrag, urljoin, urlsplit

import attrs

from .._errors import InvalidArgumentError, TooManyRedirectsError, TrioPoolError
from ..http._chain import Settles, absolute, offer_request_level
from ..http._dispatch import call, start_call
from ..http._models import RequestOptions
from ._relay import DRAIN_LIMIT, Relay, between
from ._replay import Replay, readable_again, replay_of

if TYPE_CHECKING:
    from ..http._chain import Send
    from ..http._dispatch import Controller, DispatchFunction, Handler, Interceptor
    from ..http._headers import Headers
    from ..http._models import Response

__all__ = ["REDIRECT_STATUSES", "next_hop", "redirect"]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization", "host"})
_BODY_HEADERS = frozenset({"content-length", "content-type", "content-encoding", "expect"})
_HAS_JSON = "json" in attrs.fields_dict(RequestOptions)  # API.md section 4's json=


def redirect(max_redirections: int = 5) -> Interceptor:
    """An interceptor that follows redirects (301, 302, 303, 307, 308), at most
    ``max_redirections`` of them per request (0: none, every 3xx is returned as is).

    303 (and 301/302 answering a ``POST``) is followed with ``GET`` and no body (``HEAD``
    stays ``HEAD``); 307, 308 (and 301/302 otherwise) keep the method and the body when the
    body can be sent again (``bytes``, ``str``, ``json=``, a list of chunks, a file that can
    seek), else the redirect is returned as is. A relative ``Location`` is resolved against
    the request's URL. A hop to another origin is followed only if the dispatcher can reach
    it (an ``Agent``); a dispatcher of one origin returns that redirect as is. On a change of
    origin the ``authorization``, ``cookie``, ``proxy-authorization`` and ``host`` headers
    are dropped. The body of a redirect that is followed is read (up to 64 KiB, else its
    connection is closed), never left holding its connection. ``Response.url`` is the last
    URL.

    The hops run in the caller's task, one after the other; cancelling the caller cancels
    the current one.

    Raises:
        InvalidArgumentError: ``max_redirections`` is not an int >= 0.

    A request through it raises ``TooManyRedirectsError`` when one more redirect comes than
    allowed.
    """
    if type(max_redirections) is not int or max_redirections < 0:
        raise InvalidArgumentError(
            f"invalid max_redirections {max_redirections!r}: expected an int >= 0"
        )

    def interceptor(dispatch: DispatchFunction) -> DispatchFunction:
        if max_redirections == 0:
            return dispatch

        async def redirecting(options: RequestOptions, handler: Handler) -> None:
            await _follow(dispatch, options, handler, max_redirections)

        return redirecting

    def level(send: Send) -> Send:
        if max_redirections == 0:
            return send

        def redirecting(options: RequestOptions) -> Awaitable[Response]:
            return _follow_level(send, options, max_redirections)

        return redirecting

    # It acts on a redirect only (none if max_redirections is 0: the level is the send).
    statuses = REDIRECT_STATUSES if max_redirections else frozenset()
    return offer_request_level(interceptor, level, Settles(statuses=statuses))


async def _follow_level(send: Send, options: RequestOptions, limit: int) -> Response:
    """The request level of :func:`redirect` (see trio_pool/http/_chain.py): ``options``
    (no body) and every hop of its redirects, by the rules of :class:`_Follow`. A
    checkpoint."""
    options = readable_again(options)  # the next hop sends its headers again
    response = await send(options)
    hops = 0
    while response.status in REDIRECT_STATUSES:
        options = absolute(options, response)
        planned = next_hop(options, response.status, response.headers, replayable=True)
        if planned is None:
            return response
        if hops >= limit:
            raise TooManyRedirectsError(
                f"more than {limit} redirects (the last to {response.headers.get('location')!r})"
            )
        if len(response.body) > DRAIN_LIMIT:
            return response  # too long to hold: a handler passes it on as it is
        try:
            following = await send(planned)
        except InvalidArgumentError:
            return response  # a URL the dispatcher cannot reach: the redirect is the answer
        hops += 1
        options, response = planned, following
    return response


async def _follow(
    dispatch: DispatchFunction, options: RequestOptions, handler: Handler, limit: int
) -> None:
    """Send ``options`` and every hop of its redirects. A checkpoint."""
    options = readable_again(options)  # the next hop sends them again
    replay = replay_of(options.body)
    if replay is not None and replay.marks:
        await replay.mark()
    follow = _Follow(handler, options, replay, limit)
    await dispatch(options, follow)
    while follow.next is not None:
        options, follow.next = follow.next, None
        if not await between(handler, follow.relay, 0, replay if options.body else None):
            return
        follow.sending = options
        try:
            await dispatch(options, follow)
        except InvalidArgumentError:
            # Refused before anything was sent: a URL this dispatcher cannot reach (or
            # cannot send); the redirect is the answer.
            await follow.give_back()
            return
        except TrioPoolError as exc:  # refused at once (the dispatcher closed meanwhile)
            await call(handler.on_response_error, follow.relay, exc)
            return


class _Follow:
    """The handler every hop of one request reports to (see the module docstring)."""

    __slots__ = (
        "buffer",
        "held",
        "hops",
        "limit",
        "next",
        "options",
        "outer",
        "passing",
        "planned",
        "relay",
        "replay",
        "sending",
        "size",
        "started",
        "too_many",
        "trailers",
    )

    def __init__(
        self, outer: Handler, options: RequestOptions, replay: Replay | None, limit: int
    ) -> None:
        self.outer = outer
        self.options = options  # the current hop's
        self.sending: RequestOptions | None = None  # the next hop's, once sent
        self.replay = replay
        self.limit = limit
        self.relay = Relay()
        self.started = False
        self.hops = 0
        self.passing = True
        self.held: tuple[int, Headers, str] | None = None
        self.buffer: list[bytes] = []
        self.size = 0
        self.trailers: Headers | None = None
        self.planned: RequestOptions | None = None  # the hop a held redirect asks for
        self.next: RequestOptions | None = None  # ... once its body has ended
        self.too_many: TooManyRedirectsError | None = None

    def on_request_start(self, controller: Controller) -> Awaitable[object] | None:
        self.relay.inner = controller
        sending = self.sending
        if sending is not None:  # a new hop: the redirect that led here is gone for good
            self.sending = None
            self.options = sending
            self.relay.url = _url_of(sending)
            self.hops += 1
            self.held = None
            self.buffer = []
            self.size = 0
        if self.started:
            return None
        self.started = True
        return start_call(self.outer.on_request_start, self.relay)

    def on_response_start(
        self, controller: Controller, status: int, headers: Headers, reason: str
    ) -> Awaitable[object] | None:
        self.relay.inner = controller
        if status in REDIRECT_STATUSES:
            planned = next_hop(self.options, status, headers, replayable=self.replay is not None)
            if planned is not None:
                if self.hops >= self.limit:
                    self.too_many = TooManyRedirectsError(
                        f"more than {self.limit} redirects (the last to"
                        f" {headers.get('location')!r})"
                    )
                self.passing = False
                self.held = (status, headers, reason)
                self.planned = planned
                return None
        self.passing = True
        return start_call(self.outer.on_response_start, self.relay, status, headers, reason)

    def on_response_data(self, controller: Controller, chunk: bytes) -> Awaitable[object] | None:
        if self.passing:
            return start_call(self.outer.on_response_data, self.relay, chunk)
        self.buffer.append(chunk)
        self.size += len(chunk)
        if self.size <= DRAIN_LIMIT:
            return None
        # Too long to hold: not followed, but passed on as it is (or, over the limit, its
        # connection is closed and the error is the answer).
        self.passing = True
        self.planned = None
        if self.too_many is not None:
            raise self.too_many
        return self._pass_held()

    def on_response_end(
        self, controller: Controller, trailers: Headers
    ) -> Awaitable[object] | None:
        if self.passing:
            return start_call(self.outer.on_response_end, self.relay, trailers)
        self.trailers = trailers
        if self.too_many is not None:
            self.passing = True
            return start_call(self.outer.on_response_error, self.relay, self.too_many)
        self.next, self.planned = self.planned, None
        return None

    def on_response_error(
        self, controller: Controller, error: BaseException
    ) -> Awaitable[object] | None:
        self.next = self.planned = None
        return start_call(self.outer.on_response_error, self.relay, error)

    async def _pass_held(self) -> None:
        assert self.held is not None
        await call(self.outer.on_response_start, self.relay, *self.held)
        buffer, self.buffer = self.buffer, []
        for chunk in buffer:
            await call(self.outer.on_response_data, self.relay, chunk)

    async def give_back(self) -> None:
        """The held redirect is the answer after all (its next hop was refused). A
        checkpoint if the outer handler is async."""
        assert self.trailers is not None
        self.sending = None
        await self._pass_held()
        await call(self.outer.on_response_end, self.relay, self.trailers)


def _url_of(options: RequestOptions) -> str:
    return options.path


def next_hop(
    options: RequestOptions, status: int, headers: Headers, *, replayable: bool
) -> RequestOptions | None:
    """The request that follows the redirect ``status``/``headers`` answering ``options``,
    or None if it is not to be followed (no usable ``Location``; a body that would have to
    be sent again but cannot). Not a checkpoint."""
    location = headers.get("location")
    if not location:
        return None
    try:
        target, _ = urldefrag(urljoin(options.path, location.strip()))
        parts = urlsplit(target)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https", "") or (not parts.scheme and parts.netloc):
        return None
    method = options.method
    keeps_body = not (status == 303 or (status in (301, 302) and method == "POST"))
    if keeps_body and not replayable:
        return None
    moved = _origin(target) != _origin(options.path)
    drop = (_CREDENTIALS if moved else frozenset()) | (frozenset() if keeps_body else _BODY_HEADERS)
    changes: dict[str, Any] = {"path": target, "query": None}
    if drop and options.headers is not None:
        changes["headers"] = [pair for pair in _pairs(options.headers) if _name(pair) not in drop]
    if not keeps_body:
        changes["method"] = "HEAD" if method == "HEAD" else "GET"
        changes["body"] = None
        if _HAS_JSON:
            changes["json"] = None
    return attrs.evolve(options, **changes)


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` of an absolute URL (default port filled in), None for a path
    alone (its origin is the dispatcher's)."""
    parts = urlsplit(url)
    if not parts.scheme:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


def _pairs(headers: object) -> list[tuple[Any, Any]]:
    items: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers  # type: ignore[assignment]
    return list(items)


def _name(pair: tuple[Any, Any]) -> str:
    name = pair[0]
    text = name.decode("latin-1") if isinstance(name, bytes) else str(name)
    return text.lower()
