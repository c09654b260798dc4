"""The low-level handler protocol of ``dispatch()``, its controller, and the two built-in
handlers that ``request()`` (buffer the body) and ``stream()`` (hand chunks over) use.

Handler methods run in the connection's task, in order: ``on_request_start`` (in the
caller's task, before the request is queued), ``on_response_start``, ``on_response_data``*,
``on_response_end``; or, instead of the rest, one ``on_response_error`` (in the caller's task,
once the request has ended). A method may be ``async def``: it is awaited, which is how a
handler applies backpressure. Built-in handlers are plain functions, so the hot path has no
extra checkpoint.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .._errors import RequestAbortedError
from ._headers import Headers
from ._models import Response, Upgraded
from ._request import State

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._request import Request

__all__ = [
    "BufferHandler",
    "Controller",
    "Handler",
    "StreamHandler",
    "UpgradeHandler",
    "call",
    "start_call",
]


class Handler(Protocol):
    """What ``dispatch(options, handler)`` calls; each method may also be ``async def``."""

    def on_request_start(self, controller: Controller) -> object: ...
    def on_response_start(
        self, controller: Controller, status: int, headers: Headers, reason: str
    ) -> object: ...
    def on_response_data(self, controller: Controller, chunk: bytes) -> object: ...
    def on_response_end(self, controller: Controller, trailers: Headers) -> object: ...
    def on_response_error(self, controller: Controller, error: BaseException) -> object: ...


def start_call(method: Callable[..., object], *args: Any) -> Awaitable[object] | None:
    """Call a handler method; return what must still be awaited if it is async, else None
    (a plain method costs no coroutine and no checkpoint)."""
    result = method(*args)
    if result is not None and inspect.isawaitable(result):
        return result
    return None


async def call(method: Callable[..., object], *args: Any) -> None:
    """Call a handler method, awaiting it if it is async. A checkpoint only if it is async."""
    pending = start_call(method, *args)
    if pending is not None:
        await pending


class Controller:
    """Passed to every handler method: lets the handler abort its request."""

    __slots__ = ("_abort", "_request")

    def __init__(self, request: Request, abort: Callable[[Request, BaseException], None]) -> None:
        self._request = request
        self._abort = abort

    @property
    def aborted(self) -> bool:
        """True once the request has ended with an error (aborted or failed)."""
        return self._request.error is not None

    def abort(self, reason: object = None) -> None:
        """Abort the request with ``RequestAbortedError`` (``__cause__`` = ``reason`` when it is
        an exception). A request cut mid-response closes its connection. Not a checkpoint."""
        error = RequestAbortedError(f"request aborted: {reason!r}" if reason else "request aborted")
        if isinstance(reason, BaseException):
            error.__cause__ = reason
        self._abort(self._request, error)


class BufferHandler:
    """Collects a whole response into a :class:`Response` (``request()``)."""

    __slots__ = ("_chunks", "_head", "response")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._head: tuple[int, Headers, str] | None = None
        self.response: Response | None = None

    def on_request_start(self, controller: Controller) -> None:
        pass

    def on_response_start(
        self, controller: Controller, status: int, headers: Headers, reason: str
    ) -> None:
        self._head = (status, headers, reason)

    def on_response_data(self, controller: Controller, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def on_response_end(self, controller: Controller, trailers: Headers) -> None:
        assert self._head is not None
        status, headers, reason = self._head
        body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self.response = Response(status, reason, "1.1", headers, trailers, body)

    def on_response_error(self, controller: Controller, error: BaseException) -> None:
        pass


class StreamHandler:
    """Hands the head, then one chunk at a time, to a :class:`StreamResponse` reader.

    The connection task blocks in ``on_response_data`` until the reader has taken the chunk
    (an unbuffered memory channel): that is the backpressure, and nothing is buffered here.
    """

    __slots__ = ("_request", "_trailers", "head", "head_ready", "receiver", "sender")

    def __init__(self, request: Request) -> None:
        self._request = request
        self.sender, self.receiver = trio.open_memory_channel[bytes](0)
        self.head: tuple[int, Headers, str] | None = None
        self.head_ready = trio.Event()
        self._trailers = Headers()
        request.done = self._on_done

    def _on_done(self) -> None:
        self.head_ready.set()
        self.sender.close()

    def on_request_start(self, controller: Controller) -> None:
        pass

    def on_response_start(
        self, controller: Controller, status: int, headers: Headers, reason: str
    ) -> None:
        self.head = (status, headers, reason)
        self.head_ready.set()

    async def on_response_data(self, controller: Controller, chunk: bytes) -> None:
        await self.sender.send(chunk)

    def on_response_end(self, controller: Controller, trailers: Headers) -> None:
        self._trailers = trailers

    def on_response_error(self, controller: Controller, error: BaseException) -> None:
        pass

    # BodySource, for StreamResponse

    async def receive(self) -> bytes | None:
        try:
            return await self.receiver.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            pass
        if self._request.error is not None:
            raise self._request.error
        return None

    def trailers(self) -> Headers:
        return self._trailers

    def close(self) -> None:
        self.receiver.close()
        if self._request.state is not State.DONE:
            assert self._request.controller is not None
            self._request.controller.abort("the stream was closed before its body was read")


class UpgradeHandler(BufferHandler):
    """Receives the connection of ``upgrade()``/``connect()``; a refused switch is buffered
    like any response, so its status and body can be reported."""

    __slots__ = ("upgraded",)

    def __init__(self) -> None:
        super().__init__()
        self.upgraded: Upgraded | None = None

    def on_upgrade(self, status: int, headers: Headers, stream: trio.abc.Stream) -> None:
        self.upgraded = Upgraded(stream, status, headers)
