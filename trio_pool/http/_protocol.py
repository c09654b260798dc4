"""``Dispatcher``: the structural type of everything that sends HTTP requests.

``Client``, ``Pool``, ``BalancedPool`` and ``trio_pool.testing.MockPool`` share no base class
(the mock must not inherit a scheduler it does not use), but they offer the same methods. An
application annotates its dependency with this Protocol, and a type checker accepts any of
them; the conformance of the real classes and of the mock is checked statically, below and in
``trio_pool/testing/_mock.py``, every time the package is type-checked.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._balanced import BalancedPool
    from ._client import Client
    from ._dispatch import Handler
    from ._models import (
        BodyType,
        HeadersType,
        PoolStats,
        QueryType,
        RequestOptions,
        Response,
        StreamResponse,
        Upgraded,
    )
    from ._pool import Pool

__all__ = ["Dispatcher"]


@runtime_checkable
class Dispatcher(Protocol):
    """What ``Client``, ``Pool``, ``BalancedPool`` and ``trio_pool.testing.MockPool`` have in
    common: annotate a parameter with it to accept any of them.

    Example::

        async def fetch_user(http: trio_pool.Dispatcher, user_id: int) -> dict:
            response = await http.request("GET", f"/users/{user_id}")
            response.raise_for_status()
            return response.json()

    It is ``runtime_checkable``: ``isinstance(obj, trio_pool.Dispatcher)`` tells whether
    ``obj`` has these methods (not their signatures). The methods are documented on the
    classes; their meaning is the same everywhere.
    """

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
        """Send a request and read its whole response. A checkpoint."""
        ...

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
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """``async with``: the response once its head arrived; its body read as it comes."""
        ...

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
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """``async with``: like :meth:`stream`, the request body written meanwhile."""
        ...

    async def dispatch(self, options: RequestOptions, handler: Handler) -> None:
        """Send a request, driving ``handler``'s methods. A checkpoint."""
        ...

    def upgrade(
        self, path: str, *, protocol: str = "websocket", headers: HeadersType | None = None
    ) -> AbstractAsyncContextManager[Upgraded]:
        """``async with``: the connection, once the server switched protocols."""
        ...

    def connect(
        self, authority: str, *, headers: HeadersType | None = None
    ) -> AbstractAsyncContextManager[Upgraded]:
        """``async with``: a tunnel through a proxy (``CONNECT authority``)."""
        ...

    async def close(self) -> None:
        """Refuse new requests, let the others finish, then close. A checkpoint."""
        ...

    async def destroy(self, error: BaseException | None = None) -> None:
        """Fail every outstanding request with ``error`` and close. A checkpoint."""
        ...

    @property
    def closed(self) -> bool:
        """True once closing began."""
        ...

    @property
    def destroyed(self) -> bool:
        """True once destroying began."""
        ...

    def statistics(self) -> PoolStats:
        """A snapshot of the counters. Not a checkpoint."""
        ...

    def on(self, event: str, callback: Callable[..., object]) -> None:
        """Call ``callback`` on ``event``."""
        ...

    def off(self, event: str, callback: Callable[..., object]) -> None:
        """Remove one registration of ``callback`` for ``event``."""
        ...


if TYPE_CHECKING:
    # Checked by mypy, never run: the real dispatchers conform to the Protocol.
    def _conforms(client: Client, pool: Pool, balanced: BalancedPool) -> list[Dispatcher]:
        return [client, pool, balanced]
