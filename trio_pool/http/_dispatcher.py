"""What ``Client`` and ``Pool`` share: the public ``Dispatcher`` methods over a scheduler, run
by one request runner with two read modes.

Theory of operation
-------------------
A dispatcher owns a :class:`~._scheduler.Scheduler` (the queue and the connections of its
origin) and runs every request in its caller's task: :meth:`OriginDispatcher._run` leases a
connection (``Scheduler.assign``, then ``Scheduler.wait`` if it has to wait), runs the
exchange (``_exchange.py``: write, read the head, re-send as API.md 1.6 allows), hands the
response to a *consumer* (``request()`` reads it whole, ``dispatch()`` drives a handler,
``upgrade()``/``connect()`` take the connection over; ``stream()`` and ``pipeline()`` return
at the head and read in the caller's block) and gives the lease back. ``request()``,
``stream()``, ``dispatch()``, ``pipeline()``, ``upgrade()`` and ``connect()`` all run it.

The runner has two *read modes*:

* **general** — the exchange runs in one cancel scope per request
  (``_streambody.RequestScope``): a read timeout or an abort cancels it, and a caller
  cancelled from outside aborts the request.
* **fast** (``request()``, ``request.reads_whole``; and the head of a ``stream()`` without
  a streaming request body, whose response body is then read in the general mode, see
  ``_streambody.py``) — no cancel scope at all: entering and leaving one cost as much as
  the rest of the bookkeeping of a small request. Its reads enter a scope only while they
  wait for the socket, and on plain TCP not even that: the wait is interrupted through the
  socket (``_transport.py``). An abort at any other moment is noticed at the next wait
  (``Interrupted``); nothing of it runs user code an abort would have to interrupt. Worth
  10-18 % against nginx.

``FAST_READS`` (a module flag, read when a dispatcher is made; the environment variable
``TRIO_POOL_GENERAL_READS=1`` clears it) lets the test suite run ``request()`` and stream
heads in the general mode too, so both modes stay tested.

A request is *traced* only when someone listens to ``"request_end"`` (the emitter's
``_traced``, one attribute test when it is accepted): it then carries a
:class:`~._trace.PhaseClock` that :meth:`OriginDispatcher._begin` marks as it leases, writes
and reads the head, and that emits the :class:`~._trace.RequestTrace` when the request ends
(``Request.finish``). An untraced request carries None and pays a ``None`` test per mark.

``pipeline()`` is ``stream()`` run duplex: its streaming body is written by a helper task in
a nursery of the caller's block while the caller reads the response (see ``_exchange.py``).
"""

from __future__ import annotations

import logging
import os
import traceback
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, NoReturn, TypeVar

import trio

from .._errors import RequestAbortedError, SocketError, TrioPoolError
from .._supervisor import open_helpers
from ._dispatch import Controller, Handler, call, check_dispatch_args, start_call, tell_cancelled
from ._events import Emitter, emit_request_end
from ._exchange import Broken, Exchange, Head
from ._interface import Dispatcher
from ._lifecycle import Lifecycle
from ._models import PoolStats, RequestOptions, Response, StreamResponse, Upgraded
from ._origin import parse_origin
from ._prepare import Prepared, identified, prepare
from ._request import Interrupted, Request, State
from ._scheduler import Scheduler
from ._streambody import RequestScope, StreamBody, ended
from ._trace import PhaseClock
from ._watch import current_watcher

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from ._models import HeadersType
    from ._options import ClientOptions
    from ._pooled import PooledConnection
    from ._scheduler import ConnectionGate
    from ._spec import ConnectionSpec
    from ._trace import RequestTrace

__all__ = ["FAST_READS", "OriginDispatcher", "StreamCall"]

FAST_READS = os.environ.get("TRIO_POOL_GENERAL_READS") != "1"
"""Whether ``request()`` runs in the fast read mode (see the module docstring)."""

_PLAIN_BODY = (bytes, type(None))  # a request body that is no producer
Consumer = Callable[[Exchange, "trio.CancelScope | None"], Awaitable[None]]
T = TypeVar("T")


def _spec_maker(dispatcher: OriginDispatcher) -> Callable[[], ConnectionSpec]:
    """``dispatcher._connection_spec`` for its own scheduler, through a weak reference: the
    dispatcher owns the scheduler, so a strong one back would make every dispatcher (a
    ``Pool``'s per-connection ``Client`` included) a reference cycle (issue #16). A
    connection is opened only for a request whose caller holds the dispatcher."""
    ref = weakref.ref(dispatcher)

    def make_spec() -> ConnectionSpec:
        owner = ref()
        assert owner is not None, "a connection opened for a dispatcher that is gone"
        return owner._connection_spec()

    return make_spec


