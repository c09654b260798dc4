"""``"request_end"(RequestTrace)``: one trace per request that ends, on every dispatcher, with
its phases measured on Trio's clock (virtual here: ``autojump_clock``), so exact.

The scripted server makes each phase a known number of seconds: connecting takes
:data:`CONNECT` (the connector sleeps), writing a request head :data:`SEND` (the client's
stream sleeps in ``send_all``), the server answers the head after :data:`WAIT` and ends the
body :data:`RECEIVE` later.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import trio
from _helpers import assert_idle

import trio_pool
from trio_pool import (
    Agent,
    BalancedPool,
    Client,
    Dispatcher,
    Pool,
    RequestAbortedError,
    RequestOptions,
    RequestTrace,
)
from trio_pool.testing import H11Server, MockPool, ServerConnection, ServerRequest, serve_memory

CONNECT, SEND, WAIT, RECEIVE = 1.0, 2.0, 3.0, 4.0
BODY = b"hello"


class SlowSend(trio.abc.Stream):
    """The client's end of a connection: writing a request head takes :data:`SEND`."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if bytes(data[:4]) in (b"GET ", b"POST", b"CONN"):
            await trio.sleep(SEND)
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


async def phased(request: ServerRequest, conn: ServerConnection) -> None:
    """The server: the head after WAIT seconds, the end of the body RECEIVE seconds later."""
    await trio.sleep(WAIT)
    await conn.send_head(200, [("content-length", str(len(BODY)))])
    await trio.sleep(RECEIVE)
    await conn.send_data(BODY)
    await conn.send_end()


def slow_connector(server: H11Server) -> Callable[[object], Any]:
    async def connect(origin: object) -> trio.abc.Stream:
        await trio.sleep(CONNECT)
        return SlowSend(await server.connector(origin))

    return connect


@asynccontextmanager
async def phased_server(script: Any = phased) -> AsyncIterator[H11Server]:
    async with serve_memory(script) as server:
        yield server


class Collect:
    """A handler for ``dispatch()`` that keeps the status and the body."""

    def __init__(self) -> None:
        self.status = 0
        self.body = b""
        self.error: BaseException | None = None

    def on_request_start(self, controller: object) -> None:
        pass

    def on_response_start(
        self, controller: object, status: int, headers: object, reason: str
    ) -> None:
        self.status = status

    def on_response_data(self, controller: object, chunk: bytes) -> None:
        self.body += chunk

    def on_response_end(self, controller: object, trailers: object) -> None:
        pass

    def on_response_error(self, controller: object, error: BaseException) -> None:
        self.error = error


METHODS = ["request", "stream", "pipeline", "dispatch"]


async def send(dispatcher: Dispatcher, how: str, url: str) -> bytes:
    """One GET of ``url`` through ``dispatcher``'s method ``how``; the body."""
    if how == "request":
        return (await dispatcher.request("GET", url)).body
    if how in ("stream", "pipeline"):
        opener = dispatcher.stream if how == "stream" else dispatcher.pipeline
        async with opener("GET", url) as response:
            return await response.read()
    handler = Collect()
    await dispatcher.dispatch(RequestOptions("GET", url), handler)
    assert handler.error is None
    return handler.body


KINDS = ["client", "pool", "balanced", "agent", "composed"]


@asynccontextmanager
async def dispatcher_of(kind: str, server: H11Server, **options: Any) -> AsyncIterator[Any]:
    """A dispatcher of ``kind`` to ``server`` (slow connect and send) and the URL prefix its
    requests take."""
    connector = slow_connector(server)
    made: AbstractAsyncContextManager[Any]
    if kind == "client":
        made = Client(server.origin, connector=connector, **options)
    elif kind in ("pool", "composed"):
        made = Pool(server.origin, connector=connector, **options)
    elif kind == "balanced":
        made = BalancedPool([server.origin], connector=connector, **options)
    else:
        made = Agent(connector=connector, **options)
    async with made as dispatcher:
        prefix = server.origin if kind == "agent" else ""
        if kind == "composed":
            yield dispatcher.compose(), prefix
        else:
            yield dispatcher, prefix


