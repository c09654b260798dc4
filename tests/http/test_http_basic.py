"""Requests and responses through the public API: the happy paths and argument checks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Protocol

import pytest
import trio
import trio.lowlevel

import trio_pool
from trio_pool import Client, Headers, InvalidArgumentError, Pool, RequestOptions
from trio_pool.testing import ServerConnection, ServerRequest, serve_h11, serve_memory


async def ok(request: ServerRequest, conn: ServerConnection) -> None:
    await conn.respond(200, body=f"{request.method} {request.target}".encode())


async def echo(request: ServerRequest, conn: ServerConnection) -> None:
    await conn.respond(
        201,
        [("content-type", "application/json; charset=utf-8"), ("x-a", "1"), ("X-A", "2")],
        json.dumps(
            {
                "method": request.method,
                "target": request.target,
                "body": request.body.decode(),
                "headers": request.headers,
            }
        ).encode(),
        reason=b"Created",
    )


async def test_request_over_real_tcp() -> None:
    async with serve_h11(echo) as server, Pool(server.origin) as pool:
        response = await pool.request("POST", "/x", body=b"abc", headers={"X-Test": "yes"})
    assert response.status == 201
    assert response.reason == "Created"
    assert response.http_version == "1.1"
    data = response.json()
    assert data["method"] == "POST"
    assert data["body"] == "abc"
    assert ["x-test", "yes"] in data["headers"]
    assert ["host", server.origin.removeprefix("http://")] in data["headers"]
    assert ["content-length", "3"] in data["headers"]
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers.get_all("x-a") == ["1", "2"]
    assert response.headers.get("missing", "d") == "d"
    assert response.text() == response.body.decode()


async def test_query_body_kinds_and_streaming_upload() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cd"

    async with serve_memory(echo) as server, Client(server.origin, connector=server.connector) as c:
        r = await c.request("GET", "/q", query={"a": "1 2", "b": ["x", "y"]})
        assert r.json()["target"] == "/q?a=1+2&b=x&b=y"
        r = await c.request("GET", "/q?z=0", query=[("a", "b")])
        assert r.json()["target"] == "/q?z=0&a=b"
        r = await c.request("GET", "/q", query="raw=1")
        assert r.json()["target"] == "/q?raw=1"
        assert (await c.request("PUT", "/", body="é")).json()["body"] == "é"
        assert (await c.request("PUT", "/", body=[b"12", b"34"])).json()["body"] == "1234"
        r = await c.request("POST", "/", body=chunks())
        assert r.json()["body"] == "abcd"
        assert ["transfer-encoding", "chunked"] in r.json()["headers"]
        r = await c.request("POST", "/", body=chunks(), headers=[(b"content-length", b"4")])
        assert r.json()["body"] == "abcd"


async def test_stream_reads_body_in_chunks_and_trailers() -> None:
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_head(200, [("transfer-encoding", "chunked")])
        await conn.send_data(b"one")
        await conn.send_data(b"two")
        await conn.send_end([("x-trailer", "t")])

    async with (
        serve_memory(script) as server,
        Pool(server.origin, connector=server.connector) as pool,
    ):
        async with pool.stream("GET", "/") as response:
            assert response.status == 200
            assert len(response.trailers) == 0
            chunks = [chunk async for chunk in response.body]
            assert b"".join(chunks) == b"onetwo"
            assert response.trailers["x-trailer"] == "t"
        async with pool.stream("GET", "/") as response:
            assert await response.read() == b"onetwo"
        assert (await pool.request("GET", "/")).trailers.get("X-Trailer") == "t"


async def test_raise_for_status() -> None:
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(int(request.target[1:]))

    async with (
        serve_memory(script) as server,
        Pool(server.origin, connector=server.connector) as pool,
    ):
        (await pool.request("GET", "/204")).raise_for_status()
        response = await pool.request("GET", "/503")
        with pytest.raises(trio_pool.ResponseStatusError) as info:
            response.raise_for_status()
        assert info.value.response is response
        assert info.value.status == 503


async def test_head_response_has_no_body() -> None:
    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, [("content-length", "10")])

    async with (
        serve_memory(script) as server,
        Client(server.origin, connector=server.connector) as c,
    ):
        assert (await c.request("HEAD", "/")).body == b""
        assert (await c.request("HEAD", "/")).headers["content-length"] == "10"
        assert server.connections == 1


class Abortable(Protocol):
    """The part of dispatch()'s controller these handlers use (API.md: ``controller.abort``)."""

    def abort(self, reason: object = None) -> None: ...