class OriginDispatcher(Lifecycle, Emitter, Dispatcher):
    """The shared base of ``Client`` and ``Pool`` (one origin); see the module docstring."""

    _log = logging.getLogger("trio_pool.pool")

    def __init__(
        self,
        origin: str,
        options: ClientOptions,
        *,
        max_connections: int | None,
        client_ttl: float | None = None,
        gate: ConnectionGate | None = None,
    ) -> None:
        Lifecycle.__init__(self)
        Emitter.__init__(self)
        self._origin = parse_origin(origin)
        self._options = options
        self._fast = FAST_READS
        self._scheduler = Scheduler(
            self._origin,
            limit=max_connections,
            ttl=client_ttl,
            make_spec=_spec_maker(self),
            start_soon=self._supervisor.start_soon,
            on_shut=self._shut.set,
            gate=gate,
        )
        self._prepared = Prepared(self._origin, options)

    def _connection_spec(self) -> ConnectionSpec:
        """What a new connection is opened with (``Pool`` calls its factory). May raise: a
        user factory's error is the error of the request the connection was for."""
        raise NotImplementedError

    # ------------------------------------------------------------------ lifetime

    async def __aenter__(self) -> Self:
        self._check_enter()
        await self._supervisor.enter()
        return self

    def _describe(self) -> str:
        return self._origin.text

    def _path_origin(self) -> str:
        return self._origin.text

    def _abort_all(self, error: Callable[[], BaseException]) -> None:
        self._scheduler.destroy(error, self._destroy_error)

    def _check_shutdown(self) -> None:
        if self._closed:
            self._scheduler.close()

    def statistics(self) -> PoolStats:
        """A snapshot of the counters (see :class:`PoolStats`). O(1), not a checkpoint."""
        return self._scheduler.statistics()

    def _close_one_idle(self) -> bool:
        """Close one idle connection if there is one; whether it did. Not a checkpoint."""
        return self._scheduler._close_one_idle()

    def _check_invariants(self) -> None:
        """Assert the scheduler's invariants (tests and soaks call it)."""
        self._scheduler._check_invariants()

    # ------------------------------------------------------------------ the runner

    def _accept(self, options: RequestOptions, **special: str | None) -> Request:
        """Validate a new request; refuse it if the dispatcher does not take requests."""
        self._check_open()
        request = prepare(
            options, self._origin, self._options, checked=self._prepared.checked, **special
        )
        request.owner = self._scheduler
        if self._traced:
            request.trace = PhaseClock(self._origin.text, options.attempt, self._emit_trace)
        return request

    def _emit_trace(self, trace: RequestTrace) -> None:
        """Emit a request's trace here and on the dispatchers this one is nested in."""
        emit_request_end(self, trace)

    def _abort(self, request: Request, error: BaseException) -> None:
        """End ``request`` with ``error`` now, wherever it is. Not a checkpoint."""
        self._scheduler.abort(request, error)

    async def _run(
        self,
        request: Request,
        consume: Consumer | None,
        writers: trio.Nursery | None,
        finish: Callable[[Request, Exchange | None], T],
    ) -> T:
        """Run ``request`` in this task: lease a connection, then write the request (its body
        from a task in ``writers``, if given), read the response head, and ``consume`` the
        rest (which ends the request). Its error ends up on ``request``; returns what
        ``finish(request, exchange)`` makes of it (the exchange is None if there is no head:
        then the request has its error). A checkpoint.

        ``request.reads_whole`` selects the fast read mode, else the general one (see the
        module docstring). A request waiting for a connection holds no cancel scope: a queue
        of thousands stays small."""
        scheduler = self._scheduler
        # A new request (not ended): no coroutine when a connection is free at once.
        conn = scheduler.assign(request, front=False)
        watcher = current_watcher()  # the httpx transport's timeouts (_watch.py)
        if conn is None:
            if watcher is not None:
                watcher.waiting(connecting=request.state is State.ASSIGNED)
            conn = await scheduler.wait(request)
            if conn is None:
                return finish(request, None)
        if watcher is not None:
            watcher.leased()
        # request(); or the head of a stream() (not duplex) with no body to produce meanwhile
        # (a producer could wait on anything: an abort must cancel it, hence a scope).
        body = request.body
        if request.reads_whole or (
            consume is None and writers is None and self._fast and type(body) in _PLAIN_BODY
        ):
            exchange = None
            try:
                exchange = await self._begin(request, conn, None, None)
                if exchange is not None and consume is not None:
                    try:
                        await consume(exchange, None)
                    except TrioPoolError as exc:
                        request.finish(exc)
                    finally:
                        exchange.close(request.error)
            except Interrupted:
                exchange = None  # aborted: its error is on it, its exchange closed the connection
            except BaseException:
                self._abort(request, RequestAbortedError("the caller was cancelled"))
                raise
            return finish(request, exchange)
        exchange = None  # stays None if the scope's deadline cancels _begin
        try:
            with RequestScope(self._abort, request) as scope:
                exchange = await self._begin(request, conn, scope, writers)
                if exchange is not None and consume is not None:
                    try:
                        await consume(exchange, scope)
                    except _HandlerFailed as exc:
                        request.finish(exc.error)
                    except TrioPoolError as exc:
                        request.finish(exc)
                    finally:
                        exchange.close(request.error)
        except Interrupted:
            return finish(request, None)  # aborted waiting for its turn: its error is on it
        ended(request, scope)
        return finish(request, exchange)

    async def _begin(
        self,
        request: Request,
        conn: PooledConnection,
        scope: trio.CancelScope | None,
        writers: trio.Nursery | None,
    ) -> Exchange | None:
        """Write the request on its leased connection and read the response head, re-sending
        it (on another lease) as API.md 1.6 allows. None if the request failed (its error is
        on it). Runs in ``scope`` (timeouts and aborts cancel it; None in the fast read
        mode). With ``writers`` the exchange is duplex: a streaming body is written by a task
        started there."""
        trace = request.trace
        while True:
            exchange = Exchange(conn, request)
            if trace is not None:
                http = conn.connection
                trace.leased(http.requests_started, conn.opened_at, http.connected_at)
            try:
                await exchange.send(writers)
                if trace is not None:
                    trace.sent(request.written_at, conn.connection.requests_started)
                head = await exchange.receive_head(scope)
                if trace is not None:
                    trace.head(head[0])
            except Broken:
                pass  # pipelined behind a request that broke the connection: re-send
            except TrioPoolError as exc:
                if not exchange.retryable(exc):
                    request.finish(exc)
                    exchange.close(exc)
                    return None
                self._log.debug("re-sending %s after: %r", request.method, exc)
                exchange.close(exc)
            except BaseException as exc:  # the body iterable, a timeout, an abort, a cancel
                exchange.close(exc)
                raise
            else:
                return exchange
            exchange.close()
            if request.ended:  # aborted while its last try was failing
                return None
            scheduler = self._scheduler
            next_conn = scheduler.assign(request, front=True)
            watcher = current_watcher()
            if next_conn is None:
                if watcher is not None:
                    watcher.waiting(connecting=request.state is State.ASSIGNED)
                next_conn = await scheduler.wait(request, front=True)
                if next_conn is None:
                    return None
            if watcher is not None:
                watcher.leased()
            conn = next_conn

    # ------------------------------------------------------------------ the public methods

    def _request_plain(
        self, method: str, path: str, reset: bool, capability: str | None
    ) -> Awaitable[Response]:
        # The hot path: a prepared request, no RequestOptions (capability means nothing to
        # one origin). Not a coroutine: Dispatcher.request awaits the runner directly.
        if type(method) is str and type(path) is str and type(reset) is bool:
            if self._closed or not self._supervisor.running:
                self._check_open()  # raises
            request = self._prepared.request(method, path, reset)
            request.owner = self._scheduler
            if self._traced:
                request.trace = PhaseClock(self._origin.text, 1, self._emit_trace)
            return self._whole(request)
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
        # As _request_plain, the constant headers of a composed dispatcher's request level
        # prepared once with the rest (trio_pool/http/_chain.py).
        if type(method) is str and type(path) is str and type(reset) is bool:
            if self._closed or not self._supervisor.running:
                self._check_open()  # raises
            request = self._prepared.request(method, path, reset, headers)
            request.owner = self._scheduler
            if self._traced:
                request.trace = PhaseClock(self._origin.text, attempt, self._emit_trace)
            return self._whole(request)
        return super()._request_headed(method, path, reset, headers, attempt)

    def _request_options(self, options: RequestOptions) -> Awaitable[Response]:
        return self._whole(self._accept(options))

    def _whole(self, request: Request) -> Awaitable[Response]:
        """``request()``: run ``request`` and read its whole response (in the fast read mode
        unless ``FAST_READS`` was off when this dispatcher was made). Not a coroutine: the
        runner's is the one frame."""
        request.reads_whole = self._fast
        return self._run(request, Exchange.read_rest, None, self._response)

    def _response(self, request: Request, exchange: Exchange | None) -> Response:
        """``request()``'s result: the whole response, or the request's error raised."""
        if request.error is not None:
            _raise_error(request)
        assert exchange is not None
        assert exchange.head is not None
        status, response_headers, reason = exchange.head
        chunks = exchange.chunks
        body_bytes = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        response = Response(
            status, reason, exchange.http_version, response_headers, exchange.trailers, body_bytes
        )
        return identified(response, self._origin, request)

    def _stream(
        self, options: RequestOptions, *, duplex: bool
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """Run the request up to its head and hand out the response (of :meth:`stream`, or
        duplex for :meth:`pipeline`, its body written from a nursery of the block); leaving
        frees the connection."""
        if duplex:
            return self._duplex_stream(options)
        return StreamCall(self, options)

    @asynccontextmanager
    async def _duplex_stream(self, options: RequestOptions) -> AsyncIterator[StreamResponse]:
        request = self._accept(options)
        async with open_helpers() as writers:
            exchange, (status, response_headers, reason) = await self._run(
                request, None, writers, _head
            )
            source = StreamBody(self._abort, exchange)
            try:
                response = StreamResponse(
                    status, reason, exchange.http_version, response_headers, source=source
                )
                yield identified(response, self._origin, request)
            finally:
                source.close()

    @asynccontextmanager
    async def upgrade(
        self, path: str, *, protocol: str = "websocket", headers: HeadersType | None = None
    ) -> AsyncIterator[Upgraded]:
        """``GET path`` with ``upgrade: protocol``; the block gets the connection once the
        server switched (101). Entering is a checkpoint; leaving closes the connection.

        Raises like :meth:`request`, and:

        Raises:
            SocketError: the server answered with another status ("bad upgrade").
        """
        request = self._accept(RequestOptions("GET", path, headers=headers), protocol=protocol)
        async with self._switching(request, "upgrade") as upgraded:
            yield upgraded

    @asynccontextmanager
    async def connect(
        self, authority: str, *, headers: HeadersType | None = None
    ) -> AsyncIterator[Upgraded]:
        """``CONNECT authority`` (a tunnel through a proxy); the block gets the connection
        once the server answered 2xx. Entering is a checkpoint; leaving closes it.

        Raises like :meth:`request`, and:

        Raises:
            SocketError: the server answered with another status ("bad connect").
        """
        request = self._accept(RequestOptions("CONNECT", "/", headers=headers), authority=authority)
        async with self._switching(request, "connect") as upgraded:
            yield upgraded

    @asynccontextmanager
    async def _switching(self, request: Request, what: str) -> AsyncIterator[Upgraded]:
        exchange, (status, response_headers, _) = await self._run(request, _take_over, None, _head)
        stream = exchange.taken_over
        if stream is None:
            raise SocketError(f"bad {what}: the server answered {status}")
        try:
            yield Upgraded(stream, status, response_headers)
        finally:
            await trio.aclose_forcefully(stream)

    async def dispatch(self, options: RequestOptions, handler: Handler) -> None:
        """Send a request described by ``options``, driving ``handler`` (the handler protocol
        is in the API reference) in this task.

        Returns when the request has ended; failures go to ``handler.on_response_error``,
        not to the caller (an exception a handler method raises is passed as itself). A
        checkpoint.

        Raises:
            InvalidArgumentError: a bad argument (nothing was sent).
            ClientClosedError, ClientDestroyedError: the dispatcher no longer takes requests.
        """
        check_dispatch_args(options, handler)
        request = self._accept(options)
        controller = Controller(request, self._abort, self._origin.text)
        try:
            # Inside the outer try: a caller cancelled while an async on_request_start
            # runs still gets its on_response_error.
            try:
                await call(handler.on_request_start, controller)
            except Exception as exc:
                self._abort(request, exc)  # API.md 1.3: the handler's own exception
            if request.state is State.NEW:
                await self._run(
                    request,
                    partial(_drive, handler=handler, controller=controller),
                    None,
                    _nothing,
                )
        except trio.Cancelled:
            error = _for_handler(request) if request.error is not None else None
            await tell_cancelled(handler, controller, error)
            raise
        if request.error is not None:
            await call(handler.on_response_error, controller, _for_handler(request))


class StreamCall:
    """``stream()``'s ``async with`` (not duplex): entering validates the request and runs
    it to its head (a checkpoint; the head is read in the fast read mode, see the module
    docstring), leaving gives the body up (the connection kept if the rest had arrived).

    Leaving is :meth:`close`, synchronous and never a checkpoint: a caller that leaves
    outside the block (the httpx transport, when httpx closes the response) calls it
    directly, needing no shielded scope. Changed only by its own methods."""

    __slots__ = ("_dispatcher", "_options", "_source")

    def __init__(self, dispatcher: OriginDispatcher, options: RequestOptions) -> None:
        self._dispatcher = dispatcher
        self._options = options
        self._source: StreamBody | None = None

    async def __aenter__(self) -> StreamResponse:
        dispatcher = self._dispatcher
        request = dispatcher._accept(self._options)
        exchange, (status, headers, reason) = await dispatcher._run(request, None, None, _head)
        source = self._source = StreamBody(dispatcher._abort, exchange)
        response = StreamResponse(status, reason, exchange.http_version, headers, source=source)
        return identified(response, dispatcher._origin, request)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Give the body up if it was not read to its end. Idempotent; not a checkpoint."""
        source, self._source = self._source, None
        if source is not None:
            source.close()


def _head(request: Request, exchange: Exchange | None) -> tuple[Exchange, Head]:
    """The result of a request handed out at its head: the exchange and the head, or the
    request's error raised."""
    if request.error is not None:
        _raise_error(request)
    assert exchange is not None
    assert exchange.head is not None
    return exchange, exchange.head


def _raise_error(request: Request) -> NoReturn:
    """Raise the error of ``request``, which has ended and is not read again.

    The request lets go of it first: the traceback it leaves with holds the runner's frames,
    which hold the request, so keeping it would make a reference cycle per failed request
    (issue #16). (The same reason ``error`` is deleted: this frame is in the traceback too.)
    """
    error = request.error
    assert error is not None
    request.error = None
    try:
        raise error
    finally:
        del error


def _for_handler(request: Request) -> BaseException:
    """The error of ``request`` (which has ended) for its handler's ``on_response_error``.

    Its traceback runs through the exchange's frames (``_run``, ``_drive``, the reader's),
    all finished by now, and ``_drive``'s holds the handler: a handler keeping the error (the
    usual thing to do) would make a reference cycle per failed request (issue #16). So those
    frames are cleared of their locals (``traceback.clear_frames``; the traceback still
    prints in full) and the request keeps a traceback-free twin (``hand_out_error``).
    """
    error = request.hand_out_error()
    traceback.clear_frames(error.__traceback__)
    return error


def _nothing(request: Request, exchange: Exchange | None) -> None:
    """``dispatch()``'s result: none (the handler hears of everything)."""


class _HandlerFailed(Exception):
    """A handler method raised; carries what it raised (delivered to the request as is)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


async def _handle(method: Callable[..., object], *args: object) -> None:
    """Call a handler method (awaited if async; no read deadline runs meanwhile: a read's
    timeout is enforced only while it waits for bytes)."""
    try:
        pending = start_call(method, *args)
        if pending is not None:
            await pending
    except Exception as exc:
        raise _HandlerFailed(exc) from exc


async def _take_over(exchange: Exchange, scope: trio.CancelScope | None) -> None:
    """``upgrade()``/``connect()``: take the switched connection, or read the refusal (so
    the connection stays usable)."""
    if exchange.switched:
        exchange.taken_over = exchange.conn.detach()
        exchange.request.finish(None)
    else:
        await exchange.read_rest(scope)


async def _drive(
    exchange: Exchange,
    scope: trio.CancelScope | None,
    *,
    handler: Handler,
    controller: Controller,
) -> None:
    """Feed the response to ``handler``; stop as soon as the request is aborted."""
    assert scope is not None  # dispatch() runs in the general read mode
    request = exchange.request
    assert exchange.head is not None
    await _handle(handler.on_response_start, controller, *exchange.head)
    while request.state is not State.DONE:
        chunk = await exchange.receive_data(scope)
        if chunk is None:
            await _handle(handler.on_response_end, controller, exchange.trailers)
            request.finish(None)
            return
        await _handle(handler.on_response_data, controller, chunk)
