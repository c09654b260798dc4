"""``httpx`` over trio_pool: ``AsyncTransport(dispatcher)`` (extra ``trio_pool[httpx]``).

``httpx.AsyncClient(transport=AsyncTransport(pool))`` sends every request of the client
through the trio_pool dispatcher ``pool`` (an entered ``Pool``, ``Client``,
``BalancedPool`` or any other ``trio_pool.Dispatcher``). The logic lives in
``trio_pool.integrations._httpx_common`` (shared with the other httpx flavour); this module
only binds httpx's classes to it. See the "Use trio_pool under httpx" page.
"""

from __future__ import annotations

try:
    import httpx
except ImportError as exc:  # pragma: no cover - the extra is installed wherever tests run
    raise ImportError(
        "trio_pool.httpx needs the httpx package: pip install 'trio_pool[httpx]'"
    ) from exc

import trio

import trio_pool

from .integrations._httpx_common import Exchange, Flavour, ResponseBody, TransportCore

__all__ = ["AsyncTransport"]

_FLAVOUR = Flavour(
    response=httpx.Response,
    request_not_read=httpx.RequestNotRead,
    connect_error=httpx.ConnectError,
    connect_timeout=httpx.ConnectTimeout,
    read_timeout=httpx.ReadTimeout,
    write_timeout=httpx.WriteTimeout,
    pool_timeout=httpx.PoolTimeout,
    read_error=httpx.ReadError,
    write_error=httpx.WriteError,
    local_protocol_error=httpx.LocalProtocolError,
    remote_protocol_error=httpx.RemoteProtocolError,
    proxy_error=httpx.ProxyError,
    transport_error=httpx.TransportError,
)


class _ResponseStream(ResponseBody[httpx.Response], httpx.AsyncByteStream):
    """A response body read from the dispatcher as httpx asks for it."""


def _body(exchange: Exchange[httpx.Response]) -> _ResponseStream:
    return _ResponseStream(exchange)


class AsyncTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` over a trio_pool dispatcher.

    Requests and responses stream both ways; httpx's ``timeout`` extension is enforced
    with cancel scopes; trio_pool's errors become httpx's (their ``__cause__`` is the
    trio_pool error). Closing the transport (or the client) does not close the
    dispatcher: its own ``async with`` owns it.

    Args:
        dispatcher: an entered trio_pool dispatcher. A dispatcher of one origin
            (``Client``, ``Pool``, ``BalancedPool``) refuses a URL of another origin
            with ``httpx.LocalProtocolError`` (nothing is sent).

    Raises:
        InvalidArgumentError: ``dispatcher`` is not a ``trio_pool.Dispatcher``.
    """

    def __init__(self, dispatcher: trio_pool.Dispatcher) -> None:
        self._core = TransportCore(dispatcher, _FLAVOUR)

    @property
    def dispatcher(self) -> trio_pool.Dispatcher:
        """The dispatcher this transport sends through."""
        return self._core.dispatcher

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; return once the response head arrived (the body is read
        as httpx iterates it). A checkpoint."""
        return await self._core.handle(request, _body)

    async def aclose(self) -> None:
        """Does nothing to the dispatcher (its ``async with`` owns it). A checkpoint."""
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return f"<trio_pool.httpx.AsyncTransport over {self._core.dispatcher!r}>"
