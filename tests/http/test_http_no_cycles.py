"""No garbage per request (issue #16): once a request has ended, none of trio_pool's objects
is left in a reference cycle, whatever way it ended, so a process running with the cyclic
collector off (or rarely run) does not grow. Real ``Pool`` over loopback TCP.

Each test runs its requests with the collector disabled and ``gc.DEBUG_SAVEALL`` on, then
collects: every unreachable object lands in ``gc.garbage``, and none may come from a
``trio_pool`` module."""

from __future__ import annotations

import gc
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import pytest
import trio
from _helpers import assert_idle

import trio_pool
from trio_pool import Headers, Pool, RequestOptions, interceptors
from trio_pool.testing import ServerConnection, ServerRequest, serve_h11


async def script(request: ServerRequest, conn: ServerConnection) -> None:
    """``/big``: 256 KiB; ``/stall``: never answers; ``/redirect``: 302 to ``/``;
    ``/flaky``: a 503 every other time; anything else: a small 200."""
    if request.target == "/big":
        await conn.respond(200, body=b"x" * 262144)
    elif request.target == "/stall":
        await trio.sleep_forever()
    elif request.target == "/redirect":
        await conn.respond(302, headers=[("location", "/")])
    elif request.target == "/flaky":
        script.flaky += 1  # type: ignore[attr-defined]
        status = 503 if script.flaky % 2 else 200  # type: ignore[attr-defined]
        await conn.respond(status, headers=[("retry-after", "0")])
    elif request.target == "/close":
        await conn.close()
    elif request.target == "/garbage":
        await conn.send_raw(b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n")
        await conn.close()
    elif request.target == "/cut":
        await conn.send_head(200, [("content-length", "100")])
        await conn.send_data(b"x" * 10)
        await conn.close()
    else:
        await conn.respond(200, body=b"hello world")


script.flaky = 0  # type: ignore[attr-defined]


def _ours(objects: list[object]) -> list[str]:
    """Descriptions of the objects of ``objects`` defined by a trio_pool module."""
    found = []
    for obj in objects:
        module = getattr(type(obj), "__module__", "") or ""
        if module.startswith("trio_pool"):
            found.append(f"{type(obj).__module__}.{type(obj).__qualname__}")
        elif type(obj).__name__ in ("function", "coroutine", "method", "cell", "frame"):
            code = getattr(obj, "__code__", None) or getattr(obj, "f_code", None)
            filename = getattr(code, "co_filename", "")
            if "/trio_pool/" in filename:
                found.append(f"{type(obj).__name__} {getattr(code, 'co_qualname', '?')}")
    return found


@contextmanager
def no_garbage() -> Iterator[None]:
    """Within the block the cyclic collector is off; after it, collecting must find no
    trio_pool object unreachable."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    del gc.garbage[:]
    try:
        yield
        gc.collect()
        found = _ours(gc.garbage)
        assert not found, f"{len(found)} trio_pool objects in cycles: {sorted(set(found))}"
    finally:
        gc.set_debug(0)
        del gc.garbage[:]
        if was_enabled:
            gc.enable()


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    async with serve_h11(script) as server, Pool(server.origin, connections=4) as pool:
        # Warm up: connections open and module-level caches filled before measuring.
        for _ in range(3):
            await pool.request("GET", "/")
        yield pool


async def _repeat(call: Callable[[], Awaitable[object]], times: int = 5) -> None:
    with trio.fail_after(20):
        for _ in range(times):
            await call()


async def test_request(pool: Pool) -> None:
    async def call() -> None:
        assert (await pool.request("GET", "/")).body == b"hello world"
        assert (await pool.request("POST", "/", body=b"data")).status == 200
        assert (await pool.request("GET", "/", headers={"x-a": "b"})).status == 200

    with no_garbage():
        await _repeat(call)
    assert_idle(pool)


async def test_stream_read_fully(pool: Pool) -> None:
    async def call() -> None:
        async with pool.stream("GET", "/") as response:
            assert await response.read() == b"hello world"

    with no_garbage():
        await _repeat(call)
    assert_idle(pool)


# A request cut short closes its connection: its Client (inside the Pool), its Connection
# and the request it was reading must all go by reference counting.
async def test_stream_closed_early(pool: Pool) -> None:
    async def call() -> None:
        async with pool.stream("GET", "/big") as response:
            async for _ in response.body:
                break

    with no_garbage():
        await _repeat(call)
    assert_idle(pool)


class Abortable(Protocol):
    def abort(self, error: BaseException | None = None) -> None: ...


class _Collect:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.errors: list[BaseException] = []

    def on_request_start(self, controller: Abortable) -> None:
        pass

    def on_response_start(
        self, controller: Abortable, status: int, headers: Headers, reason: str
    ) -> None:
        pass

    def on_response_data(self, controller: Abortable, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def on_response_end(self, controller: Abortable, trailers: Headers) -> None:
        pass

    def on_response_error(self, controller: Abortable, error: BaseException) -> None:
        self.errors.append(error)


async def test_dispatch(pool: Pool) -> None:
    async def call() -> None:
        handler = _Collect()
        await pool.dispatch(RequestOptions("GET", "/"), handler)
        assert b"".join(handler.chunks) == b"hello world"

    with no_garbage():
        await _repeat(call)
    assert_idle(pool)


async def test_pipeline(pool: Pool) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    async def call() -> None:
        async with pool.pipeline("POST", "/", body=body()) as response:
            assert await response.read() == b"hello world"

    with no_garbage():
        await _repeat(call)
    assert_idle(pool)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_errors_and_timeouts() -> None:
    # headers_timeout is a pool option: a second pool with a short one.
    async with serve_h11(script) as server:
        async with (
            Pool(server.origin, headers_timeout=0.05) as short,
            Pool(f"http://127.0.0.1:{_closed_port()}") as refused,
        ):
            await short.request("GET", "/")

            async def failures() -> None:
                with pytest.raises(trio_pool.HeadersTimeoutError):
                    await short.request("GET", "/stall")
                with pytest.raises(trio_pool.TrioPoolError):
                    await short.request("GET", "/cut")
                with pytest.raises(trio_pool.SocketError):  # closed without an answer
                    await short.request("GET", "/close")
                with pytest.raises(trio_pool.HTTPParserError):
                    await short.request("GET", "/garbage")
                with pytest.raises(trio_pool.ConnectError):
                    await refused.request("GET", "/")
                with pytest.raises(trio_pool.HeadersTimeoutError):
                    async with short.stream("GET", "/stall"):
                        pass
                with trio.move_on_after(0.01):  # the caller cancelled
                    await short.request("GET", "/stall")

            with no_garbage():
                await _repeat(failures, 3)
            assert_idle(short)
            assert_idle(refused)
            assert (await short.request("GET", "/")).status == 200


# An error raised while a stream's body is read, or given to a dispatch() handler, leaves
# with a traceback through frames that hold the request (and the handler): the request keeps
# a traceback-free twin, and a handler's error has those finished frames cleared.
async def test_body_and_dispatch_errors(pool: Pool) -> None:
    async def failures() -> None:
        async with pool.stream("GET", "/cut") as response:
            with pytest.raises(trio_pool.ResponseContentLengthMismatchError) as first:
                await response.read()
            # Read again after the failure: the same kind of error, again.
            with pytest.raises(trio_pool.ResponseContentLengthMismatchError) as again:
                await response.read()
            assert str(again.value) == str(first.value)
            del first, again
        handler = _Collect()
        await pool.dispatch(RequestOptions("GET", "/cut"), handler)
        [error] = handler.errors
        assert isinstance(error, trio_pool.ResponseContentLengthMismatchError)
        # Cleared frames still print: the handler sees where the read failed.
        assert "receive_data" in "".join(traceback.format_exception(error))

    with no_garbage():
        await _repeat(failures, 3)
    assert_idle(pool)


async def test_interceptors_retry_and_redirect(pool: Pool) -> None:
    client = trio_pool.compose(
        pool,
        interceptors.redirect(),
        interceptors.retry(min_timeout=0.01),
        interceptors.decompress(),
    )

    async def call() -> None:
        assert (await client.request("GET", "/")).status == 200
        assert (await client.request("GET", "/redirect")).body == b"hello world"
        assert (await client.request("GET", "/flaky")).status == 200
        async with client.stream("GET", "/") as response:
            assert await response.read() == b"hello world"

    with no_garbage():
        await _repeat(call)
    assert_idle(pool)
