"""``Dispatcher``: the public base class of everything that sends HTTP requests.

Theory of operation
-------------------
``Client``, ``Pool``, ``BalancedPool`` and ``trio_pool.testing.MockPool`` derive from this
abstract class, which holds only the interface (no state, no scheduler: the mock must not
inherit one it does not use). An application annotates its dependency with it, and a type
checker accepts any of them.

The request methods (:meth:`Dispatcher.request`, :meth:`~Dispatcher.stream`,
:meth:`~Dispatcher.pipeline`) are written once, here: they turn their keyword arguments into
the calls of a few private hooks that each class implements. ``request()`` with only a method
and a path — by far the most common call — does not build a ``RequestOptions``: it goes to
``_request_plain``, which a ``Pool`` serves from a prepared request. The hooks that run a
request return the awaitable rather than being coroutines themselves where that saves a
coroutine frame on the hot path (``Pool``'s).

The other members are abstract; ``Lifecycle`` and ``Emitter`` implement most of them, so a
concrete class lists those mixins *before* this class (their methods must come first in the
method resolution order).

:meth:`Dispatcher.compose` returns a :class:`Composed`, defined here because the base class
builds it: a ``Dispatcher`` whose hooks run a request through a chain of interceptors
(``request()`` collects the response the chain delivers, ``stream()`` relays it from a helper
task: ``_chain.py``), and whose every other member is its base's. It holds no state of its
own but the chain, so it needs no ``async with``: the base's block is its lifetime.

Two documented-internal hooks are the one seam through which the library's add-ons
(``trio_pool.opentelemetry``) learn what the public API does not say, instead of reading
each class's private state: :meth:`Dispatcher._root` (whose events and statistics these
are: a composed dispatcher's base) and :meth:`Dispatcher._origin_statistics` (the
statistics of each origin it holds connections to). Each class that knows better
overrides them; they read state, never change it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from .._errors import InvalidArgumentError
from ._chain import (
    ConstantHeaders,
    Fold,
    collect,
    fast_eligible,
    finish,
    fold,
    request_levels,
    stream,
    unfold,
)
from ._dispatch import check_dispatch_args
from ._models import RequestOptions
from ._origin import parse_origin

if TYPE_CHECKING:
    from ._dispatch import DispatchFunction, Handler, Interceptor
    from ._models import (
        BodyType,
        HeadersType,
        PoolStats,
        QueryType,
        Response,
        StreamResponse,
        Upgraded,
    )

__all__ = ["Composed", "Dispatcher"]


class Dispatcher(ABC):
    """What ``Client``, ``Pool``, ``BalancedPool`` and ``trio_pool.testing.MockPool`` have in
    common: annotate a parameter with it to accept any of them.

    Example::

        async def fetch_user(http: trio_pool.Dispatcher, user_id: int) -> dict:
            response = await http.request("GET", f"/users/{user_id}")
            response.raise_for_status()
            return response.json()

    It is their base class, so ``isinstance(obj, trio_pool.Dispatcher)`` tells whether
    ``obj`` is one of them. The request methods are the same everywhere; where a class adds
    to a method's meaning, its own documentation says so.
    """

    __slots__ = ()

    # ------------------------------------------------------------------ requests

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: HeadersType | None = None,
        body: BodyType | None = None,
        query: QueryType | None = None,
        idempotent: bool | None = None,
        reset: bool = False,
        capability: str | None = None,
        json: Any = None,
    ) -> Response:
        """Send a request and read its whole response. A checkpoint.

        The arguments are those of :class:`RequestOptions`: ``path`` may be an absolute URL
        of the dispatcher's own origin, ``body`` bytes, a str, an (async) iterable of bytes or
        a binary file, ``json`` a value sent as JSON. The connection is free for the
        next request before this returns. Non-2xx statuses are not errors (see
        ``Response.raise_for_status``). Cancelling the caller aborts the request (a
        connection cut mid-response is closed and replaced). A ``BalancedPool`` sends it to
        an upstream carrying ``capability`` (if given).

        Raises:
            InvalidArgumentError: a bad argument (nothing was sent).
            ClientClosedError, ClientDestroyedError: the dispatcher no longer takes requests.
            BalancedPoolMissingUpstreamError: (``BalancedPool``) no upstream carries
                ``capability``.
            TrioPoolError: the request failed (the HTTP errors in the error reference; for
                a ``MockPool``, ``MockNotMatchedError`` or a route's declared error).
        """
        if type(path) is not str or path[:1] != "/":  # an absolute URL, or a bad path
            path = self._origin_form(path)
        if (
            headers is None
            and body is None
            and query is None
            and idempotent is None
            and json is None
        ):
            return await self._request_plain(method, path, reset, capability)
        return await self._request_options(
            RequestOptions(
                method,
                path,
                headers=headers,
                body=body,
                query=query,
                idempotent=idempotent,
                reset=reset,
                capability=capability,
                json=json,
            )
        )

    def stream(
        self,
        method: str,
        path: str,
        *,
        headers: HeadersType | None = None,
        body: BodyType | None = None,
        query: QueryType | None = None,
        idempotent: bool | None = None,
        reset: bool = False,
        capability: str | None = None,
        json: Any = None,
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """Send a request; the ``async with`` block gets the response once its head arrived,
        and reads the body as it comes (``async for chunk in resp.body``, in the reader's
        task). Entering is a checkpoint; the arguments are checked then.

        Leaving the block before the body ended closes the connection (never leaked).
        Raises like :meth:`request`.
        """
        if type(path) is not str or path[:1] != "/":
            path = self._origin_form(path)
        return self._stream(
            RequestOptions(
                method,
                path,
                headers=headers,
                body=body,
                query=query,
                idempotent=idempotent,
                reset=reset,
                capability=capability,
                json=json,
            ),
            duplex=False,
        )

    def pipeline(
        self,
        method: str,
        path: str,
        *,
        headers: HeadersType | None = None,
        body: BodyType | None = None,
        query: QueryType | None = None,
        idempotent: bool | None = None,
        reset: bool = False,
        capability: str | None = None,
        json: Any = None,
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """Like :meth:`stream`, but full duplex (undici's ``pipeline``): the response is
        readable while ``body`` (typically an async iterable) is still being written, so a
        server may answer, and stream its answer, before the request ends. Entering is a
        checkpoint (it returns once the response head arrived).

        The body is written by a helper task in a nursery of this block (in the caller's
        task tree: nothing outlives the block). ``headers_timeout`` counts from the request
        *head* being written, since a duplex body may be long-lived; ``body_timeout`` is the
        idle gap between response chunks, as for :meth:`stream`. Such a request is never
        pipelined behind others nor re-sent (its body cannot be produced twice).

        A failure to write the body ends the request: reading the response (or entering)
        raises ``SocketError`` (the I/O error as ``__cause__``), the error the body iterable
        raised as itself, or ``RequestContentLengthMismatchError``. Cancellation of the
        caller, an error, or leaving the block before both directions ended stops the writer
        and closes the connection (never reused half-written).
        Raises like :meth:`request` otherwise. (A ``MockPool``'s route answers once the body
        has arrived whole.)
        """
        if type(path) is not str or path[:1] != "/":
            path = self._origin_form(path)
        return self._stream(
            RequestOptions(
                method,
                path,
                headers=headers,
                body=body,
                query=query,
                idempotent=idempotent,
                reset=reset,
                capability=capability,
                json=json,
            ),
            duplex=True,
        )

    # ------------------------------------------------------------------ hooks of the above

    def _origin_form(self, path: str) -> str:
        """A ``path`` that does not start with ``/``, as this dispatcher takes it: a
        one-origin dispatcher checks an absolute URL when it prepares the request (so this
        returns it as is, as it does a bad path, which ``prepare`` refuses); a
        ``BalancedPool`` turns one naming any of its upstreams into a path, since routing,
        not the URL, picks the upstream."""
        return path

    def _request_plain(
        self, method: str, path: str, reset: bool, capability: str | None
    ) -> Awaitable[Response]:
        """:meth:`request` with no headers, body, query nor idempotent override."""
        return self._request_options(
            RequestOptions(method, path, reset=reset, capability=capability)
        )

    def _request_headed(
        self,
        method: str,
        path: str,
        reset: bool,
        headers: tuple[tuple[str, str], ...],
        attempt: int,
    ) -> Awaitable[Response]:
        """:meth:`request` with only constant ``headers`` (the same for many requests, so a
        dispatcher may prepare them once) and ``attempt``: the bottom of a composed
        dispatcher's request-level fast path (trio_pool/http/_chain.py)."""
        return self._request_options(
            RequestOptions(method, path, headers=headers, reset=reset, attempt=attempt)
        )

    @abstractmethod
    def _request_options(self, options: RequestOptions) -> Awaitable[Response]:
        """:meth:`request` (its arguments unchecked)."""

    @abstractmethod
    def _stream(
        self, options: RequestOptions, *, duplex: bool
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """:meth:`stream`, or :meth:`pipeline` if ``duplex`` (checking ``options`` on entry)."""

    # ------------------------------------------------------------------ the rest

    @abstractmethod
    async def dispatch(self, options: RequestOptions, handler: Handler) -> None:
        """Send a request, driving ``handler``'s methods. A checkpoint."""

    @abstractmethod
    def upgrade(
        self, path: str, *, protocol: str = "websocket", headers: HeadersType | None = None
    ) -> AbstractAsyncContextManager[Upgraded]:
        """``async with``: the connection, once the server switched protocols."""

    @abstractmethod
    def connect(
        self, authority: str, *, headers: HeadersType | None = None
    ) -> AbstractAsyncContextManager[Upgraded]:
        """``async with``: a tunnel through a proxy (``CONNECT authority``)."""

    @abstractmethod
    async def close(self) -> None:
        """Refuse new requests, let the others finish, then close. A checkpoint."""

    @abstractmethod
    async def destroy(self, error: BaseException | None = None) -> None:
        """Fail every outstanding request with ``error`` and close. A checkpoint."""

    @property
    @abstractmethod
    def closed(self) -> bool:
        """True once closing began."""

    @property
    @abstractmethod
    def destroyed(self) -> bool:
        """True once destroying began."""

    @abstractmethod
    def statistics(self) -> PoolStats:
        """A snapshot of the counters. Not a checkpoint."""

    @abstractmethod
    def on(self, event: str, callback: Callable[..., object]) -> None:
        """Call ``callback`` on ``event``."""

    @abstractmethod
    def off(self, event: str, callback: Callable[..., object]) -> None:
        """Remove one registration of ``callback`` for ``event``."""

    # ------------------------------------------------------------------ composition

    def compose(self, *interceptors: Interceptor) -> Dispatcher:
        """This dispatcher with ``interceptors`` around its :meth:`dispatch`, the first one
        outermost (``trio_pool.compose(self, *interceptors)``). Not a checkpoint.

        The result has the whole ``Dispatcher`` surface: ``request()``, ``stream()``,
        ``pipeline()`` and ``dispatch()`` run through the interceptors; ``upgrade()``,
        ``connect()``, the lifetime (``close()``, ``destroy()``, ``closed``,
        ``destroyed``), ``statistics()`` and ``on()``/``off()`` are this dispatcher's. It
        needs no ``async with`` of its own: it lives within this dispatcher's block.

        Raises:
            InvalidArgumentError: an interceptor is not a callable, or did not return one.
        """
        return Composed(self, interceptors)

    def _path_origin(self) -> str | None:
        """The origin a request given by its path alone goes to: a one-origin dispatcher's
        own, None where there is no single one (an upstream of a ``BalancedPool`` is picked
        per request; an ``Agent`` takes absolute URLs)."""
        return None

    # ------------------------------------------------------------------ introspection

    def _root(self) -> Dispatcher:
        """The dispatcher whose events and statistics these are: this one (a composed
        dispatcher's base, see the module docstring). Not a checkpoint."""
        return self

    def _origin_statistics(self) -> list[tuple[str, PoolStats]]:
        """``(origin, statistics)`` for each origin this dispatcher holds connections to: a
        one-origin dispatcher's own, none where there is no single one (classes with
        several override it). Not a checkpoint."""
        origin = self._path_origin()
        return [] if origin is None else [(origin, self.statistics())]


class Composed(Dispatcher):
    """A dispatcher with interceptors around another's ``dispatch`` (:meth:`Dispatcher.compose`).

    In its dispatch chain, a request given by its path to a dispatcher of one origin carries
    the absolute URL (``http://host/path``), so an interceptor can resolve a relative
    ``Location`` and tell an origin change. The innermost step hands the base dispatcher the
    path again, and refuses an absolute URL of another origin with ``InvalidArgumentError``
    before anything is sent (that is how ``redirect()`` learns that a dispatcher of one
    origin cannot follow a hop to another; an ``Agent`` takes any).
    """

    __slots__ = ("_base", "_chain", "_fast", "_fold", "_origin", "_prefix")

    def __init__(self, base: Dispatcher, interceptors: tuple[Interceptor, ...]) -> None:
        self._base = base
        self._origin = base._path_origin()
        self._prefix = None if self._origin is None else self._origin + "/"
        chain: DispatchFunction = self._innermost
        for index in range(len(interceptors) - 1, -1, -1):
            interceptor = interceptors[index]
            if not callable(interceptor):
                raise InvalidArgumentError(
                    f"invalid interceptor {interceptor!r}: expected (dispatch) -> dispatch"
                )
            chain = interceptor(chain)
            if not callable(chain):
                raise InvalidArgumentError(
                    f"invalid interceptor {interceptor!r}: it returned {chain!r}, not a dispatch"
                    " function"
                )
        self._chain = chain
        # The request-level fast path of request() (see trio_pool/http/_chain.py), when
        # every interceptor offers one.
        # (Only over a dispatcher of one origin: there the levels can tell a path's origin.)
        levels = request_levels(interceptors) if self._origin is not None else None
        self._fast: Callable[[RequestOptions], Awaitable[Response]] | None = None
        if levels is not None:
            send: Callable[[RequestOptions], Awaitable[Response]] = self._innermost_request
            for level in reversed(levels):
                send = level(send)
            self._fast = send
        # ... and the plain request's shortcut through them, when they all allow it.
        self._fold: Fold | None = fold(interceptors) if levels is not None else None

    def __repr__(self) -> str:
        return f"<composed {self._base!r}>"

    def _path_origin(self) -> str | None:
        return self._origin

    def _root(self) -> Dispatcher:
        return self._base._root()

    def _origin_statistics(self) -> list[tuple[str, PoolStats]]:
        return self._base._origin_statistics()

    # ------------------------------------------------------------------ the chain

    def _absolute(self, options: RequestOptions) -> RequestOptions:
        """``options`` as the chain sees it (see the class docstring). Not a checkpoint."""
        origin = self._origin
        path = options.path
        if origin is None or type(path) is not str or not path.startswith("/"):
            return options
        return _evolve_path(options, origin + path)

    def _base_options(self, options: RequestOptions) -> RequestOptions:
        """``options`` as the base dispatcher takes them (its own path again; see the class
        docstring). Not a checkpoint."""
        prefix = self._prefix
        path = options.path
        if prefix is not None and type(path) is str and not path.startswith("/"):
            if path.startswith(prefix):
                return _evolve_path(options, path[len(prefix) - 1 :])
            return _evolve_path(options, self._own_path(path))
        return options

    def _innermost(self, options: RequestOptions, handler: Handler) -> Awaitable[None]:
        return self._base.dispatch(self._base_options(options), handler)

    def _innermost_request(self, options: RequestOptions) -> Awaitable[Response]:
        options = self._base_options(options)
        headers = options.headers
        if (
            type(headers) is ConstantHeaders
            and options.query is None
            and options.idempotent is None
            and options.capability is None
        ):  # (no body: the fast path takes none)
            return self._base._request_headed(
                options.method, options.path, options.reset, headers, options.attempt
            )
        return self._base._request_options(options)

    def _own_path(self, url: str) -> str:
        """The path of ``url``, an absolute URL of this dispatcher's origin not written as
        it normalises (``HTTP://Host:80/x``). Raises ``InvalidArgumentError`` for any other
        URL. Not a checkpoint."""
        try:
            parts = urlsplit(url)
            origin = parse_origin(f"{parts.scheme}://{parts.netloc}").text
        except (ValueError, InvalidArgumentError):
            origin = None
        if origin != self._origin:
            raise InvalidArgumentError(
                f"invalid path {url!r}: this dispatcher sends requests to {self._origin} only"
            )
        path = parts.path or "/"
        return f"{path}?{parts.query}" if parts.query else path

    def _request_plain(
        self, method: str, path: str, reset: bool, capability: str | None
    ) -> Awaitable[Response]:
        folded = self._fold
        if folded is not None and capability is None and type(path) is str and path[:1] == "/":
            return self._request_folded(folded, method, path, reset)
        fast = self._fast
        options = RequestOptions(method, path, reset=reset, capability=capability)
        if fast is not None:  # no body: the fast path takes it (see _request_options)
            return self._request_fast(fast, options)
        return collect(self._chain, self._absolute(options))

    def _request_options(self, options: RequestOptions) -> Awaitable[Response]:
        if self._fast is not None and fast_eligible(options):
            # As the caller gave it: the levels make a path absolute only when they need it.
            return self._request_fast(self._fast, options)
        return collect(self._chain, self._absolute(options))

    @staticmethod
    async def _request_fast(
        fast: Callable[[RequestOptions], Awaitable[Response]], options: RequestOptions
    ) -> Response:
        return finish(await fast(options), options.method)

    async def _request_folded(self, folded: Fold, method: str, path: str, reset: bool) -> Response:
        """The request levels folded into one send (see trio_pool/http/_chain.py); they
        run only if the answer concerns one of them. A checkpoint."""
        try:
            # Looked up per request, as the levels' bottom does (a test may wrap it).
            response = await self._base._request_headed(method, path, reset, folded.headers, 1)
        except Exception as exc:
            first: Response | Exception = exc
        else:
            if response.status not in folded.statuses and not (
                folded.encoded and response.headers._raw_get(b"content-encoding") is not None
            ):
                return finish(response, method)
            first = response
        send = unfold(folded.levels, self._innermost_request, first)
        del first  # an error's traceback holds this frame: no cycle through it
        return finish(await send(RequestOptions(method, path, reset=reset)), method)

    def _stream(
        self, options: RequestOptions, *, duplex: bool
    ) -> AbstractAsyncContextManager[StreamResponse]:
        # Duplex or not, the base's dispatch() writes the body before it reads the answer.
        return stream(self._chain, self._absolute(options))

    async def dispatch(self, options: RequestOptions, handler: Handler) -> None:
        """Send a request through the interceptors, driving ``handler``. A checkpoint.
        Raises like the base's ``dispatch()``."""
        check_dispatch_args(options, handler)
        await self._chain(self._absolute(options), handler)

    # ------------------------------------------------------------------ the base's

    def upgrade(
        self, path: str, *, protocol: str = "websocket", headers: HeadersType | None = None
    ) -> AbstractAsyncContextManager[Upgraded]:
        """The base's ``upgrade()`` (interceptors see requests, not handed-over connections)."""
        return self._base.upgrade(path, protocol=protocol, headers=headers)

    def connect(
        self, authority: str, *, headers: HeadersType | None = None
    ) -> AbstractAsyncContextManager[Upgraded]:
        """The base's ``connect()``."""
        return self._base.connect(authority, headers=headers)

    async def close(self) -> None:
        """The base's ``close()``. A checkpoint."""
        await self._base.close()

    async def destroy(self, error: BaseException | None = None) -> None:
        """The base's ``destroy()``. A checkpoint."""
        await self._base.destroy(error)

    @property
    def closed(self) -> bool:
        """The base's ``closed``."""
        return self._base.closed

    @property
    def destroyed(self) -> bool:
        """The base's ``destroyed``."""
        return self._base.destroyed

    def statistics(self) -> PoolStats:
        """The base's ``statistics()``. Not a checkpoint."""
        return self._base.statistics()

    def on(self, event: str, callback: Callable[..., object]) -> None:
        """Listen to the base's ``event``."""
        self._base.on(event, callback)

    def off(self, event: str, callback: Callable[..., object]) -> None:
        """Stop listening to the base's ``event``."""
        self._base.off(event, callback)


def _evolve_path(options: RequestOptions, path: str) -> RequestOptions:
    return attrs.evolve(options, path=path)
