"""Helpers shared by the test modules (importable as ``_helpers``: ``tests/conftest.py``
puts this directory on ``sys.path``).

* :func:`assert_idle` — a dispatcher's ``statistics()`` shows no request in flight; a failure
  names the fields that are not, e.g. ``statistics() not idle: queued=1, running=1``.
* :func:`ok` — the server script that answers every request with an empty 200.
* :func:`memory_pool` — a ``Pool`` over :func:`trio_pool.testing.serve_memory`, for the block.
* :func:`asgi_lifespan` — the lifespan half of a test's ASGI app (hypercorn serves those).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable

import trio_pool
from trio_pool.testing import Script, ServerConnection, ServerRequest, serve_memory

__all__ = ["asgi_lifespan", "assert_idle", "busy_fields", "memory_pool", "ok"]

_BUSY = ("pending", "queued", "running", "size")


class _HasStatistics(Protocol):
    def statistics(self) -> trio_pool.PoolStats: ...


def busy_fields(stats: trio_pool.PoolStats) -> str:
    """The fields of ``stats`` that say a request is in flight, as ``name=value, ...``
    (empty when idle)."""
    return ", ".join(f"{name}={getattr(stats, name)}" for name in _BUSY if getattr(stats, name))


def assert_idle(dispatcher: _HasStatistics, *, all_free: bool = False, what: str = "") -> None:
    """Assert that ``dispatcher`` (a ``Client``, ``Pool``, ``BalancedPool`` or ``MockPool``)
    has nothing pending, queued or running; with ``all_free``, also that every open
    connection is free. The failure message names the fields that are not zero, after
    ``what`` (the context, if given)."""
    stats = dispatcher.statistics()
    prefix = f"{what}: " if what else ""
    busy = busy_fields(stats)
    assert not busy, f"{prefix}statistics() not idle: {busy} ({stats})"
    if all_free:
        assert stats.free == stats.connected, (
            f"{prefix}statistics() not idle: free={stats.free} of connected={stats.connected}"
        )


async def ok(request: ServerRequest, conn: ServerConnection) -> None:
    """A server script: an empty 200 to every request."""
    await conn.respond(200)


@asynccontextmanager
async def memory_pool(script: Script = ok, **options: Any) -> AsyncIterator[trio_pool.Pool]:
    """A ``Pool`` (with ``options``) whose connections go to ``script`` over in-memory
    streams, for the block."""
    async with serve_memory(script) as server:
        async with trio_pool.Pool(server.origin, connector=server.connector, **options) as pool:
            yield pool


async def asgi_lifespan(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Serve an ASGI ``lifespan`` scope: acknowledge start-up, return once shut down."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
