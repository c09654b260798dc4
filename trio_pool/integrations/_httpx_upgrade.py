"""Protocol upgrades under httpx: the ``network_stream`` response extension.

Theory of operation
-------------------
A request that carries ``upgrade: <protocol>`` (httpx-ws sends ``upgrade: websocket``) goes
through the dispatcher's ``upgrade()`` instead of ``stream()``; the transport enters that
context manager and hands httpx a 101 response with an empty body and
``extensions["network_stream"]``: a :class:`NetworkStream`, httpcore's network-stream interface
(``read``, ``write``, ``aclose``, ``get_extra_info``) over the connection's
:class:`trio.abc.Stream`. The connection has left the pool. Closing the response (httpx does it
when its ``stream()`` block ends) leaves the ``upgrade()`` block, which closes the connection:
the same lifetime as httpcore gives it. A server that does not switch protocols fails the
request (``upgrade()`` raises ``SocketError``, an httpx ``ReadError``).

A :class:`NetworkStream` belongs to whoever holds the response; a reader task and a writer
task may use it at once (a Trio stream allows one of each). Its ``timeout`` arguments are cancel
scopes, as the transport's.
"""

from __future__ import annotations

import math
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import trio

import trio_pool

__all__ = ["NetworkStream", "Upgrade", "UpgradedLike"]

_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError)


class UpgradedLike(Protocol):
    """What the transport reads of the connection ``upgrade()`` hands over."""

    @property
    def stream(self) -> trio.abc.Stream: ...
    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> trio_pool.Headers: ...


class NetworkStream:
    """httpcore's ``AsyncNetworkStream`` interface over an upgraded connection.

    ``read_error``, ``write_error``, ``read_timeout``, ``write_timeout`` are the httpx
    package's exception classes (its ``ReadError``...), raised as httpcore would (httpx's
    classes, since no httpcore is underneath).
    """

    __slots__ = ("_errors", "_stream")

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        read_error: type[Exception],
        write_error: type[Exception],
        read_timeout: type[Exception],
        write_timeout: type[Exception],
    ) -> None:
        self._stream = stream
        self._errors = (read_error, write_error, read_timeout, write_timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Up to ``max_bytes`` bytes; ``b""`` once the peer closed. A checkpoint."""
        read_error, _, read_timeout, _ = self._errors
        with trio.move_on_after(math.inf if timeout is None else timeout):
            try:
                return bytes(await self._stream.receive_some(max_bytes))
            except _BROKEN as exc:
                raise read_error(str(exc) or type(exc).__name__) from exc
        raise read_timeout("timed out reading the upgraded connection")

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Send all of ``buffer``. A checkpoint."""
        _, write_error, _, write_timeout = self._errors
        if not buffer:
            return
        with trio.move_on_after(math.inf if timeout is None else timeout):
            try:
                await self._stream.send_all(buffer)
            except _BROKEN as exc:
                raise write_error(str(exc) or type(exc).__name__) from exc
            return
        raise write_timeout("timed out writing the upgraded connection")

    async def aclose(self) -> None:
        """Close the connection. A checkpoint."""
        await self._stream.aclose()

    async def start_tls(self, *args: object, **kwargs: object) -> NetworkStream:
        """Not supported: TLS inside an upgraded connection."""
        raise NotImplementedError("start_tls on an upgraded trio_pool connection")

    def get_extra_info(self, info: str) -> object:
        """``"stream"``: the :class:`trio.abc.Stream`; anything else: None."""
        return self._stream if info == "stream" else None


class Upgrade:
    """The empty body of a 101 response; closing it leaves the ``upgrade()`` block."""

    __slots__ = ("_context",)

    def __init__(self, context: AbstractAsyncContextManager[UpgradedLike]) -> None:
        self._context: AbstractAsyncContextManager[UpgradedLike] | None = context

    async def receive(self) -> bytes | None:
        """No body: None at once. A checkpoint."""
        await trio.lowlevel.checkpoint()
        return None

    async def close(self) -> None:
        """Close the connection (idempotent). A checkpoint the first time."""
        context, self._context = self._context, None
        if context is not None:
            with trio.CancelScope(shield=True):  # bookkeeping that must finish
                await context.__aexit__(None, None, None)
