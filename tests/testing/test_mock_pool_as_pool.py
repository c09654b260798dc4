"""``trio_pool.testing.MockPool`` as the ``Pool`` it is: statistics, events, keep-alive,
pipelining, duplex, upgrades and tunnels, errors through the connection, cancellation."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import trio
import trio.lowlevel
import trio.testing
from _helpers import assert_idle

import trio_pool
from trio_pool import ClientClosedError, InvalidArgumentError, SocketError
from trio_pool.testing import MockCall, MockNotMatchedError, MockPool


async def shout(call: MockCall, stream: trio.abc.Stream) -> None:
    """The server's side of a switched connection: answer each message in capitals."""
    while data := await stream.receive_some():
        await stream.send_all(call.method.encode() + b" " + data.upper())


async def test_upgrade_is_served_by_a_switch_route() -> None:
    async with MockPool() as mock:
        mock.intercept("GET", "/ws", headers={"upgrade": "chat"}).switch(
            shout, headers={"upgrade": "chat"}
        )
        async with mock.upgrade("/ws", protocol="chat") as upgraded:
            assert (upgraded.status, upgraded.headers["upgrade"]) == (101, "chat")
            await upgraded.stream.send_all(b"hi")
            assert await upgraded.stream.receive_some() == b"GET HI"
            # A handed-over connection is the caller's: the pool no longer counts it.
            assert mock.statistics().connected == 0
        assert_idle(mock)
        [call] = mock.calls
        assert call.headers["connection"] == "upgrade"


async def test_connect_is_served_by_a_switch_route() -> None:
    async with MockPool() as mock:
        mock.intercept("CONNECT", lambda target: True).switch(shout)
        async with mock.connect("db.internal:5432") as tunnel:
            assert tunnel.status == 200
            await tunnel.stream.send_all(b"select")
            assert await tunnel.stream.receive_some() == b"CONNECT SELECT"
        assert mock.calls[0].target == "db.internal:5432"


async def test_upgrade_validates_and_a_plain_reply_is_a_bad_upgrade() -> None:
    async with MockPool() as mock:
        with pytest.raises(InvalidArgumentError, match="invalid path"):
            async with mock.upgrade("ws"):
                pass  # pragma: no cover
        assert mock.calls == []
        mock.intercept("GET", "/ws").reply(200)
        with pytest.raises(SocketError, match="bad upgrade"):
            async with mock.upgrade("/ws"):
                pass  # pragma: no cover
        await mock.close()
        with pytest.raises(ClientClosedError):
            async with mock.connect("example.com:443"):
                pass  # pragma: no cover


async def test_an_error_of_the_switched_server_reaches_the_reader() -> None:
    async def broken(call: MockCall, stream: trio.abc.Stream) -> None:
        raise LookupError("the tunnel broke")

    async with MockPool() as mock:
        mock.intercept("CONNECT", re.compile(".*")).switch(broken)
        async with mock.connect("example.com:443") as tunnel:
            with pytest.raises(LookupError, match="the tunnel broke"):
                await tunnel.stream.receive_some()


def test_switch_needs_a_callable() -> None:
    with pytest.raises(InvalidArgumentError, match="invalid serve"):
        MockPool().intercept("GET", "/").switch(b"x")  # type: ignore[arg-type]


async def test_events_are_a_pools() -> None:
    heard: list[object] = []
    ignored: list[object] = []

    def hear(origin: str, targets: object) -> None:
        heard.append(origin)

    def ignore(origin: str, targets: object) -> None:
        ignored.append(origin)

    async with MockPool() as mock:
        mock.intercept("GET", "/").reply(200, b"ok").persist()
        mock.on("connect", hear)
        mock.on("connect", ignore)
        mock.off("connect", ignore)
        with pytest.raises(InvalidArgumentError, match="invalid event"):
            mock.on("connected", hear)
        await mock.request("GET", "/")
    assert heard == ["http://mock.test"]
    assert ignored == []


# ---------------------------------------------------------------------------------- as a Pool


async def test_statistics_are_a_pools(autojump_clock: trio.testing.MockClock) -> None:
    async with MockPool(connections=1) as mock:
        mock.intercept("GET", "/slow").reply(200).delay(5).persist()
        assert mock.statistics() == trio_pool.PoolStats(0, 0, 0, 0, 0, 0)
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(mock.request, "GET", "/slow")
            await trio.testing.wait_all_tasks_blocked()
            stats = mock.statistics()
            assert (stats.connected, stats.running, stats.queued, stats.free) == (1, 1, 1, 0)
        assert trio.current_time() == pytest.approx(10)  # one connection: one after the other
        assert_idle(mock, all_free=True)
        assert (mock.statistics().connected, mock.statistics().free) == (1, 1)
        # The connection was kept alive: both requests came on it.
        assert len(mock.calls) == 2


