"""How ``bench`` sends one request: the dispatcher it opens, and a sender per kind of run.

Theory of operation
-------------------
:func:`open_dispatcher` opens a :class:`~trio_pool.Pool` for one origin and a
:class:`~trio_pool.BalancedPool` for several, with the run's options: ``--timeout`` becomes
the pool's connect, headers and body timeouts (the pool enforces those with the deadlines it
keeps anyway, so a hung server is bounded by ``--timeout`` at no cost per request), and
``--cacert``/``--insecure`` its ``ssl_context``.

A sender is an async function of no arguments that sends the configured request once and
returns an :data:`Outcome` ``(status, body_bytes, upstream, error)``: ``error`` is None for a
response (any status), else the :class:`~trio_pool.TrioPoolError` the request failed with
(``status`` is then 0). Senders never raise ``TrioPoolError``, so the load loop has one path.

* One origin: ``Pool.request()``, the pool's fastest path (with no ``-H`` or body it needs no
  options object). ``upstream`` is always 0.
* Several origins: ``BalancedPool.dispatch()`` with a small handler per request, because the
  per-upstream report needs to know which upstream served each request: every handler method
  gets a controller whose public ``origin`` names the upstream running the request (with
  failover, the current attempt's), which the handler maps to the upstream's index when the
  request ends. A request that fails before reaching an upstream keeps ``upstream`` -1
  (reported in the totals only).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import trio_pool

from ._args import BenchConfig

if TYPE_CHECKING:
    from trio_pool.interceptors import Controller

__all__ = ["Outcome", "Sender", "open_dispatcher", "sender"]

Outcome = tuple[int, int, int, "trio_pool.TrioPoolError | None"]
Sender = Callable[[], Awaitable[Outcome]]


def _options(config: BenchConfig) -> dict[str, Any]:
    return {
        "connections": config.connections,
        "pipelining": config.pipelining,
        "connect_timeout": config.timeout,
        "headers_timeout": config.timeout,
        "body_timeout": config.timeout,
        "ssl_context": config.ssl_context,
    }


def open_dispatcher(
    origins: Sequence[str], config: BenchConfig
) -> AbstractAsyncContextManager[trio_pool.Pool | trio_pool.BalancedPool]:
    """A ``Pool`` over ``origins[0]``, or a ``BalancedPool`` over several, not yet entered."""
    options = _options(config)
    if len(origins) == 1:
        return trio_pool.Pool(origins[0], **options)
    return trio_pool.BalancedPool(list(origins), **options)


class _Exchange:
    """The handler of one balanced request: what came back, and from which upstream (its
    index in ``upstreams``, an origin → index map; -1 until the request ends on one)."""

    __slots__ = ("error", "received", "status", "upstream", "upstreams")

    def __init__(self, upstreams: dict[str, int]) -> None:
        self.upstreams = upstreams
        self.status = 0
        self.received = 0
        self.upstream = -1
        self.error: trio_pool.TrioPoolError | None = None

    def on_request_start(self, controller: object) -> None:
        pass

    def on_response_start(
        self, controller: object, status: int, headers: object, reason: str
    ) -> None:
        self.status = status

    def on_response_data(self, controller: object, chunk: bytes) -> None:
        self.received += len(chunk)

    def on_response_end(self, controller: Controller, trailers: object) -> None:
        self._ended_on(controller)

    def on_response_error(self, controller: Controller, error: BaseException) -> None:
        if not isinstance(error, trio_pool.TrioPoolError):  # pragma: no cover - API.md 1.7
            error = trio_pool.SocketError(f"{type(error).__name__}: {error}")
        self.error = error
        self._ended_on(controller)

    def _ended_on(self, controller: Controller) -> None:
        # Read at the end: with failover, the upstream of the last attempt is the one that
        # answered (or failed last).
        origin = controller.origin
        if origin is not None:
            self.upstream = self.upstreams.get(origin, -1)


def sender(
    dispatcher: trio_pool.Pool | trio_pool.BalancedPool, config: BenchConfig, *, balanced: bool
) -> Sender:
    """The sender of ``config``'s request through ``dispatcher`` (see the module header);
    ``balanced`` when it is a ``BalancedPool`` whose upstreams are reported one by one."""
    method, target = config.method, config.target
    headers = list(config.headers) or None
    body = config.body
    if balanced:
        options = trio_pool.RequestOptions(method, target, headers=headers, body=body)
        dispatch = dispatcher.dispatch
        # Upstreams are named by their origin in its canonical form, as controllers name it.
        assert isinstance(dispatcher, trio_pool.BalancedPool)
        upstreams = {origin: number for number, origin in enumerate(dispatcher.upstreams)}

        async def send_balanced() -> Outcome:
            exchange = _Exchange(upstreams)
            try:
                await dispatch(options, exchange)
            except trio_pool.InvalidArgumentError as exc:  # raised, not handed to the handler
                return 0, 0, -1, exc
            if exchange.error is not None:
                return 0, 0, exchange.upstream, exchange.error
            return exchange.status, exchange.received, exchange.upstream, None

        return send_balanced

    request = dispatcher.request

    async def send() -> Outcome:
        # With neither headers nor body, request() takes the pool's plain fast path.
        try:
            response = await request(method, target, headers=headers, body=body)
        except trio_pool.TrioPoolError as exc:
            return 0, 0, 0, exc
        return response.status, len(response.body), 0, None

    return send
