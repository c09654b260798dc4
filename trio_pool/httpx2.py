"""``httpx2`` over trio_pool: ``AsyncTransport(dispatcher)`` (extra ``trio_pool[httpx2]``).

The logic is in ``trio_pool.integrations._httpx_common``, shared by both httpx flavours; this
module binds httpx2's classes to it. See the "Use trio_pool under httpx" page.
"""

from __future__ import annotations

try:
    import httpx2
except ImportError as exc:  # pragma: no cover - the extra is installed wherever tests run
    raise ImportError(
        "trio_pool.httpx2 needs the httpx2 package: pip install 'trio_pool[httpx2]'"
    ) from exc

from .integrations._httpx_common import Flavour, ResponseBody, TransportBase

__all__ = ["AsyncTransport"]


class _ResponseStream(ResponseBody, httpx2.AsyncByteStream):
    """A response body, read from the dispatcher as httpx2 iterates it."""


class AsyncTransport(TransportBase[httpx2.Response], httpx2.AsyncBaseTransport):
    """An ``httpx2.AsyncBaseTransport`` over an entered trio_pool ``dispatcher``:
    ``httpx2.AsyncClient(transport=AsyncTransport(pool))``.

    Both directions stream; httpx2's ``timeout`` is enforced with cancel scopes; trio_pool's
    errors become httpx2's (``__cause__``: the trio_pool error). A ``Pool``, ``Client`` or
    ``BalancedPool`` refuses a URL of another origin (``httpx2.LocalProtocolError``, nothing
    sent). Closing the transport does not close the dispatcher.

    Raises:
        InvalidArgumentError: ``dispatcher`` is not a ``trio_pool.Dispatcher``.
    """

    flavour = Flavour.of(httpx2)
    body_class = _ResponseStream