async def test_a_declared_socket_error_is_not_re_sent() -> None:
    async with MockPool() as mock:
        mock.intercept("GET", "/").reply(200)  # opens a connection that is then kept alive
        mock.intercept("GET", "/").reply_with_error(SocketError("reset (scripted)")).times(2)
        await mock.request("GET", "/")
        with pytest.raises(SocketError, match="scripted"):
            await mock.request("GET", "/")
        assert len(mock.calls) == 2  # the pool did not retry it on a fresh connection
        assert mock.pending_interceptors()[0].calls == mock.calls[1:]


async def test_pipeline_is_duplex(autojump_clock: trio.testing.MockClock) -> None:
    """The body is written by the pool's helper task while the caller waits for the head,
    and the route answers once the body has arrived whole."""
    sent: list[float] = []

    async def body() -> AsyncIterator[bytes]:
        for part in (b"a", b"b", b"c"):
            await trio.sleep(1)
            sent.append(trio.current_time())
            yield part

    async with MockPool() as mock:
        mock.intercept("PUT", "/up", body=b"abc").reply(200, b"stored")
        async with mock.pipeline("PUT", "/up", body=body()) as response:
            assert trio.current_time() == pytest.approx(3)
            assert await response.read() == b"stored"
        assert sent == pytest.approx([1, 2, 3])
        assert_idle(mock)


def test_a_connector_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="'connector'"):
        MockPool(connector=lambda origin: None)


async def test_after_its_block_the_connector_refuses() -> None:
    mock = MockPool()
    async with mock:
        pass
    with pytest.raises(ClientClosedError):
        await mock.request("GET", "/")


async def test_a_failed_request_does_not_spoil_the_response_pipelined_before_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with MockPool(connections=1, pipelining=2) as mock:
        mock.intercept("GET", "/first").reply(200, b"first").delay(1)
        results: dict[str, object] = {}

        async def get(path: str) -> None:
            try:
                results[path] = (await mock.request("GET", path)).body
            except MockNotMatchedError as exc:
                results[path] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(get, "/first")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(get, "/second")
            await trio.testing.wait_all_tasks_blocked()
            stats = mock.statistics()
            assert (stats.connected, stats.running) == (1, 2)  # pipelined on one connection
        assert results["/first"] == b"first"
        assert isinstance(results["/second"], MockNotMatchedError)
        assert [call.path for call in mock.calls] == ["/first", "/second"]
        await trio.testing.wait_all_tasks_blocked()  # the connection's task ends
        assert mock.statistics().connected == 0  # the failed request closed its connection
        assert_idle(mock)
        mock.intercept("GET", "/again").reply(200, b"again")
        assert (await mock.request("GET", "/again")).body == b"again"


async def test_a_reply_h11_refuses_to_send_is_an_invalid_argument() -> None:
    async with MockPool() as mock:
        mock.intercept("GET", "/").reply(200, headers={"x-bad": "a\nb"})
        with pytest.raises(InvalidArgumentError, match="invalid reply to /"):
            await mock.request("GET", "/")
        assert_idle(mock)


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
async def test_no_body_is_sent_where_http_has_none(method: str, status: int) -> None:
    async with MockPool() as mock:
        mock.intercept(method, "/").reply(status, b"ignored").times(2)
        for _ in range(2):  # the connection stays usable
            response = await mock.request(method, "/")
            assert (response.status, response.body) == (status, b"")
        assert mock.statistics().connected == 1


async def test_repr_shows_the_origin_and_the_counters() -> None:
    async with MockPool() as mock:
        mock.intercept("GET", "/").reply(200, b"ok").persist()
        assert repr(mock).startswith("<MockPool http://mock.test PoolStats(")


@pytest.mark.parametrize("steps", range(22))  # 0-9 before the call arrives, 14-20 in the body
async def test_cancelled_at_any_step_the_mock_is_idle_and_serves_the_next(steps: int) -> None:
    """The caller is cancelled after ``steps`` schedule points of its request: connecting,
    writing, the route's matching, reading the head, reading the body."""
    async with MockPool() as mock:
        mock.intercept("POST", "/").reply(200, [b"a", b"b"], trailers={"t": "1"}).persist()
        with trio.CancelScope() as scope:

            async def cancel_later() -> None:
                for _ in range(steps):
                    await trio.lowlevel.checkpoint()
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_later)
                async with mock.stream("POST", "/", body=[b"x", b"y"]) as response:
                    await response.read()
        await trio.testing.wait_all_tasks_blocked()
        assert_idle(mock, all_free=True)
        again = await mock.request("POST", "/", body=b"again")
        assert (again.body, mock.calls[-1].body) == (b"ab", b"again")
