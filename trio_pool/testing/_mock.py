"""``MockPool``: a real ``trio_pool.Pool`` whose connections go to an in-memory router.

Theory of operation
-------------------
A ``MockPool`` is a ``Pool`` (the very class applications use, unchanged) plus a *router*:
the pool's ``connector=`` option opens each connection as a pair of in-memory streams
(``trio.testing.memory_stream_pair``), and the server end is served by an h11 server task
(:class:`~trio_pool.testing.H11Server` of ``_server.py``) whose script answers every request
from the declared routes (``_routes.py``). So everything between the caller and the bytes is
the real pool: validation, the queue, connections, keep-alive, timeouts, cancellation,
``statistics()``, events, ``dispatch()``, duplex ``pipeline()``, ``upgrade()``/``connect()``.

The router, for each request it has read whole: records a :class:`MockCall` (before
matching, so an unmatched one is in ``calls`` too), charges the first route that accepts it
(before its delay, so two concurrent requests never share a ``times(1)`` reply), waits the
route's delay in the server task (a ``trio.sleep``; the pool's ``headers_timeout`` and the
caller's cancellation end the wait as with any server), then sends the reply with h11.

A request that must fail with an error (``reply_with_error``, :class:`MockNotMatchedError`,
an ``InvalidArgumentError`` for a bad dynamic reply) fails through its connection: the router
marks the pool's end (:class:`_FailingEnd`) with the error and closes the server end; the
pool's next read that reaches the end of the stream raises the error itself (bytes before
the end, such as earlier pipelined responses, are read first). The pool lets an exception of
its transport through as itself (it maps only stream errors and ``OSError``, so a declared
``OSError`` arrives as ``SocketError``). The mock's pool never re-sends a request
(``retry_idempotent=False``): each request is charged to a route once.

State and owners: the routes and ``calls`` lists are appended only by :meth:`MockPool.intercept`
(through the interceptor) and by the router's script; ``_FailingEnd._error`` is set only by
the router; the pool's state is the pool's. The server runs between entering and leaving the
mock's ``async with`` block: leaving closes the pool first, then cancels the server's tasks
(a route delayed for ever among them).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, final
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio
import trio.testing

from trio_pool import (
    Dispatcher,
    Headers,
    InvalidArgumentError,
    Pool,
    PoolStats,
    RequestOptions,
    Response,
    StreamResponse,
)

from ._routes import (
    BodyMatcher,
    HeadersMatcher,
    Matcher,
    MockCall,
    MockInterceptor,
    MockNotMatchedError,
    MockScope,
    QueryMatcher,
    _Matchers,
    _Rendered,
    _Switch,
)
from ._server import H11Server, ServerConnection, ServerRequest, serve_memory

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["MockPool"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NO_BODY_STATUSES = (204, 304)


class _FailingEnd(trio.abc.ReceiveStream):
    """The receiving half of the pool's end of an in-memory connection; the router can make
    it fail with an error, raised by the read that reaches the end of the stream."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._error: Exception | None = None

    def fail(self, error: Exception) -> None:
        """Make the read at the end of the stream raise ``error``. Not a checkpoint."""
        self._error = error

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._stream.receive_some(max_bytes)
        if not data and self._error is not None:
            # The same declared instance may be raised many times: each from a clean traceback.
            raise self._error.with_traceback(None)
        return data

    async def aclose(self) -> None:
        await self._stream.aclose()