def expected(**phases: float | None) -> dict[str, float | None]:
    return {
        "queued": 0.0,
        "connect": None,
        "send": SEND,
        "wait": WAIT,
        "receive": RECEIVE,
        **phases,
    }


def phases_of(trace: RequestTrace) -> dict[str, float | None]:
    return {name: getattr(trace, name) for name in ("queued", "connect", "send", "wait", "receive")}


def assert_consecutive(trace: RequestTrace) -> None:
    assert sum(value or 0.0 for value in phases_of(trace).values()) == trace.total


@pytest.mark.parametrize("how", METHODS)
@pytest.mark.parametrize("kind", KINDS)
async def test_exact_phases_new_then_reused_connection(
    kind: str, how: str, autojump_clock: trio.abc.Clock
) -> None:
    async with phased_server() as server, dispatcher_of(kind, server) as (dispatcher, prefix):
        traces: list[RequestTrace] = []
        dispatcher.on("request_end", traces.append)
        assert await send(dispatcher, how, prefix + "/a?x=1") == BODY
        assert await send(dispatcher, how, prefix + "/b") == BODY
        assert_idle(dispatcher)
    first, second = traces
    assert (first.method, first.url, first.status, first.error) == (
        "GET",
        f"{server.origin}/a?x=1",
        200,
        None,
    )
    assert (first.reused_connection, first.attempt) == (False, 1)
    assert phases_of(first) == expected(connect=CONNECT)
    assert first.total == CONNECT + SEND + WAIT + RECEIVE
    assert (second.url, second.reused_connection, second.status) == (
        f"{server.origin}/b",
        True,
        200,
    )
    assert phases_of(second) == expected()
    assert second.total == SEND + WAIT + RECEIVE


async def test_queued_is_the_wait_for_a_busy_connection(autojump_clock: trio.abc.Clock) -> None:
    async with (
        phased_server() as server,
        dispatcher_of("pool", server, connections=1) as (
            pool,
            _,
        ),
    ):
        traces: list[RequestTrace] = []
        pool.on("request_end", traces.append)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.request, "GET", "/first")
            await trio.sleep(0.5)
            nursery.start_soon(pool.request, "GET", "/second")
    first, second = traces
    assert first.url.endswith("/first")
    one = CONNECT + SEND + WAIT + RECEIVE
    assert phases_of(second) == expected(queued=one - 0.5)
    assert second.reused_connection
    assert second.total == one - 0.5 + SEND + WAIT + RECEIVE


async def test_concurrent_requests_each_wait_for_their_own_connect(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The second request arrives while the connection opened for the first one connects;
    # with no connection limit, it gets its own.
    async with (
        phased_server() as server,
        dispatcher_of("pool", server, pipelining=1) as (
            pool,
            _,
        ),
    ):
        traces: list[RequestTrace] = []
        pool.on("request_end", traces.append)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.request, "GET", "/first")
            await trio.sleep(0.25)
            nursery.start_soon(pool.request, "GET", "/second")
    by_url = {trace.url.rsplit("/", 1)[1]: trace for trace in traces}
    assert phases_of(by_url["first"]) == expected(connect=CONNECT)
    assert phases_of(by_url["second"]) == expected(connect=CONNECT)
    for trace in traces:
        assert_consecutive(trace)
        assert not trace.reused_connection


@pytest.mark.parametrize("how", METHODS)
async def test_mock_pool_emits_once_per_request(how: str) -> None:
    async with MockPool() as mock:
        mock.intercept(path="/x", method="GET").reply(201, b"made").persist()
        traces: list[RequestTrace] = []
        mock.on("request_end", traces.append)
        assert await send(mock, how, "/x") == b"made"
        assert await send(mock, how, "/x") == b"made"
        composed = mock.compose()
        assert await send(composed, how, "/x") == b"made"
    assert [(trace.status, trace.error, trace.url) for trace in traces] == [
        (201, None, "http://mock.test/x")
    ] * 3
    assert [trace.reused_connection for trace in traces] == [False, True, True]


