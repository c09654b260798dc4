"""What ``Client`` and ``Pool`` share: the scheduler, under the public ``Dispatcher`` methods.

Theory of operation
-------------------
A dispatcher owns a FIFO queue of waiting requests and a set of connections
(:class:`Worker`), at most ``max_workers`` of them (1 for a ``Client``). A request's own task
does its I/O: it *leases* a connection, runs the exchange (``_exchange.py``) and gives the
lease back. Every scheduling decision is a plain synchronous method here — nothing awaits
between deciding and recording the decision — so a cancellation can never strand a request
half-moved (httpcore#830):

* :meth:`_acquire` leases the most recently used idle connection that is still alive, else
  one with spare pipelining capacity, else opens a new connection for the request if the
  limit allows (the request waits for it), else queues the request. Idle connections are a
  LIFO (a dict used as an ordered set), so each step is O(1) and the oldest connection is
  not always the one picked (undici#3648).
* A lease given back (:meth:`_released`) goes straight to the queue's head, whose task is
  woken with the lease in hand; if that task was cancelled at that instant, its
  cancellation gives the lease back again and the next waiter gets it (aiohttp#9670).
* A request whose caller is cancelled is removed at once (:meth:`_abort`): from the queue,
  from the connection being opened for it (which carries on and serves someone else), or
  — mid-exchange — its exchange closes the connection on the way out.

Requests are counted per state on every move, so ``statistics()`` is O(1).

``pipeline()`` is ``stream()`` run duplex: its streaming body is written by a helper task in
a nursery of the caller's block while the caller reads the response (see ``_exchange.py``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from functools import partial
from typing import TYPE_CHECKING

import trio

from .._errors import (
    InformationalError,
    RequestAbortedError,
    SocketError,
    TrioPoolError,
)
from .._supervisor import open_helpers
from ._dispatch import Controller, Handler, call, check_dispatch_args, start_call, tell_cancelled
from ._events import Emitter, emit_along
from ._exchange import Exchange, Head
from ._interface import Dispatcher
from ._lifecycle import Lifecycle
from ._models import PoolStats, RequestOptions, Response, StreamResponse, Upgraded
from ._origin import parse_origin
from ._prepare import Prepared, identified, prepare
from ._request import Interrupted, Owner, Request, State
from ._worker import Broken, Worker

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from ._client import Client
    from ._connection import Connector
    from ._headers import Headers
    from ._models import HeadersType
    from ._options import ClientOptions

__all__ = ["OriginDispatcher"]


class OriginDispatcher(Lifecycle, Emitter, Owner, Dispatcher):
    """The shared base of ``Client`` and ``Pool`` (one origin); see the module docstring."""

    _log = logging.getLogger("trio_pool.pool")

    def __init__(
        self,
        origin: str,
        options: ClientOptions,
        *,
        max_workers: int | None,
        connector: Connector | None,
        client_ttl: float | None = None,
    ) -> None:
        Lifecycle.__init__(self)
        Emitter.__init__(self)
        self._origin = parse_origin(origin)
        self._options = options
        self._connector = connector
        self._max_workers = max_workers
        self._client_ttl = client_ttl
        self._queue: OrderedDict[Request, None] = OrderedDict()
        self._idle: dict[Worker, None] = {}  # connected, nothing to do; last = most recent
        self._spare: dict[Worker, None] = {}  # busy, room for a pipelined request
        self._workers: set[Worker] = set()
        self._counts = [0] * len(State)  # requests per State, indexed by it
        self._connected = 0
        self._need_drain = False
        self._parents: list[Emitter] = []  # outer dispatchers, outermost first (targets)
        self._prepared = Prepared(self._origin, options)

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
        for request in list(self._queue):
            self._abort(request, error())
        for worker in list(self._workers):
            for request in worker.requests():
                self._abort(request, error())
            worker.cancel()

    def _check_shutdown(self) -> None:
        if (
            not self._closed
            or self._counts[State.QUEUED]
            + self._counts[State.ASSIGNED]
            + self._counts[State.RUNNING]
        ):
            return
        for worker in self._idle:
            worker.retire()
        self._idle.clear()
        if not self._workers:
            self._shut.set()

    # ------------------------------------------------------------------ statistics, events

    def statistics(self) -> PoolStats:
        """A snapshot of the counters (see :class:`PoolStats`). O(1), not a checkpoint."""
        counts = self._counts
        queued = counts[State.QUEUED]
        pending = queued + counts[State.ASSIGNED]
        running = counts[State.RUNNING]
        return PoolStats(
            connected=self._connected,
            free=len(self._idle) + len(self._spare),
            pending=pending,
            queued=queued,
            running=running,
            size=pending + running,
        )

    def _targets(self, worker: Worker) -> list[Emitter]:
        chain: list[Emitter] = [*self._parents, self]
        if worker.client is not self:
            chain.append(worker.client)
        return chain

    # ------------------------------------------------------------------ scheduling

    def _new_client(self) -> Client:
        """The ``Client`` whose options a new connection uses (``Pool`` calls its factory)."""
        raise NotImplementedError

    def _accept(self, options: RequestOptions, **special: str | None) -> Request:
        """Validate a new request; refuse it if the dispatcher does not take requests."""
        self._check_open()
        request = prepare(options, self._origin, self._options, **special)
        request.owner = self
        return request

    def _acquire(self, request: Request, *, front: bool) -> Worker | None:
        """Lease a connection to ``request`` now, or arrange for it to get one (a new
        connection, or the queue; ``front`` = a re-send, at the head). O(1)."""
        if not self._queue or front:
            # API.md 1.6: the one retry after a stale keep-alive goes to a fresh connection;
            # another kept-alive one may be just as stale (and a stream that is not a socket
            # can't even be checked before reuse).
            fresh = request.retried
            worker = None if fresh else self._pick(request)
            if worker is not None:
                worker.lease(request)
                if worker.client._options.pipelining > 1:  # else it has no room left
                    self._refresh(worker)
                return worker
            if fresh and self._idle and len(self._workers) == self._max_workers:
                # At the limit: an idle connection makes room (when its task has ended,
                # _pump opens the fresh one for the queue's head, which this request is).
                idle, _ = self._idle.popitem()
                idle.retire(InformationalError("closed to open a fresh one for a retry"))
            if self._max_workers is None or len(self._workers) < self._max_workers:
                self._spawn(request)
                return None
        request.move(State.QUEUED)
        queue = self._queue
        queue[request] = None
        if front:
            queue.move_to_end(request, last=False)
        self._need_drain = True
        return None

    def _pick(self, request: Request) -> Worker | None:
        idle = self._idle
        while idle:
            worker, _ = idle.popitem()
            assert worker.conn is not None
            if worker.conn.alive():
                return worker
            worker.retire(SocketError("the server closed the idle connection (or sent bytes)"))
        if request.pipelineable and self._spare:
            worker = next(reversed(self._spare))
            if worker.capacity(request):
                return worker
            self._refresh(worker)  # a stale entry (it began to retire): drop it
        return None

    def _spawn(self, request: Request) -> None:
        try:
            client = self._new_client()
        except Exception as exc:  # a user factory failed: that is this request's error
            request.finish(exc)
            return
        worker = Worker(self, client, request)
        request.worker = worker
        request.move(State.ASSIGNED)
        self._workers.add(worker)
        self._log.debug("opening a connection to %s", self._origin.text)
        self._supervisor.start_soon(worker.run, name=f"trio_pool: {self._origin.text}")

    def _hand(self, worker: Worker, request: Request) -> None:
        """Lease ``worker`` to the waiting ``request`` and wake its task."""
        worker.lease(request)
        request.wake()

    def _refresh(self, worker: Worker) -> None:
        """Re-file ``worker`` as idle, spare or busy after its leases changed."""
        self._idle.pop(worker, None)
        self._spare.pop(worker, None)
        if not worker.capacity(None):
            return
        if not worker.idle():
            self._spare[worker] = None
        elif self._closed and not self._queue:
            worker.retire()
        else:
            self._idle[worker] = None
            worker.released_idle()

    def _feed(self, worker: Worker) -> None:
        """Hand queued requests to ``worker`` while it can take them (FIFO)."""
        queue = self._queue
        while queue:
            request = next(iter(queue))
            if not worker.capacity(request):
                break
            del queue[request]
            self._hand(worker, request)
        self._refresh(worker)

    def _pump(self) -> None:
        """Open connections for queued requests while the limit allows."""
        queue = self._queue
        if self._destroyed:
            return
        while queue and (self._max_workers is None or len(self._workers) < self._max_workers):
            request = next(iter(queue))
            del queue[request]
            self._spawn(request)

    def _abort(self, request: Request, error: BaseException) -> None:
        """End ``request`` with ``error`` now, wherever it is. Not a checkpoint."""
        state = request.state
        if state is State.DONE:
            return
        worker: Worker | None = request.worker
        if state is State.QUEUED:
            del self._queue[request]
        request.finish(error)
        if state is State.ASSIGNED and worker is not None:
            if worker.first is request:
                worker.first = None  # the connection carries on, for someone else
            else:
                worker.release(request, reusable=True)  # an unused lease goes on
        elif state is State.RUNNING and request.scope is not None:
            request.scope.cancel()  # its exchange closes the connection on the way out
        self._check_shutdown()

    # Reports from connections.

    def _worker_connected(self, worker: Worker) -> None:
        self._connected += 1
        self._log.debug("connected to %s", self._origin.text)
        emit_along(self._targets(worker), "connect", self._origin.text)
        first, worker.first = worker.first, None
        if first is not None:
            self._hand(worker, first)
        self._released(worker)

    def _released(self, worker: Worker) -> None:
        """A lease was given back (or the connection is new): serve the queue from it."""
        if worker.retiring:
            self._idle.pop(worker, None)
            self._spare.pop(worker, None)
            if worker.idle():
                worker.retire()
            self._pump()
        else:
            self._feed(worker)
            if self._need_drain and not self._queue:
                self._need_drain = False
                emit_along(self._targets(worker), "drain", self._origin.text)
        self._check_shutdown()

    def _worker_ended(self, worker: Worker, reason: BaseException | None) -> None:
        self._workers.discard(worker)
        self._idle.pop(worker, None)
        self._spare.pop(worker, None)
        targets = self._targets(worker)
        if reason is None:
            reason = self._destroy_error or InformationalError("destroyed")
        if worker.conn is None:
            self._log.debug("connecting to %s failed: %r", self._origin.text, reason)
            emit_along(targets, "connection_error", self._origin.text, reason)
        else:
            self._connected -= 1
            self._log.debug("disconnected from %s: %r", self._origin.text, reason)
            emit_along(targets, "disconnect", self._origin.text, reason)
        self._pump()
        self._check_shutdown()

    # ------------------------------------------------------------------ running requests

    async def _connection_for(self, request: Request, *, front: bool = False) -> Worker | None:
        """A leased connection for ``request``, or None if it ended meanwhile (its error is
        on it). A checkpoint only if it has to wait; a cancelled caller aborts it at once."""
        if request.ended:  # aborted while its last try was failing
            return None
        worker = self._acquire(request, front=front)
        if worker is not None:
            return worker
        return await self._leased(request)

    async def _leased(self, request: Request) -> Worker | None:
        """Wait for the lease :meth:`_acquire` arranged (see :meth:`_connection_for`)."""
        if request.state is State.DONE:  # a failing factory
            return None
        try:
            await request.park()
            # Handed a lease, but cancelled in the same instant: give it to the next waiter
            # rather than start (and spoil) an exchange. Not a checkpoint otherwise.
            await trio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            self._abort(request, RequestAbortedError("the caller was cancelled"))
            raise
        return None if request.ended else request.worker

    async def _begin(
        self,
        request: Request,
        worker: Worker,
        scope: trio.CancelScope | None,
        writers: trio.Nursery | None,
    ) -> Exchange | None:
        """Write the request on its leased connection and read the response head, re-sending
        it (on another lease) as API.md 1.6 allows. None if the request failed (its error is
        on it). Runs in ``scope`` (set up by the caller: timeouts and aborts cancel it; None
        for ``request()``, see :meth:`_run`). With
        ``writers`` the exchange is duplex: a streaming body is written by a task started
        there."""
        while True:
            exchange = Exchange(worker, request)
            try:
                await exchange.send(writers)
                await exchange.receive_head(scope)
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
            next_worker = await self._connection_for(request, front=True)
            if next_worker is None:
                return None
            worker = next_worker

    def _ended(self, request: Request, scope: trio.CancelScope) -> None:
        """After an exchange's scope: a deadline that expired is the request's error."""
        if scope.cancelled_caught and not request.ended:
            exchange: Exchange = request.exchange
            request.finish(exchange.timeout_error())

    def _scope_for(self, request: Request) -> _RequestScope:
        """The cancel scope a request runs its exchange in; a caller cancelled from outside
        (or any unexpected error) ends the request at once."""
        return _RequestScope(self, request)

    async def _run(
        self,
        request: Request,
        consume: Callable[[Exchange, trio.CancelScope], Awaitable[None]] | None = None,
        writers: trio.Nursery | None = None,
    ) -> Exchange | None:
        """Run ``request`` in this task: lease a connection, then, in one cancel scope, write
        the request (its body from a task in ``writers``, if given), read the response head,
        and ``consume`` the rest (which ends the request). Its error ends up on ``request``;
        returns the exchange (None if there is no head). A request waiting for a connection
        holds no cancel scope: a queue of thousands stays small. (``request()`` runs in
        :meth:`_whole` instead.)"""
        # A new request (not ended): _connection_for without a coroutine when a connection
        # is free at once.
        worker = self._acquire(request, front=False)
        if worker is None:
            worker = await self._leased(request)
            if worker is None:
                return None
        exchange = None  # stays None if the scope's deadline cancels _begin
        try:
            with self._scope_for(request) as scope:
                exchange = await self._begin(request, worker, scope, writers)
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
            return None  # aborted while waiting for its turn: its error is on it
        self._ended(request, scope)
        return exchange

    async def _run_or_raise(
        self,
        request: Request,
        consume: Callable[[Exchange, trio.CancelScope], Awaitable[None]] | None = None,
        writers: trio.Nursery | None = None,
    ) -> tuple[Exchange, Head]:
        """:meth:`_run`, raising the request's error; returns the exchange and its head."""
        exchange = await self._run(request, consume, writers)
        if request.error is not None:
            raise request.error
        assert exchange is not None
        assert exchange.head is not None
        return exchange, exchange.head

    def _request_plain(
        self, method: str, path: str, reset: bool, capability: str | None
    ) -> Awaitable[Response]:
        # The hot path: a prepared request, no RequestOptions (capability means nothing to
        # one origin). Not a coroutine: Dispatcher.request awaits _whole directly.
        if type(method) is str and type(path) is str and type(reset) is bool:
            if self._closed or not self._supervisor.running:
                self._check_open()  # raises
            request = self._prepared.request(method, path, reset)
            request.owner = self
            return self._whole(request)
        return self._request_options(
            RequestOptions(method, path, reset=reset, capability=capability)
        )

    def _request_options(self, options: RequestOptions) -> Awaitable[Response]:
        return self._whole(self._accept(options))

    async def _whole(self, request: Request) -> Response:
        """Run ``request`` in this task and read its whole response (:meth:`request`).

        Like :meth:`_run`, but with no cancel scope at all: entering and leaving one cost
        as much as the rest of the bookkeeping of a small request. Its reads enter a scope
        only while they wait for the socket (a timeout or an abort cancels that one), and
        an abort at any other moment is noticed at the next wait (``Interrupted``); nothing
        of it runs user code that an abort would have to interrupt. It leases its connection
        itself rather than call :meth:`_run`: one coroutine frame less per waiting request."""
        request.reads_whole = True
        worker = self._acquire(request, front=False)
        if worker is None:
            worker = await self._leased(request)
        exchange = None
        if worker is not None:
            try:
                exchange = await self._begin(request, worker, None, None)
                if exchange is not None:
                    try:
                        await exchange.read_rest(None)
                    except TrioPoolError as exc:
                        request.finish(exc)
                    finally:
                        exchange.close(request.error)
            except Interrupted:
                pass  # aborted: its error is on it, its exchange closed the connection
            except BaseException:
                self._abort(request, RequestAbortedError("the caller was cancelled"))
                raise
        if request.error is not None:
            raise request.error
        assert exchange is not None
        assert exchange.head is not None
        status, response_headers, reason = exchange.head
        chunks = exchange.chunks
        body_bytes = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        response = Response(
            status, reason, exchange.http_version, response_headers, exchange.trailers, body_bytes
        )
        return identified(response, self._origin, request)

    @asynccontextmanager
    async def _stream(
        self, options: RequestOptions, *, duplex: bool
    ) -> AsyncIterator[StreamResponse]:
        """Run the request up to its head and hand out the response (of :meth:`stream`, or
        duplex for :meth:`pipeline`, its body written from a nursery of the block); leaving
        frees the connection."""
        request = self._accept(options)
        writing: AbstractAsyncContextManager[trio.Nursery | None]
        writing = open_helpers() if duplex else nullcontext()
        async with writing as writers:
            exchange, (status, response_headers, reason) = await self._run_or_raise(
                request, writers=writers
            )
            source = _BodySource(self, exchange)
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
        exchange, (status, response_headers, _) = await self._run_or_raise(request, _take_over)
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
        not to the caller. A checkpoint.

        Raises:
            InvalidArgumentError: a bad argument (nothing was sent).
            ClientClosedError, ClientDestroyedError: the dispatcher no longer takes requests.
        """
        check_dispatch_args(options, handler)
        request = self._accept(options)
        controller = Controller(request, self._abort)
        try:
            # Inside the outer try: a caller cancelled while an async on_request_start
            # runs still gets its on_response_error.
            try:
                await call(handler.on_request_start, controller)
            except Exception as exc:
                controller.abort(exc)
            if request.state is State.NEW:
                await self._run(request, partial(_drive, handler=handler, controller=controller))
        except trio.Cancelled:
            await tell_cancelled(handler, controller, request.error)
            raise
        if request.error is not None:
            await call(handler.on_response_error, controller, request.error)


class _RequestScope:
    """:meth:`OriginDispatcher._scope_for` (a plain class: it runs once per request)."""

    __slots__ = ("_dispatcher", "_request", "_scope")

    def __init__(self, dispatcher: OriginDispatcher, request: Request) -> None:
        self._dispatcher = dispatcher
        self._request = request
        self._scope = request.scope = trio.CancelScope()

    def __enter__(self) -> trio.CancelScope:
        return self._scope.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        request = self._request
        try:
            handled = self._scope.__exit__(exc_type, exc, tb)  # its own deadline or cancel
        except BaseException:
            self._dispatcher._abort(request, RequestAbortedError("the caller was cancelled"))
            raise
        finally:
            request.scope = None
        if exc is not None and not handled:
            self._dispatcher._abort(request, RequestAbortedError("the caller was cancelled"))
        return handled


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


async def _take_over(exchange: Exchange, scope: trio.CancelScope) -> None:
    """``upgrade()``/``connect()``: take the switched connection, or read the refusal (so
    the connection stays usable)."""
    if exchange.switched:
        exchange.taken_over = exchange.conn.detach()
        exchange.request.finish(None)
    else:
        await exchange.read_rest(scope)


async def _drive(
    exchange: Exchange, scope: trio.CancelScope, *, handler: Handler, controller: Controller
) -> None:
    """Feed the response to ``handler``; stop as soon as the request is aborted."""
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


class _BodySource:
    """The body of a ``StreamResponse``, read in the reader's task."""

    __slots__ = ("_dispatcher", "_exchange")

    def __init__(self, dispatcher: OriginDispatcher, exchange: Exchange) -> None:
        self._dispatcher = dispatcher
        self._exchange = exchange

    async def receive(self) -> bytes | None:
        exchange = self._exchange
        request = exchange.request
        if request.state is State.DONE:
            if request.error is not None:
                raise request.error
            return None
        chunk = None
        with self._dispatcher._scope_for(request) as scope:
            try:
                chunk = await exchange.receive_data(scope)
            except TrioPoolError as exc:
                request.finish(exc)
            finally:
                if chunk is None:
                    if request.error is None and exchange.complete:
                        request.finish(None)
                    exchange.close(request.error)
        self._dispatcher._ended(request, scope)
        if request.error is not None:
            exchange.close(request.error)
            raise request.error
        return chunk

    def trailers(self) -> Headers:
        return self._exchange.trailers

    def close(self) -> None:
        exchange = self._exchange
        if exchange.request.state is not State.DONE:
            # Unread: keep the connection if the rest is already here, else close it.
            exchange.drain_buffered()
            exchange.request.finish(RequestAbortedError("the stream was closed before its end"))
        exchange.close()