# Handler methods may be plain or async (API.md); a subclass below that swaps one kind for
# the other is an incompatible override to mypy, hence its ``type: ignore[override]``.
class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.chunks: list[bytes] = []
        self.error: BaseException | None = None

    def on_request_start(self, controller: Abortable) -> None:
        self.calls.append("start")

    async def on_response_start(
        self, controller: Abortable, status: int, headers: Headers, reason: str
    ) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append(f"head {status}")

    def on_response_data(self, controller: Abortable, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def on_response_end(self, controller: Abortable, trailers: Headers) -> None:
        self.calls.append("end")

    def on_response_error(self, controller: Abortable, error: BaseException) -> None:
        self.calls.append("error")
        self.error = error


async def test_dispatch_calls_handler_in_order() -> None:
    async with serve_memory(ok) as server, Pool(server.origin, connector=server.connector) as pool:
        handler = Recorder()
        await pool.dispatch(RequestOptions("GET", "/d"), handler)
        assert handler.calls == ["start", "head 200", "end"]
        assert b"".join(handler.chunks) == b"GET /d"


async def test_dispatch_handler_error_aborts_request() -> None:
    class Failing(Recorder):
        def on_response_data(self, controller: Abortable, chunk: bytes) -> None:
            raise KeyError("boom")

    async with serve_memory(ok) as server, Pool(server.origin, connector=server.connector) as pool:
        handler = Failing()
        await pool.dispatch(RequestOptions("GET", "/"), handler)
        assert handler.calls == ["start", "head 200", "error"]
        assert isinstance(handler.error, KeyError)
        assert (await pool.request("GET", "/")).status == 200


async def test_dispatch_controller_abort() -> None:
    class Aborting(Recorder):
        def on_response_start(  # type: ignore[override]  # plain where Recorder's is async
            self, controller: Abortable, status: int, headers: Headers, reason: str
        ) -> None:
            controller.abort(ValueError("enough"))

    async with serve_memory(ok) as server, Pool(server.origin, connector=server.connector) as pool:
        handler = Aborting()
        await pool.dispatch(RequestOptions("GET", "/"), handler)
        assert handler.calls == ["start", "error"]
        assert isinstance(handler.error, trio_pool.RequestAbortedError)
        assert isinstance(handler.error.__cause__, ValueError)
        assert pool.statistics().size == 0
        assert (await pool.request("GET", "/")).status == 200


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"path": "no-slash"}, "path"),
        ({"path": "/a b"}, "path"),
        ({"path": "/\r\n"}, "path"),
        ({"method": "GE T"}, "method"),
        ({"method": "GET\r\n"}, "method"),
        ({"headers": {"x-a": "b\r\nc"}}, "header"),
        ({"headers": {"x\na": "b"}}, "header"),
        ({"headers": {"transfer-encoding": "chunked"}}, "transfer-encoding"),
        ({"headers": {"Keep-Alive": "timeout=5"}}, "(?i)keep-alive"),
        ({"headers": {"upgrade": "websocket"}}, "upgrade"),
        ({"headers": [("only-name",)]}, "headers"),
        ({"body": 12}, "body"),
        ({"query": 12}, "query"),
    ],
)
async def test_invalid_request_arguments_write_nothing(
    kwargs: dict[str, object], word: str
) -> None:
    async with serve_memory(ok) as server, Pool(server.origin, connector=server.connector) as pool:
        args = {"method": "GET", "path": "/", **kwargs}
        method, path = args.pop("method"), args.pop("path")
        with pytest.raises(InvalidArgumentError, match=word):
            await pool.request(method, path, **args)  # type: ignore[arg-type]
        assert server.connections == 0
        assert pool.statistics().size == 0


