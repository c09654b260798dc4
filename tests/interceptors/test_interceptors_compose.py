"""``compose()`` / ``Dispatcher.compose()``: the order of interceptors, the whole Dispatcher
surface through the chain, delegation of lifetime and statistics (API.md section 6)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from _helpers import assert_idle
from _interceptor_helpers import pool_fixture, recording, server_fixture  # noqa: F401 (fixtures)

import trio_pool
from trio_pool import Headers, InvalidArgumentError, Pool, RequestOptions
from trio_pool.interceptors import Controller, DispatchFunction, Handler
from trio_pool.testing import (
    H11Server,
    MockPool,
    Script,
    ServerConnection,
    ServerRequest,
    serve_memory,
)


async def script(request: ServerRequest, conn: ServerConnection) -> None:
    if request.target == "/big":
        await conn.send_head(200, [("content-length", str(4 * 65536))])
        for _ in range(4):
            await conn.send_data(b"x" * 65536)
        await conn.send_end()
        return
    if request.target == "/stall":
        await conn.send_head(200, [("content-length", "10")])
        await conn.send_data(b"12345")
        await trio.sleep_forever()
    await conn.respond(
        200, [("x-target", request.target)], body=request.method.encode() + request.body
    )


@pytest.fixture(name="script")
def _script_fixture() -> Script:
    return script


async def test_first_interceptor_is_outermost(pool: Pool) -> None:
    log: list[str] = []
    client = trio_pool.compose(pool, recording(log, "a"), recording(log, "b"))
    response = await client.request("GET", "/x")
    assert response.body == b"GET"
    assert log == ["a GET http://testserver/x", "b GET http://testserver/x"]
    assert response.headers["x-target"] == "/x"  # the base got the path back


async def test_method_form_is_the_same(pool: Pool) -> None:
    log: list[str] = []
    client = pool.compose(recording(log, "a"))
    assert isinstance(client, trio_pool.Dispatcher)
    await client.request("GET", "/")
    assert log == ["a GET http://testserver/"]


async def test_request_stream_pipeline_and_dispatch_go_through_the_chain(pool: Pool) -> None:
    log: list[str] = []
    client = trio_pool.compose(pool, recording(log, "i"))
    assert (await client.request("POST", "/r", body=b"1", query={"q": "v"})).body == b"POST1"
    async with client.stream("PUT", "/s", body=b"2") as streamed:
        assert streamed.status == 200
        assert await streamed.read() == b"PUT2"
    async with client.pipeline("POST", "/p", body=[b"3", b"4"]) as piped:
        assert await piped.read() == b"POST34"

    class Keep:
        def __init__(self) -> None:
            self.events: list[object] = []

        def on_request_start(self, controller: Controller) -> None:
            self.events.append("start")

        def on_response_start(
            self, controller: Controller, status: int, headers: Headers, reason: str
        ) -> None:
            self.events.append(status)

        async def on_response_data(self, controller: Controller, chunk: bytes) -> None:
            self.events.append(chunk)

        def on_response_end(self, controller: Controller, trailers: Headers) -> None:
            self.events.append("end")

        def on_response_error(self, controller: Controller, error: BaseException) -> None:
            self.events.append(error)

    keep = Keep()
    await client.dispatch(RequestOptions("GET", "/d"), keep)
    assert keep.events == ["start", 200, b"GET", "end"]
    assert log == [
        "i POST http://testserver/r",
        "i PUT http://testserver/s",
        "i POST http://testserver/p",
        "i GET http://testserver/d",
    ]
    assert_idle(client)


async def test_lifetime_statistics_and_events_are_the_bases(server: H11Server) -> None:
    async with Pool(server.origin, connector=server.connector) as pool:
        client = pool.compose()
        seen: list[str] = []

        def on_connect(origin: str, targets: object) -> None:
            seen.append(origin)

        client.on("connect", on_connect)
        await client.request("GET", "/")
        assert seen == ["http://testserver"]
        assert client.statistics() == pool.statistics()
        assert client.statistics().connected == 1
        client.off("connect", on_connect)
        assert (client.closed, client.destroyed) == (False, False)
        await client.close()
        assert (client.closed, pool.closed) == (True, True)
        with pytest.raises(trio_pool.ClientClosedError):
            await client.request("GET", "/")
    async with Pool(server.origin, connector=server.connector) as pool:
        client = pool.compose()
        await client.destroy()
        assert pool.destroyed
        assert client.destroyed


async def test_stream_left_early_frees_the_connection(
    autojump_clock: trio.testing.MockClock, pool: Pool
) -> None:
    client = pool.compose()
    async with client.stream("GET", "/big") as response:
        first = await response.body.__anext__()
        assert len(first) <= 65536
    assert_idle(client)
    async with client.stream("GET", "/stall") as response:
        assert response.status == 200
    assert_idle(client)
    assert (await client.request("GET", "/")).status == 200


async def test_stream_body_is_read_as_the_caller_reads(pool: Pool) -> None:
    client = pool.compose()
    async with client.stream("GET", "/big") as response:
        chunks = [chunk async for chunk in response.body]
    assert sum(map(len, chunks)) == 4 * 65536
    assert_idle(client)


async def test_bad_arguments_are_refused_before_anything_is_sent(
    server: H11Server, pool: Pool
) -> None:
    client = pool.compose()
    with pytest.raises(InvalidArgumentError, match="path"):
        await client.request("GET", "no-slash")
    with pytest.raises(InvalidArgumentError, match="testserver only"):
        await client.request("GET", "http://elsewhere/x")
    with pytest.raises(InvalidArgumentError):
        async with client.stream("GET", "/", headers={"bad name": "x"}):
            pass  # pragma: no cover
    with pytest.raises(InvalidArgumentError, match="options"):
        await client.dispatch("GET /", object())  # type: ignore[arg-type]
    assert not server.requests
    assert_idle(client)


def test_invalid_interceptors_and_dispatchers() -> None:
    pool = Pool("http://example.test")
    with pytest.raises(InvalidArgumentError, match="interceptor"):
        pool.compose("retry")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="interceptor"):
        pool.compose(lambda dispatch: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidArgumentError, match="dispatcher"):
        trio_pool.compose(object())  # type: ignore[arg-type]


async def test_an_interceptor_adding_a_header() -> None:
    """The recipe of the how-to: a typed interceptor that adds a header to every request."""

    def with_header(name: str, value: str) -> trio_pool.interceptors.Interceptor:
        def interceptor(dispatch: DispatchFunction) -> DispatchFunction:
            async def add(options: RequestOptions, handler: Handler) -> None:
                headers = [*dict(options.headers or {}).items(), (name, value)]
                await dispatch(
                    trio_pool.RequestOptions(options.method, options.path, headers=headers), handler
                )

            return add

        return interceptor

    async with MockPool() as mock:
        mock.intercept("GET", "/", headers={"x-api-key": "k"}).reply(200, b"ok")
        client = trio_pool.compose(mock, with_header("x-api-key", "k"))
        assert (await client.request("GET", "/")).body == b"ok"


async def test_composing_a_composed_dispatcher(pool: Pool) -> None:
    log: list[str] = []
    inner = trio_pool.compose(pool, recording(log, "inner"))
    outer = trio_pool.compose(inner, recording(log, "outer"))
    await outer.request("GET", "/")
    assert log == ["outer GET http://testserver/", "inner GET http://testserver/"]
    assert "composed" in repr(outer)


async def test_an_error_reaches_the_caller_as_itself(
    autojump_clock: trio.testing.MockClock, server: H11Server
) -> None:
    server.refuse = True
    async with Pool(server.origin, connector=server.connector) as pool:
        client = pool.compose()
        with pytest.raises(trio_pool.ConnectError):
            await client.request("GET", "/")
        with pytest.raises(trio_pool.ConnectError):
            async with client.stream("GET", "/"):
                pass  # pragma: no cover
        assert_idle(client)


async def test_upgrade_and_connect_are_the_bases() -> None:
    async def switching(request: ServerRequest, conn: ServerConnection) -> None:
        if request.method == "CONNECT":
            await conn.switch_protocols(200, [("x-tunnel", request.target)])
        else:
            await conn.switch_protocols(101, [("upgrade", "echo"), ("connection", "upgrade")])
        while data := await conn.stream.receive_some():
            await conn.send_raw(bytes(data).upper())

    log: list[str] = []
    async with (
        serve_memory(switching) as server,
        Pool(server.origin, connector=server.connector) as pool,
    ):
        client = trio_pool.compose(pool, recording(log, "never"))
        async with client.upgrade("/ws", protocol="echo") as up:
            assert up.status == 101
            await up.stream.send_all(b"abc")
            assert await up.stream.receive_some() == b"ABC"
        async with client.connect("example.com:443") as tunnel:
            assert tunnel.headers["x-tunnel"] == "example.com:443"
        assert log == []  # interceptors see requests, not handed-over connections
        assert_idle(client)


async def test_the_controller_says_which_origin_runs_the_request(pool: Pool) -> None:
    # The built-in interceptors' relay passes on the origin the controller below knows.
    client = trio_pool.compose(
        pool, trio_pool.interceptors.redirect(), trio_pool.interceptors.retry()
    )

    class Origin:
        def __init__(self) -> None:
            self.seen: list[str | None] = []

        def on_request_start(self, controller: Controller) -> None:
            pass

        def on_response_start(
            self, controller: Controller, status: int, headers: Headers, reason: str
        ) -> None:
            self.seen.append(controller.origin)

        def on_response_data(self, controller: Controller, chunk: bytes) -> None:
            pass

        def on_response_end(self, controller: Controller, trailers: Headers) -> None:
            self.seen.append(controller.origin)

        def on_response_error(self, controller: Controller, error: BaseException) -> None:
            raise AssertionError(error)

    handler = Origin()
    await client.dispatch(RequestOptions("GET", "/d"), handler)
    assert handler.seen == ["http://testserver", "http://testserver"]
    assert_idle(client)