class _Router:
    """The mock's server: the routes, the calls, and the script that answers from them."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.routes: list[MockScope] = []
        self.calls: list[MockCall] = []
        self._server: H11Server | None = None
        self._clients: dict[trio.abc.Stream, _FailingEnd] = {}  # by their server end

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Run the server for the block; leaving cancels its tasks."""
        async with serve_memory(self._answer) as server:
            self._server = server
            try:
                yield
            finally:
                self._server = None

    async def connect(self, origin: object) -> trio.abc.Stream:
        """The pool's ``connector=``: a new in-memory connection to the router. A checkpoint.

        Raises:
            ConnectionRefusedError: the mock's block was left (the pool says ``ConnectError``).
        """
        await trio.lowlevel.checkpoint()
        server = self._server
        if server is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "the MockPool's block was left")
        # trio.testing.memory_stream_pair(), with the pool's receiving half able to fail.
        to_server, from_client = trio.testing.memory_stream_one_way_pair()
        to_client, from_server = trio.testing.memory_stream_one_way_pair()
        server_end = trio.StapledStream(to_client, from_client)
        failing = self._clients[server_end] = _FailingEnd(from_server)
        server.nursery.start_soon(self._serve, server, server_end)
        return trio.StapledStream(to_server, failing)

    async def _serve(self, server: H11Server, stream: trio.abc.Stream) -> None:
        try:
            await server.serve_stream(stream)
        finally:
            del self._clients[stream]

    async def _answer(self, request: ServerRequest, conn: ServerConnection) -> None:
        """The server's script: match, charge, delay, answer (or fail the connection)."""
        path, _, query = request.target.partition("?")
        call = MockCall(
            request.method,
            request.target,
            path,
            parse_qs(query, keep_blank_values=True),
            Headers(request.headers),
            request.body,
        )
        scope = next((route for route in self.routes if route._accepts(call)), None)
        call = attrs.evolve(call, scope=scope)
        self.calls.append(call)
        if scope is None:
            routes = "".join(f"\n  {route.describe()}" for route in self.routes) or " none"
            error = MockNotMatchedError(
                f"no route of MockPool {self.origin} matches {call.method} {call.target}; "
                f"routes:{routes}",
                call,
            )
            await self._fail(conn, error)
            return
        scope._charge(call)
        try:
            answer = await scope._produce(call)
            if isinstance(answer, _Switch):
                status = 200 if call.method == "CONNECT" else 101
                await conn.switch_protocols(status, list(answer.headers))
                await answer.serve(call, conn.stream)
            else:
                await _send(conn, answer, head_only=call.method == "HEAD")
        except h11.LocalProtocolError as exc:  # h11 refused to send what the route declared
            await self._fail(conn, InvalidArgumentError(f"invalid reply to {call.target}: {exc}"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise  # the client went away: the server ends this connection quietly
        except Exception as exc:  # the declared error, or the dynamic reply's / serve's
            await self._fail(conn, exc)

    async def _fail(self, conn: ServerConnection, error: Exception) -> None:
        """Fail the request on ``conn`` with ``error`` (see the module docstring)."""
        self._clients[conn.stream].fail(error)
        await conn.close()


async def _send(conn: ServerConnection, reply: _Rendered, *, head_only: bool) -> None:
    """Send ``reply`` with the framing a server adds when the route declared none."""
    headers = list(reply.headers)
    names = {name for name, _ in headers}
    bodiless = head_only or reply.status in _NO_BODY_STATUSES
    if not names & {"content-length", "transfer-encoding"} and (
        reply.status not in _NO_BODY_STATUSES
    ):
        if reply.trailers or len(reply.chunks) > 1:
            headers.append(("transfer-encoding", "chunked"))
        else:
            headers.append(("content-length", str(sum(map(len, reply.chunks)))))
    await conn.send_head(reply.status, headers, reason=reply.reason.encode("latin-1"))
    if not bodiless:
        for chunk in reply.chunks:
            await conn.send_data(chunk)
    await conn.send_end(list(reply.trailers) if not bodiless else ())


def _normalised(origin: str) -> str:
    """``scheme://host[:port]`` as the pool says it (default port left out); ``origin`` was
    validated by the pool."""
    parts = urlsplit(origin)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


@final
class MockPool(Dispatcher):
    """A ``trio_pool.Pool`` whose server is the routes you declare, in memory.

    Args:
        origin: the origin requests go to (what its ``host`` header says).
        **options: ``Pool`` options (``connections``, ``pipelining``, the timeouts...),
            validated and honoured as a ``Pool`` does: it *is* a ``Pool`` whose connections
            (in-memory streams, no sockets) go to the mock's server. Two are fixed:
            ``connector`` (refused) and ``retry_idempotent`` (always False, so that every
            request is charged to a route exactly once).

    Use it as ``async with MockPool() as mock:``, declare routes with :meth:`intercept` and
    hand ``mock`` to the code under test wherever it takes a ``Pool``, a ``BalancedPool`` or
    a :class:`trio_pool.Dispatcher`. Everything a ``Pool`` does, it does: ``statistics()``
    counts its connections and requests, it emits the ``Pool`` events, ``dispatch()``,
    duplex ``pipeline()`` (the route answers once the request body has arrived whole),
    and ``upgrade()``/``connect()`` (answered by routes declared with
    :meth:`MockInterceptor.switch`). Its ``close``/``destroy``/``async with`` rules are a
    ``Pool``'s; leaving the block also stops its server.

    Raises:
        InvalidArgumentError: a bad origin or option (as ``Pool``), or ``connector=``.
    """

    def __init__(self, origin: str = "http://mock.test", **options: Any) -> None:
        if "connector" in options:
            raise InvalidArgumentError(
                "invalid option 'connector': a MockPool connects to its own routes"
            )
        options["retry_idempotent"] = False
        self._router = _Router(origin)
        self._pool = Pool(origin, connector=self._router.connect, **options)
        self._router.origin = self._origin = _normalised(origin)
        self._exit: AsyncExitStack | None = None

    @property
    def origin(self) -> str:
        """The normalised origin."""
        return self._origin

    @property
    def calls(self) -> list[MockCall]:
        """Every request received, matched or not, in arrival order."""
        return self._router.calls

    def __repr__(self) -> str:
        return f"<MockPool {self._origin} {self._pool.statistics()}>"

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
            The interceptor: call its ``reply(...)``, ``reply_with_error(...)`` or
            ``switch(...)``.

        Raises:
            InvalidArgumentError: a matcher of the wrong type, or a ``str`` path that does not
                start with ``/`` or has a query in it.
        """
        return MockInterceptor(self._router.routes, _Matchers(method, path, query, headers, body))

    def pending_interceptors(self) -> list[MockScope]:
        """The routes that still expect a request (see :attr:`MockScope.pending`)."""
        return [scope for scope in self._router.routes if scope.pending]

    def assert_no_pending_interceptors(self) -> None:
        """Raise ``AssertionError`` listing the routes that still expect a request."""
        pending = self.pending_interceptors()
        if pending:
            lines = "".join(f"\n  {scope.describe()}" for scope in pending)
            raise AssertionError(f"{len(pending)} interceptor(s) still pending:{lines}")

    @property
    def unmatched(self) -> list[MockCall]:
        """The requests no route matched."""
        return [c for c in self._router.calls if c.scope is None]

    # ------------------------------------------------------------------ lifetime

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:  # unwinds the server if the pool refuses
            await stack.enter_async_context(self._router.serving())
            await stack.enter_async_context(self._pool)
            self._exit = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        stack, self._exit = self._exit, None
        if stack is None:
            return False
        return bool(await stack.__aexit__(exc_type, exc, tb))

    async def close(self) -> None:
        """As ``Pool.close``: refuse new requests, let the others finish. A checkpoint."""
        await self._pool.close()

    async def destroy(self, error: BaseException | None = None) -> None:
        """As ``Pool.destroy``: fail every outstanding request with ``error``. A checkpoint."""
        await self._pool.destroy(error)

    @property
    def closed(self) -> bool:
        """True once closing began."""
        return self._pool.closed

    @property
    def destroyed(self) -> bool:
        """True once destroying began."""
        return self._pool.destroyed

    def statistics(self) -> PoolStats:
        """The pool's counters: its in-memory connections and its requests (a ``stream()``
        runs until its body is read or its block left). Not a checkpoint."""
        return self._pool.statistics()

    def on(self, event: str, callback: Callable[..., object]) -> None:
        """As ``Pool.on`` (the mock's connections emit the ``Pool`` events)."""
        self._pool.on(event, callback)

    def off(self, event: str, callback: Callable[..., object]) -> None:
        """As ``Pool.off``."""
        self._pool.off(event, callback)

    # ------------------------------------------------------------------ requests

    def _path_origin(self) -> str | None:
        return self._pool._path_origin()

    def _request_plain(
        self, method: str, path: str, reset: bool, capability: str | None
    ) -> Awaitable[Response]:
        return self._pool.request(method, path, reset=reset, capability=capability)

    def _request_options(self, options: RequestOptions) -> Awaitable[Response]:
        return self._pool._request_options(options)

    def _stream(
        self, options: RequestOptions, *, duplex: bool
    ) -> AbstractAsyncContextManager[StreamResponse]:
        return self._pool._stream(options, duplex=duplex)

    async def dispatch(self, options: RequestOptions, handler: Any) -> None:
        """As ``Pool.dispatch``: drives ``handler`` with the route's answer, or its
        ``on_response_error`` with the failure. A checkpoint."""
        await self._pool.dispatch(options, handler)

    def upgrade(
        self, path: str, *, protocol: str = "websocket", headers: Any = None
    ) -> AbstractAsyncContextManager[Any]:
        """As ``Pool.upgrade``; a route declared with :meth:`MockInterceptor.switch` accepts it
        and serves the upgraded connection."""
        return self._pool.upgrade(path, protocol=protocol, headers=headers)

    def connect(self, authority: str, *, headers: Any = None) -> AbstractAsyncContextManager[Any]:
        """As ``Pool.connect``; a ``CONNECT`` route declared with
        :meth:`MockInterceptor.switch` accepts it and serves the tunnel."""
        return self._pool.connect(authority, headers=headers)