async def test_content_length_mismatch() -> None:
    async with serve_memory(echo) as server:
        async with Pool(server.origin, connector=server.connector) as pool:
            with pytest.raises(trio_pool.RequestContentLengthMismatchError):
                await pool.request("POST", "/", body=b"abc", headers={"content-length": "4"})
            with pytest.raises(trio_pool.RequestContentLengthMismatchError):
                await pool.request("POST", "/", body=[b"abc"], headers={"content-length": "4"})
            assert server.requests == []
            assert (await pool.request("GET", "/")).status == 201
        lax = Pool(server.origin, connector=server.connector, strict_content_length=False)
        async with lax:
            response = await lax.request("POST", "/", body=b"abc", headers={"content-length": "4"})
            assert response.json()["body"] == "abc"


@pytest.mark.parametrize(
    "origin",
    [
        "ftp://x",
        "http://",
        "http://x/path",
        "http://x?q",
        "http://x#f",
        "http://u:p@x",
        12,
        "http://x:99999",
    ],
)
def test_invalid_origin(origin: object) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid origin"):
        Pool(origin)  # type: ignore[arg-type]


@pytest.mark.parametrize("connections", [-1, 1.5, True, "2"])
def test_invalid_connections(connections: object) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid connections"):
        Pool("http://x", connections=connections)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("headers_timeout", -1),
        ("body_timeout", "1"),
        ("pipelining", -1),
        ("pipelining", 1.0),
        ("max_header_size", 0),
        ("max_requests_per_client", 0),
        ("strict_content_length", 1),
        ("ssl_context", object()),
        ("no_such_option", 1),
    ],
)
def test_invalid_client_options(option: str, value: object) -> None:
    with pytest.raises(InvalidArgumentError, match=option):
        # Deliberately ill-typed options: the check under test is the runtime one.
        Client("http://x", **{option: value})  # type: ignore[arg-type]


def test_origins_are_normalised_and_options_accept_zero() -> None:
    for given in ("HTTP://Example.COM:80", "http://example.com/", "http://example.com"):
        Client(given)
    Pool("https://example.com:8443", connections=0, headers_timeout=0, body_timeout=None)


async def test_requests_need_the_async_with_block() -> None:
    pool = Pool("http://127.0.0.1:1")
    with pytest.raises(RuntimeError, match="async with"):
        await pool.request("GET", "/")


async def test_reset_closes_the_connection_after_the_request() -> None:
    async def numbered(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, body=str(conn.number).encode())

    async with (
        serve_memory(numbered) as server,
        Pool(server.origin, connector=server.connector) as pool,
    ):
        assert (await pool.request("GET", "/", reset=True)).body == b"0"
        assert server.requests[0].header("connection") == "close"
        assert (await pool.request("GET", "/")).body == b"1"
        assert (await pool.request("GET", "/")).body == b"1"