@pytest.mark.parametrize("how", METHODS)
@pytest.mark.parametrize("kind", ["balanced", "agent"])
async def test_outer_and_inner_dispatchers_each_hear_a_request_once(
    kind: str, how: str, autojump_clock: trio.abc.Clock
) -> None:
    async with phased_server() as server, dispatcher_of(kind, server) as (dispatcher, prefix):
        outer: list[RequestTrace] = []
        inner: list[RequestTrace] = []
        dispatcher.on("request_end", outer.append)
        await send(dispatcher, how, prefix + "/one")
        pool = (
            dispatcher.get_upstream(server.origin)
            if kind == "balanced"
            else dispatcher.get_pool(server.origin)
        )
        assert isinstance(pool, Pool)
        pool.on("request_end", inner.append)
        await send(dispatcher, how, prefix + "/two")
        dispatcher.off("request_end", outer.append)
        await send(dispatcher, how, prefix + "/three")
    assert [trace.url.rsplit("/", 1)[1] for trace in outer] == ["one", "two"]
    assert [trace.url.rsplit("/", 1)[1] for trace in inner] == ["two", "three"]
    assert outer[1] is inner[0]


async def test_a_listener_added_later_to_an_agent_hears_its_existing_pools(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with phased_server() as server, dispatcher_of("agent", server) as (agent, prefix):
        await agent.request("GET", prefix + "/before")
        traces: list[RequestTrace] = []
        agent.on("request_end", traces.append)
        await agent.request("GET", prefix + "/after")
    assert [trace.url for trace in traces] == [prefix + "/after"]


async def test_no_listener_no_trace(autojump_clock: trio.abc.Clock) -> None:
    calls: list[RequestTrace] = []
    async with phased_server() as server:
        for kind in KINDS:
            async with dispatcher_of(kind, server) as (dispatcher, prefix):
                dispatcher.on("request_end", calls.append)
                dispatcher.off("request_end", calls.append)
                for how in METHODS:
                    await send(dispatcher, how, prefix + "/")
    assert calls == []


async def test_a_failing_listener_is_logged_and_the_request_goes_on(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(trace: RequestTrace) -> None:
        raise RuntimeError("listener bug")

    async with phased_server() as server, dispatcher_of("pool", server) as (pool, _):
        pool.on("request_end", broken)
        assert (await pool.request("GET", "/")).body == BODY
        assert_idle(pool)
    assert "listener for 'request_end' raised" in caplog.text


# ---------------------------------------------------------------------- errors


async def test_connect_refused(autojump_clock: trio.abc.Clock) -> None:
    async def refused(origin: object) -> trio.abc.Stream:
        await trio.sleep(CONNECT)
        raise OSError(errno.ECONNREFUSED, "refused")

    async with Pool("http://localhost:1", connector=refused) as pool:
        traces: list[RequestTrace] = []
        pool.on("request_end", traces.append)
        with pytest.raises(trio_pool.ConnectError):
            await pool.request("GET", "/")
        assert_idle(pool)
    (trace,) = traces
    assert isinstance(trace.error, trio_pool.ConnectError)
    assert (trace.status, trace.reused_connection) == (None, False)
    assert phases_of(trace) == {
        "queued": 0.0,
        "connect": CONNECT,
        "send": None,
        "wait": None,
        "receive": None,
    }
    assert trace.total == CONNECT


async def test_connect_refused_for_the_head_of_the_queue(autojump_clock: trio.abc.Clock) -> None:
    # One connection at a time: the second request waits in the queue while the first one's
    # connect fails, then the connection opened for the queue fails it in turn.
    async with (
        phased_server() as server,
        dispatcher_of("pool", server, connections=1) as (
            pool,
            _,
        ),
    ):
        server.refuse = True
        traces: list[RequestTrace] = []
        pool.on("request_end", traces.append)

        async def fails(path: str) -> None:
            with pytest.raises(trio_pool.ConnectError):
                await pool.request("GET", path)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fails, "/first")
            await trio.sleep(0.5)
            nursery.start_soon(fails, "/second")
        assert_idle(pool)
        assert pool.statistics().connect_errors_total == 2
    first, second = traces
    assert (first.url, first.connect, first.total) == (f"{server.origin}/first", CONNECT, CONNECT)
    assert second.url.endswith("/second")
    assert (second.queued, second.connect, second.send) == (CONNECT - 0.5, CONNECT, None)
    assert second.total == 2 * CONNECT - 0.5


async def test_headers_timeout(autojump_clock: trio.abc.Clock) -> None:
    async def silent(request: ServerRequest, conn: ServerConnection) -> None:
        await trio.sleep_forever()

    async with (
        phased_server(silent) as server,
        dispatcher_of("pool", server, headers_timeout=5) as (pool, _),
    ):
        traces: list[RequestTrace] = []
        pool.on("request_end", traces.append)
        with pytest.raises(trio_pool.HeadersTimeoutError):
            await pool.request("GET", "/")
        assert_idle(pool)
    (trace,) = traces
    assert isinstance(trace.error, trio_pool.HeadersTimeoutError)
    assert trace.status is None
    assert phases_of(trace) == expected(connect=CONNECT, wait=5.0, receive=None)
    assert_consecutive(trace)


async def test_parser_error(autojump_clock: trio.abc.Clock) -> None:
    async def garbage(request: ServerRequest, conn: ServerConnection) -> None:
        await trio.sleep(WAIT)
        await conn.send_raw(b"SPAM / EGGS\r\n\r\n")

    async with phased_server(garbage) as server, dispatcher_of("pool", server) as (pool, _):
        traces: list[RequestTrace] = []
        pool.on("request_end", traces.append)
        with pytest.raises(trio_pool.HTTPParserError):
            await pool.request("GET", "/")
        assert_idle(pool)
    (trace,) = traces
    assert isinstance(trace.error, trio_pool.HTTPParserError)
    assert trace.status is None
    assert phases_of(trace) == expected(connect=CONNECT, receive=None)


async def test_body_timeout_keeps_the_status(autojump_clock: trio.abc.Clock) -> None:
    async def stalls(request: ServerRequest, conn: ServerConnection) -> None:
        await trio.sleep(WAIT)
        await conn.send_head(200, [("content-length", "10")])
        await trio.sleep_forever()

    async with (
        phased_server(stalls) as server,
        dispatcher_of("pool", server, body_timeout=7) as (pool, _),
    ):
        traces: list[RequestTrace] = []
        pool.on("request_end", traces.append)
        with pytest.raises(trio_pool.BodyTimeoutError):
            await pool.request("GET", "/")
    (trace,) = traces
    assert isinstance(trace.error, trio_pool.BodyTimeoutError)
    assert trace.status == 200
    assert phases_of(trace) == expected(connect=CONNECT, receive=7.0)


# ---------------------------------------------------------------------- cancellation


@pytest.mark.parametrize(
    ("after", "phases"),
    [
        (0.5, {"connect": 0.5, "send": None, "wait": None, "receive": None}),
        (CONNECT + 0.5, {"connect": CONNECT, "send": 0.5, "wait": None, "receive": None}),
        (CONNECT + SEND + 1, {"connect": CONNECT, "wait": 1.0, "receive": None}),
        (CONNECT + SEND + WAIT + 1, {"connect": CONNECT, "receive": 1.0}),
    ],
    ids=["connect", "send", "wait", "receive"],
)
async def test_cancelled_in_each_phase(
    after: float, phases: dict[str, float | None], autojump_clock: trio.abc.Clock
) -> None:
    async with phased_server() as server, dispatcher_of("pool", server) as (pool, _):
        traces: list[RequestTrace] = []
        pool.on("request_end", traces.append)
        with trio.move_on_after(after):
            await pool.request("GET", "/")
        assert_idle(pool)
        assert (await pool.request("GET", "/next")).body == BODY
        stats = pool.statistics()
    cancelled, following = traces
    assert isinstance(cancelled.error, RequestAbortedError)
    assert cancelled.total == after
    assert phases_of(cancelled) == expected(**phases)
    assert cancelled.status == (200 if phases.get("receive") else None)
    assert following.error is None
    assert (stats.requests_total, stats.errors_total) == (2, 1)


async def test_cancelled_while_queued(autojump_clock: trio.abc.Clock) -> None:
    async with (
        phased_server() as server,
        dispatcher_of("pool", server, connections=1) as (
            pool,
            _,
        ),
    ):
        traces: list[RequestTrace] = []
        pool.on("request_end", traces.append)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.request, "GET", "/first")
            await trio.sleep(0.5)
            with trio.move_on_after(5):
                await pool.request("GET", "/queued")
        assert_idle(pool)
        assert (await pool.request("GET", "/next")).body == BODY
    queued = next(trace for trace in traces if trace.url.endswith("/queued"))
    assert isinstance(queued.error, RequestAbortedError)
    assert phases_of(queued) == {
        "queued": 5.0,
        "connect": None,
        "send": None,
        "wait": None,
        "receive": None,
    }
    assert queued.total == 5.0
    assert len(traces) == 3


