"""Upstream servers for the BalancedPool tests: real TCP on 127.0.0.1, restartable on the
same port, so "down" is a refused connection and "up again" is the same origin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import trio

from trio_pool.testing import H11Server, ServerConnection, ServerRequest


class Upstream:
    """One scripted upstream. ``attempts`` counts the requests that reached it (answered)
    plus the failures the test charges to it, like undici's ``requestsCount``."""

    def __init__(
        self,
        name: str,
        nursery: trio.Nursery,
        log: list[str],
        *,
        hangup_on: Iterable[int] = (),
        down_on: Iterable[int] = (),
        script: Callable[[ServerRequest, ServerConnection], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.log = log
        self.hangup_on = set(hangup_on)
        self.down_on = set(down_on)
        self.attempts = 0
        self.served = 0
        self.port = 0
        self.gate = trio.Event()  # ``/slow`` is answered once this is set
        self._nursery = nursery
        self._server = H11Server(script or self._answer, nursery)
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._scope is not None

    async def _answer(self, request: ServerRequest, conn: ServerConnection) -> None:
        if request.target == "/slow":
            await self.gate.wait()
        if self.attempts in self.hangup_on:
            await conn.close()  # the client sees the connection drop mid-request
            return
        self.attempts += 1
        self.served += 1
        self.log.append(self.name)
        await conn.respond(200, body=self.name.encode())

    async def start(self) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()
        self._nursery.start_soon(self._serve, listeners, self._scope, self._stopped)

    async def _serve(
        self, listeners: list[trio.SocketListener], scope: trio.CancelScope, stopped: trio.Event
    ) -> None:
        try:
            with scope:
                await trio.serve_listeners(self._server.serve_stream, listeners)
        finally:
            stopped.set()

    async def stop(self) -> None:
        """Close the listener and every connection: connects are refused from now on."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
            await self._stopped.wait()

    async def prepare(self) -> None:
        """undici's ``prepareForIteration``: down while ``attempts`` is in ``down_on``."""
        if self.attempts in self.down_on:
            await self.stop()
        elif not self.running:
            await self.start()


@asynccontextmanager
async def upstreams(count: int, **config: Any) -> AsyncIterator[list[Upstream]]:
    """``count`` running upstreams named A, B, C, ... sharing one log (``ups[0].log``)."""
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        ups = [Upstream(chr(ord("A") + i), nursery, log, **config) for i in range(count)]
        for up in ups:
            await up.start()
        yield ups
        nursery.cancel_scope.cancel()
