"""``httpx`` over trio_pool: ``AsyncTransport(dispatcher)`` (extra ``trio_pool[httpx]``).

The logic is in ``trio_pool.integrations._httpx_common``, shared by both httpx flavours; this
module binds httpx's classes to it. See the "Use trio_pool under httpx" page.
"""

from __future__ import annotations

try:
    import httpx
except ImportError as exc:  # pragma: no cover - the extra is installed wherever tests run
    raise ImportError(
        "trio_pool.httpx needs the httpx package: pip install 'trio_pool[httpx]'"
    ) from exc

from .integrations._httpx_common import Flavour, ResponseBody, TransportBase

__all__ = ["AsyncTransport"]


class _ResponseStream(ResponseBody, httpx.AsyncByteStream):
    """A response body, read from the dispatcher as httpx iterates it."""


class AsyncTransport(TransportBase[httpx.Response], httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` over an entered trio_pool ``dispatcher``:
    ``httpx.AsyncClient(transport=AsyncTransport(pool))``.

    Both directions stream; httpx's ``timeout`` is enforced with cancel scopes; trio_pool's
    errors become httpx's (``__cause__``: the trio_pool error). A ``Pool``, ``Client`` or
    ``BalancedPool`` refuses a URL of another origin (``httpx.LocalProtocolError``, nothing
    sent). Closing the transport does not close the dispatcher.

    Raises:
        InvalidArgumentError: ``dispatcher`` is not a ``trio_pool.Dispatcher``.
    """

    flavour = Flavour.of(httpx)
    body_class = _ResponseStream
