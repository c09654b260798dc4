"""Shared by the interceptor tests: the in-memory server and the Pool most of them use (the
``server`` and ``pool`` fixtures: each module gives the server's ``script`` fixture), a
recording interceptor, and a dispatcher of two origins standing in for an ``Agent`` (which
takes absolute URLs of any origin)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from urllib.parse import urlsplit

import attrs
import pytest

import trio_pool
from trio_pool import Dispatcher, InvalidArgumentError, PoolStats, RequestOptions
from trio_pool.http._models import HeadersType, Upgraded
from trio_pool.interceptors import DispatchFunction, Handler
from trio_pool.testing import H11Server, Script, serve_memory


@pytest.fixture(name="server")
async def server_fixture(script: Script) -> AsyncIterator[H11Server]:
    async with serve_memory(script) as server:
        yield server


@pytest.fixture(name="pool")
async def pool_fixture(server: H11Server) -> AsyncIterator[trio_pool.Pool]:
    async with trio_pool.Pool(server.origin, connector=server.connector) as pool:
        yield pool


def recording(log: list[str], name: str) -> Callable[[DispatchFunction], DispatchFunction]:
    """An interceptor that logs ``name method path`` and passes the request on."""

    def interceptor(dispatch: DispatchFunction) -> DispatchFunction:
        async def logged(options: RequestOptions, handler: Handler) -> None:
            log.append(f"{name} {options.method} {options.path}")
            await dispatch(options, handler)

        return logged

    return interceptor


class TwoOrigins(Dispatcher):
    """Routes absolute URLs to one of its pools by origin, as an ``Agent`` would (only
    ``dispatch()`` and the lifetime are needed under ``compose()``)."""

    def __init__(self, pools: dict[str, trio_pool.Pool]) -> None:
        self.pools = pools

    async def dispatch(self, options: RequestOptions, handler: Handler) -> None:
        parts = urlsplit(options.path)
        pool = self.pools.get(f"{parts.scheme}://{parts.netloc}")
        if pool is None:
            raise InvalidArgumentError(f"no pool for {options.path}")
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        await pool.dispatch(attrs.evolve(options, path=path), handler)

    def statistics(self) -> PoolStats:
        all_stats = [pool.statistics() for pool in self.pools.values()]
        return PoolStats(
            **{f: sum(getattr(s, f) for s in all_stats) for f in attrs.fields_dict(PoolStats)}
        )

    def _request_options(self, options: RequestOptions) -> Awaitable[trio_pool.Response]:
        raise NotImplementedError

    def _stream(
        self, options: RequestOptions, *, duplex: bool
    ) -> AbstractAsyncContextManager[trio_pool.StreamResponse]:
        raise NotImplementedError

    def upgrade(
        self, path: str, *, protocol: str = "websocket", headers: HeadersType | None = None
    ) -> AbstractAsyncContextManager[Upgraded]:
        raise NotImplementedError

    def connect(
        self, authority: str, *, headers: HeadersType | None = None
    ) -> AbstractAsyncContextManager[Upgraded]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def destroy(self, error: BaseException | None = None) -> None:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        return False

    @property
    def destroyed(self) -> bool:
        return False

    def on(self, event: str, callback: Callable[..., object]) -> None:
        raise NotImplementedError

    def off(self, event: str, callback: Callable[..., object]) -> None:
        raise NotImplementedError