async def test_http_1_0_response_version_and_close() -> None:
    async def old(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_raw(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nhi")
        await conn.close()

    async with serve_memory(old) as server, Pool(server.origin, connector=server.connector) as pool:
        response = await pool.request("GET", "/")
        assert (response.http_version, response.body) == ("1.0", b"hi")
        assert (await pool.request("GET", "/")).status == 200
        assert server.connections == 2  # HTTP/1.0 without keep-alive: not reused


async def test_factory_error_goes_to_the_request() -> None:
    def broken_factory(origin: str, **options: object) -> Client:
        raise LookupError("no client for you")

    async with serve_memory(ok) as server:
        pool = Pool(server.origin, connector=server.connector, factory=broken_factory)
        async with pool:
            with pytest.raises(LookupError):
                await pool.request("GET", "/")
            assert pool.statistics().size == 0
        with pytest.raises(InvalidArgumentError, match="factory"):
            Pool(server.origin, factory=12)  # type: ignore[arg-type]


async def test_dispatch_aborted_in_on_request_start_sends_nothing() -> None:
    class AbortAtStart(Recorder):
        def on_request_start(self, controller: Abortable) -> None:
            self.calls.append("start")
            controller.abort("changed my mind")

    async with serve_memory(ok) as server, Pool(server.origin, connector=server.connector) as pool:
        handler = AbortAtStart()
        await pool.dispatch(RequestOptions("GET", "/"), handler)
        assert handler.calls == ["start", "error"]
        assert isinstance(handler.error, trio_pool.RequestAbortedError)
        assert server.requests == []
        assert pool.statistics().size == 0


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_an_exception_from_on_request_start_reaches_on_response_error_as_itself(
    asynchronous: bool,
) -> None:
    """Issue 12 item 2 (API.md 1.3): the handler's own exception is passed, not wrapped in a
    ``RequestAbortedError``; nothing is sent and the pool stays usable."""
    failure = LookupError("no credentials")

    class FailAtStart(Recorder):
        def on_request_start(self, controller: Abortable) -> None:
            self.calls.append("start")
            raise failure

    class FailAtStartAsync(Recorder):
        async def on_request_start(self, controller: Abortable) -> None:  # type: ignore[override]
            await trio.lowlevel.checkpoint()
            self.calls.append("start")
            raise failure

    async with serve_memory(ok) as server, Pool(server.origin, connector=server.connector) as pool:
        handler = FailAtStartAsync() if asynchronous else FailAtStart()
        await pool.dispatch(RequestOptions("GET", "/"), handler)
        assert handler.calls == ["start", "error"]
        assert handler.error is failure
        assert server.requests == []
        assert pool.statistics().size == 0
        assert (await pool.request("GET", "/")).status == 200


async def test_dispatch_cancelled_in_its_async_on_request_start_ends_with_one_response_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Found by the chaos soak: the caller cancelled while an async ``on_request_start``
    ran used to leave the handler without its ``on_response_error``."""

    class SlowStart(Recorder):
        async def on_request_start(self, controller: Abortable) -> None:  # type: ignore[override]
            self.calls.append("start")
            await trio.sleep(10)

    handler = SlowStart()
    async with serve_memory(ok) as server, Pool(server.origin, connector=server.connector) as pool:
        with trio.move_on_after(5) as scope:
            await pool.dispatch(RequestOptions("GET", "/"), handler)
        assert scope.cancelled_caught
        assert handler.calls == ["start", "error"]
        assert isinstance(handler.error, trio_pool.RequestAbortedError)
        assert server.requests == []
        stats = pool.statistics()
        assert (stats.pending, stats.queued, stats.running, stats.size) == (0, 0, 0, 0)


@pytest.mark.parametrize("async_handler", [False, True], ids=["plain", "async"])
async def test_dispatch_cancelled_by_its_caller_ends_with_one_response_error(
    async_handler: bool, autojump_clock: trio.testing.MockClock
) -> None:
    async def never_answers(request: ServerRequest, conn: ServerConnection) -> None:
        await trio.sleep_forever()

    class AsyncRecorder(Recorder):
        async def on_response_error(self, controller: Abortable, error: BaseException) -> None:  # type: ignore[override]
            super().on_response_error(controller, error)
            await trio.lowlevel.checkpoint()  # meets the caller's cancellation

    handler = AsyncRecorder() if async_handler else Recorder()
    async with serve_memory(never_answers) as server:
        async with Pool(server.origin, connector=server.connector) as pool:
            with trio.move_on_after(5) as scope:
                await pool.dispatch(RequestOptions("GET", "/"), handler)
            assert scope.cancelled_caught
            assert handler.calls == ["start", "error"]
            assert isinstance(handler.error, trio_pool.RequestAbortedError)
            stats = pool.statistics()
            assert (stats.pending, stats.queued, stats.running, stats.size) == (0, 0, 0, 0)
    async with serve_memory(ok) as server, Pool(server.origin, connector=server.connector) as pool:
        assert (await pool.request("GET", "/")).status == 200