async def test_a_stream_left_before_its_end(autojump_clock: trio.abc.Clock) -> None:
    async with phased_server() as server, dispatcher_of("pool", server) as (pool, _):
        traces: list[RequestTrace] = []
        pool.on("request_end", traces.append)
        async with pool.stream("GET", "/") as response:
            assert response.status == 200
            await trio.sleep(1)
        assert_idle(pool)
        assert (await pool.request("GET", "/next")).body == BODY
    left = traces[0]
    assert isinstance(left.error, RequestAbortedError)
    assert (left.status, left.receive) == (200, 1.0)


# ---------------------------------------------------------------------- retry


async def test_retry_numbers_its_attempts(autojump_clock: trio.abc.Clock) -> None:
    statuses = iter([503, 503, 200])

    async def flaky(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(next(statuses), body=b"x")

    async with (
        serve_memory(flaky) as server,
        Pool(server.origin, connector=server.connector) as pool,
    ):
        traces: list[RequestTrace] = []
        pool.on("request_end", traces.append)
        retrying = pool.compose(trio_pool.interceptors.retry(min_timeout=1, max_timeout=1))
        response = await retrying.request("GET", "/")
        assert response.status == 200
    assert [(trace.attempt, trace.status) for trace in traces] == [(1, 503), (2, 503), (3, 200)]


async def test_attempt_is_checked() -> None:
    async with MockPool() as mock:
        with pytest.raises(trio_pool.InvalidArgumentError, match="attempt"):
            await mock.dispatch(RequestOptions("GET", "/", attempt=0), Collect())


# ---------------------------------------------------------------------- upgrade, connect


async def switching(request: ServerRequest, conn: ServerConnection) -> None:
    """Tunnels a CONNECT, upgrades to "echo", refuses other upgrades (426)."""
    await trio.sleep(WAIT)
    if request.method == "CONNECT":
        await conn.switch_protocols(200)
    elif request.header("upgrade") == "echo":
        await conn.switch_protocols(101, [("upgrade", "echo"), ("connection", "upgrade")])
    else:
        await conn.respond(426, body=b"no")
        return
    await trio.sleep_forever()


@pytest.mark.parametrize("kind", KINDS)
async def test_upgrade_and_connect_end_when_the_connection_is_handed_over(
    kind: str, autojump_clock: trio.abc.Clock
) -> None:
    async with phased_server(switching) as server, dispatcher_of(kind, server) as (d, prefix):
        traces: list[RequestTrace] = []
        d.on("request_end", traces.append)
        async with d.upgrade(prefix + "/ws", protocol="echo") as upgraded:
            assert upgraded.status == 101
            assert len(traces) == 1  # ended as the connection was handed over
        with pytest.raises(trio_pool.SocketError, match="bad upgrade"):
            async with d.upgrade(prefix + "/ws", protocol="other"):
                pytest.fail("entered a refused upgrade")  # pragma: no cover
        authority = prefix + "/example.com:443" if kind == "agent" else "example.com:443"
        async with d.connect(authority) as tunnel:
            assert tunnel.status == 200
        assert_idle(d)
    upgrade, refused, tunnel_trace = traces
    assert (upgrade.status, upgrade.error, upgrade.url) == (101, None, f"{server.origin}/ws")
    assert phases_of(upgrade) == expected(connect=CONNECT, receive=0.0)
    assert (refused.status, refused.error) == (426, None)  # the response itself was fine
    assert phases_of(refused) == expected(connect=CONNECT, receive=0.0)  # 101 took the first
    assert (tunnel_trace.method, tunnel_trace.status, tunnel_trace.url) == (
        "CONNECT",
        200,
        "example.com:443",
    )
    assert tunnel_trace.reused_connection  # the refused upgrade's
    assert phases_of(tunnel_trace) == expected(receive=0.0)
