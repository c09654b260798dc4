"""What ``Client`` and ``Pool`` share: the public dispatcher methods and the scheduler.

Theory of operation
-------------------
A dispatcher owns a FIFO queue of requests and a set of connection tasks (:class:`Worker`),
at most ``max_workers`` of them (1 for a ``Client``). Every scheduling decision is a plain
synchronous method here — nothing awaits between deciding and recording the decision — so a
cancellation can never strand a request half-moved (httpcore#830):

* :meth:`_submit` (a new request) and :meth:`_pump` (after any change) place the queue's
  head on the most recently used idle connection, else on a busy one with spare pipelining
  capacity, else on a new connection if the limit allows; otherwise it waits in the queue.
  Idle connections are a LIFO (a dict used as an ordered set), so each step is O(1) and the
  oldest connection is not always the one picked (undici#3648).
* A request whose caller is cancelled is removed at once (:meth:`_abort`): from the queue,
  from its connection's assignments, or — mid-exchange — by cancelling the scope its
  connection task works in, which then closes that connection.
* A connection task reports back with :meth:`_worker_connected`, :meth:`_worker_ready`
  and :meth:`_worker_ended`; the last re-queues, at the head, the requests it did not finish
  (retries and pipelined requests behind a failure).

Requests are counted per state on every move, so ``statistics()`` is O(1).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from .._errors import (
    ClientClosedError,
    ClientDestroyedError,
    InformationalError,
    InvalidArgumentError,
    RequestAbortedError,
    SocketError,
)
from .._supervisor import Supervisor
from ._dispatch import BufferHandler, Controller, Handler, StreamHandler, UpgradeHandler, call
from ._events import Emitter, emit_along
from ._models import PoolStats, RequestOptions, Response, StreamResponse, Upgraded
from ._origin import parse_origin
from ._request import Owner, Request, State, prepare
from ._worker import Worker

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from ._client import Client
    from ._connection import Connector
    from ._models import BodyType, HeadersType, QueryType
    from ._options import ClientOptions

__all__ = ["Dispatcher"]


class Dispatcher(Emitter, Owner):
    """The shared base of ``Client`` and ``Pool``; see the module docstring."""

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
        Emitter.__init__(self)
        self._origin = parse_origin(origin)
        self._options = options
        self._connector = connector
        self._max_workers = max_workers
        self._client_ttl = client_ttl
        self._supervisor = Supervisor()
        self._queue: OrderedDict[Request, None] = OrderedDict()
        self._idle: dict[Worker, None] = {}  # connected, nothing to do; last = most recent
        self._spare: dict[Worker, None] = {}  # busy, room for a pipelined request
        self._workers: set[Worker] = set()
        self._counts = [0] * len(State)  # requests per State, indexed by it
        self._connected = 0
        self._need_drain = False
        self._closed = False
        self._destroyed = False
        self._destroy_error: BaseException | None = None
        self._shut = trio.Event()  # closed or destroyed, and every connection task ended
        self._parents: list[Emitter] = []  # outer dispatchers, outermost first (targets)

    # ------------------------------------------------------------------ lifetime

    async def __aenter__(self) -> Self:
        if self._closed:
            raise ClientClosedError(f"{type(self).__name__} was already closed")
        await self._supervisor.enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        await self._supervisor.exit(exc, graceful=self._close_on_exit, abort=self._destroy_now)
        self._closed = True
        return False

    async def _close_on_exit(self) -> None:
        if not self._destroyed:
            await self.close()

    @property
    def closed(self) -> bool:
        """True once ``close()`` (or ``destroy()``) began or the block was left."""
        return self._closed

    @property
    def destroyed(self) -> bool:
        """True once ``destroy()`` began (or the block was left with an exception)."""
        return self._destroyed

    async def close(self) -> None:
        """Refuse new requests, let queued and running ones finish, close the connections.

        Returns once every connection is closed; calling it again waits for the same.
        A checkpoint.

        Raises:
            ClientDestroyedError: ``destroy()`` was called before.
        """
        if self._destroyed:
            raise ClientDestroyedError(f"{type(self).__name__} was destroyed")
        if not self._closed:
            self._closed = True
            self._log.debug("closing %s", self._origin.text)
            self._check_shutdown()
        await self._shut.wait()

    async def destroy(self, error: BaseException | None = None) -> None:
        """Fail every queued and running request with ``error`` (default
        ``ClientDestroyedError``), close every connection at once, refuse new requests.

        Returns once every connection is closed. A checkpoint.
        """
        self._destroy_now(error)
        await self._shut.wait()

    def _destroy_now(self, error: BaseException | None = None) -> None:
        if self._destroyed:
            return
        self._log.debug("destroying %s", self._origin.text)
        self._destroyed = self._closed = True
        self._destroy_error = error
        for request in list(self._queue):
            self._abort(request, error or ClientDestroyedError("the dispatcher was destroyed"))
        for worker in list(self._workers):
            for request in worker.leftovers():
                self._abort(request, error or ClientDestroyedError("the dispatcher was destroyed"))
            worker.cancel()
        self._check_shutdown()

    def _check_shutdown(self) -> None:
        if (
            not self._closed
            or self._counts[State.QUEUED]
            + self._counts[State.ASSIGNED]
            + self._counts[State.RUNNING]
        ):
            return
        for worker in list(self._idle):
            worker.retire()
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

    def _count(self, old: State, new: State) -> None:
        counts = self._counts
        counts[old] -= 1
        counts[new] += 1

    def _targets(self, worker: Worker) -> list[Emitter]:
        chain: list[Emitter] = [*self._parents, self]
        if worker.client is not self:
            chain.append(worker.client)
        return chain

    # ------------------------------------------------------------------ scheduling

    def _new_client(self) -> Client:
        """The ``Client`` whose options a new connection uses (``Pool`` calls its factory)."""
        raise NotImplementedError

    def _submit(self, request: Request) -> None:
        if self._destroyed:
            raise ClientDestroyedError(f"{type(self).__name__} was destroyed")
        if self._closed:
            raise ClientClosedError(f"{type(self).__name__} is closed")
        if not self._supervisor.running:
            raise RuntimeError(f"use {type(self).__name__} in an 'async with' block")
        if self._queue or not self._place(request):
            request.move(State.QUEUED)
            self._queue[request] = None
            self._need_drain = True

    def _place(self, request: Request) -> bool:
        """Give ``request`` to a connection now if one can take it. O(1)."""
        if self._idle:
            worker, _ = self._idle.popitem()
        elif request.pipelineable and self._spare:
            worker = next(reversed(self._spare))
        elif self._max_workers is None or len(self._workers) < self._max_workers:
            try:
                client = self._new_client()
            except Exception as exc:  # a user factory failed: that is this request's error
                request.finish(exc)
                return True
            worker = Worker(self, client)
            self._workers.add(worker)
            self._log.debug("opening a connection to %s", self._origin.text)
            worker.take(request)
            self._supervisor.start_soon(worker.run, name=f"trio_pool: {self._origin.text}")
            return True
        else:
            return False
        worker.take(request)
        self._refresh(worker)
        return True

    def _refresh(self, worker: Worker) -> None:
        """Re-file ``worker`` as idle, spare or busy after its load changed."""
        self._idle.pop(worker, None)
        self._spare.pop(worker, None)
        if not worker.capacity(None):
            return
        if worker.idle():
            if self._closed and not self._queue:
                worker.retire()
            else:
                self._idle[worker] = None
        else:
            self._spare[worker] = None

    def _pump(self) -> None:
        """Place queued requests while connections can take them (FIFO)."""
        queue = self._queue
        while queue:
            request = next(iter(queue))
            del queue[request]
            request.move(State.NEW)
            if not self._place(request):
                request.move(State.QUEUED)
                queue[request] = None
                queue.move_to_end(request, last=False)
                return

    def _abort(self, request: Request, error: BaseException) -> None:
        """End ``request`` with ``error`` now, wherever it is. Not a checkpoint."""
        state = request.state
        if state is State.DONE:
            return
        scope = request.scope
        worker: Worker | None = request.worker
        if state is State.QUEUED:
            del self._queue[request]
        elif state is State.ASSIGNED:
            assert worker is not None
            worker.drop(request)
        request.finish(error)
        if scope is not None:
            scope.cancel()  # mid-exchange: its connection task closes the connection
        if state is State.ASSIGNED and worker is not None:
            self._worker_ready(worker)  # its capacity goes to the next waiter
        else:
            self._check_shutdown()

    # Reports from connection tasks.

    def _worker_connected(self, worker: Worker) -> None:
        self._connected += 1
        self._log.debug("connected to %s", self._origin.text)
        emit_along(self._targets(worker), "connect", self._origin.text)
        self._worker_ready(worker)

    def _worker_ready(self, worker: Worker) -> None:
        self._refresh(worker)
        self._pump()
        if self._need_drain and not self._queue and (worker in self._idle or worker in self._spare):
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
        for request in reversed(worker.leftovers()):
            # Not written, or retried: back to the head of the queue, order kept.
            request.worker = None
            request.scope = None
            request.move(State.QUEUED)
            self._queue[request] = None
            self._queue.move_to_end(request, last=False)
        if not self._destroyed:
            self._pump()
        self._check_shutdown()

    # ------------------------------------------------------------------ requests

    def _prepare(
        self, options: RequestOptions, *, protocol: str | None = None, authority: str | None = None
    ) -> Request:
        request = prepare(
            options, self._origin, self._options, protocol=protocol, authority=authority
        )
        request.owner = self
        request.controller = Controller(request, self._abort)
        return request

    async def _wait(self, request: Request, event: trio.Event) -> None:
        """Wait for ``event``; a cancelled caller aborts its request at once. A checkpoint."""
        try:
            await event.wait()
        except BaseException:
            self._abort(request, RequestAbortedError("the caller was cancelled"))
            raise

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
    ) -> Response:
        """Send a request and read its whole response. A checkpoint.

        The connection is free for the next request before this returns. Non-2xx statuses
        are not errors (see ``Response.raise_for_status``). Cancelling the caller aborts the
        request (a connection cut mid-response is closed and replaced).

        Raises:
            InvalidArgumentError: a bad argument (nothing was sent).
            ClientClosedError, ClientDestroyedError: the dispatcher no longer takes requests.
            TrioPoolError: the request failed (see API.md 1.7).
        """
        request = self._prepare(
            RequestOptions(
                method,
                path,
                headers=headers,
                body=body,
                query=query,
                idempotent=idempotent,
                reset=reset,
                capability=capability,
            )
        )
        request.handler = handler = BufferHandler()
        self._submit(request)
        await self._wait(request, request.finished)
        if request.error is not None:
            raise request.error
        assert handler.response is not None
        return handler.response

    @asynccontextmanager
    async def stream(
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
    ) -> AsyncIterator[StreamResponse]:
        """Send a request; the block gets the response once its head arrived, and reads the
        body as it comes (``async for chunk in resp.body``). Entering is a checkpoint.

        Leaving the block before the body ended closes the connection (never leaked).
        Raises like :meth:`request`.
        """
        options = RequestOptions(
            method,
            path,
            headers=headers,
            body=body,
            query=query,
            idempotent=idempotent,
            reset=reset,
            capability=capability,
        )
        async with self._streaming(options) as response:
            yield response

    pipeline = stream
    """``pipeline(method, path, body=async_iterable, ...)``: like :meth:`stream`, for a body
    produced as it is sent. The body is written completely before the response is read."""

    @asynccontextmanager
    async def _streaming(self, options: RequestOptions) -> AsyncIterator[StreamResponse]:
        request = self._prepare(options)
        request.handler = handler = StreamHandler(request)
        self._submit(request)
        await self._wait(request, handler.head_ready)
        if handler.head is None:
            assert request.error is not None
            raise request.error
        status, response_headers, reason = handler.head
        try:
            yield StreamResponse(status, reason, "1.1", response_headers, source=handler)
        finally:
            handler.close()

    @asynccontextmanager
    async def upgrade(
        self, path: str, *, protocol: str = "websocket", headers: HeadersType | None = None
    ) -> AsyncIterator[Upgraded]:
        """``GET path`` with ``upgrade: protocol``; the block gets the connection once the
        server switched (101). Entering is a checkpoint; leaving closes the connection.

        Raises:
            SocketError: the server answered with another status ("bad upgrade").
            Like :meth:`request` otherwise.
        """
        request = self._prepare(RequestOptions("GET", path, headers=headers), protocol=protocol)
        async with self._switching(request, "upgrade") as upgraded:
            yield upgraded

    @asynccontextmanager
    async def connect(
        self, authority: str, *, headers: HeadersType | None = None
    ) -> AsyncIterator[Upgraded]:
        """``CONNECT authority`` (a tunnel through a proxy); the block gets the connection
        once the server answered 2xx. Entering is a checkpoint; leaving closes it.

        Raises:
            SocketError: the server answered with another status ("bad connect").
            Like :meth:`request` otherwise.
        """
        request = self._prepare(
            RequestOptions("CONNECT", "/", headers=headers), authority=authority
        )
        async with self._switching(request, "connect") as upgraded:
            yield upgraded

    @asynccontextmanager
    async def _switching(self, request: Request, what: str) -> AsyncIterator[Upgraded]:
        request.handler = handler = UpgradeHandler()
        self._submit(request)
        await self._wait(request, request.finished)
        if request.error is not None:
            raise request.error
        if handler.upgraded is None:
            assert handler.response is not None
            raise SocketError(f"bad {what}: the server answered {handler.response.status}")
        try:
            yield handler.upgraded
        finally:
            await trio.aclose_forcefully(handler.upgraded.stream)

    async def dispatch(self, options: RequestOptions, handler: Handler) -> None:
        """Send a request described by ``options``, driving ``handler`` (see API.md 1.3).

        Returns when the request has ended; failures go to ``handler.on_response_error``,
        not to the caller. A checkpoint.

        Raises:
            InvalidArgumentError: a bad argument (nothing was sent).
            ClientClosedError, ClientDestroyedError: the dispatcher no longer takes requests.
        """
        if not isinstance(options, RequestOptions):
            raise InvalidArgumentError("invalid options: expected a RequestOptions")
        request = self._prepare(options)
        request.handler = handler
        controller = request.controller
        assert controller is not None
        try:
            await call(handler.on_request_start, controller)
        except Exception as exc:
            controller.abort(exc)
        if request.state is State.NEW:
            self._submit(request)
            await self._wait(request, request.finished)
        if request.error is not None:
            await call(handler.on_response_error, controller, request.error)
