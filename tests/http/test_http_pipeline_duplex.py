"""``pipeline()`` is full duplex: the response is read while the request body is still being
written (undici's ``pipeline``). Each test has the body wait for something only the
response can bring, so a ``pipeline()`` that wrote the whole body first would deadlock (and
fail on its ``fail_after``, or on what it received)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import attrs
import pytest
import trio
import trio.testing
from _helpers import assert_idle

from trio_pool import BalancedPool, Client, HeadersTimeoutError, Pool, SocketError
from trio_pool.testing import ServerConnection, ServerRequest, serve_h11, serve_memory


async def script(request: ServerRequest, conn: ServerConnection) -> None:
    """What the server does once a request's head arrived:

    * ``/echo``: answer after the first body chunk, echoing the body chunk by chunk;
    * ``/stall``: answer the first chunk, then neither read nor answer;
    * ``/hangup``: answer the first chunk and hang up;
    * ``/early``: answer 413 in full after the first chunk;
    * ``/silent``: read the body, never answer;
    * ``/`` (``/slow``: after a second): answer with the connection's number.
    """
    if request.target in ("/", "/slow"):
        while await conn.receive_data() is not None:
            pass
        if request.target == "/slow":
            await trio.sleep(1)
        await conn.respond(200, body=str(conn.number).encode())
        return
    if request.target == "/silent":
        while await conn.receive_data() is not None:
            pass
        await trio.sleep_forever()
    chunk = await conn.receive_data()
    if request.target == "/early":
        await conn.respond(413, body=b"too big")
        return
    await conn.send_head(200, [("transfer-encoding", "chunked")])
    if request.target == "/stall":
        await conn.send_data(chunk or b"")
        await trio.sleep_forever()
    if request.target == "/hangup":
        await conn.send_data(chunk or b"")
        await conn.close()
        return
    while chunk is not None:
        await conn.send_data(chunk)
        chunk = await conn.receive_data()
    await conn.send_end()


@attrs.define
class Body:
    """A request body that sends ``b"a"``, then waits for ``go`` (set once the caller got
    the first response chunk), then sends ``rest``; it records how it was stopped."""

    rest: list[bytes] = attrs.Factory(lambda: [b"b", b"c"])
    go: trio.Event = attrs.Factory(trio.Event)
    raises: BaseException | None = None
    task: trio.lowlevel.Task | None = None
    sent: int = 0
    cancelled: bool = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.task = trio.lowlevel.current_task()
        yield b"a"
        try:
            await self.go.wait()
        except trio.Cancelled:
            self.cancelled = True
            raise
        if self.raises is not None:
            raise self.raises
        for chunk in self.rest:
            self.sent += 1
            yield chunk


@pytest.fixture(params=["client", "pool"])
async def dispatcher(request: pytest.FixtureRequest) -> AsyncIterator[Client | Pool]:
    async with serve_memory(script, streaming=True) as server:
        kind = Client if request.param == "client" else Pool
        async with kind(server.origin, connector=server.connector) as d:
            yield d


async def echo(pool: Client | Pool | BalancedPool, body: Body) -> list[bytes]:
    received = []
    async with pool.pipeline("POST", "/echo", body=body) as response:
        assert response.status == 200
        async for chunk in response.body:
            received.append(chunk)
            body.go.set()
    return received


async def test_the_response_streams_while_the_body_is_sent(
    autojump_clock: trio.testing.MockClock, dispatcher: Client | Pool
) -> None:
    body = Body()
    with trio.fail_after(10):
        assert b"".join(await echo(dispatcher, body)) == b"abc"
    assert body.task is not trio.lowlevel.current_task()  # written by a helper task
    assert_idle(dispatcher)
    # Both directions ended cleanly: the connection (number 0) is reused.
    assert (await dispatcher.request("GET", "/")).body == b"0"


async def test_duplex_over_tcp() -> None:
    async with serve_h11(script, streaming=True) as server, Pool(server.origin) as pool:
        body = Body(rest=[bytes([i % 256]) * 100_000 for i in range(20)])
        with trio.fail_after(10):
            received = b"".join(await echo(pool, body))
        assert received == b"".join([b"a", *body.rest])
        assert_idle(pool)
        assert (await pool.request("GET", "/")).body == b"0"


async def test_cancel_at_the_head_wait_cancels_the_writer(
    autojump_clock: trio.testing.MockClock, dispatcher: Client | Pool
) -> None:
    body = Body()
    with trio.move_on_after(5) as scope:
        async with dispatcher.pipeline("POST", "/silent", body=body):
            pytest.fail("no response was sent")
    assert scope.cancelled_caught
    # The writer was parked mid-body in its own task when the caller was cancelled.
    assert body.cancelled
    assert body.task is not trio.lowlevel.current_task()
    assert_idle(dispatcher)
    assert (await dispatcher.request("GET", "/")).status == 200


async def test_cancel_while_reading_the_body_cancels_the_writer(
    autojump_clock: trio.testing.MockClock, dispatcher: Client | Pool
) -> None:
    body = Body()
    received = []
    with trio.move_on_after(5) as scope:
        async with dispatcher.pipeline("POST", "/stall", body=body) as response:
            async for chunk in response.body:
                received.append(chunk)
    assert scope.cancelled_caught
    assert received == [b"a"]
    assert body.cancelled
    assert_idle(dispatcher)
    assert (await dispatcher.request("GET", "/")).status == 200


async def test_cancel_while_the_writer_is_blocked_mid_body() -> None:
    # The server reads nothing after the first chunk: the writer fills the socket buffers
    # and blocks in its send while the caller sits in its own code.
    async with serve_h11(script, streaming=True) as server, Pool(server.origin) as pool:
        body = Body(rest=[b"x" * 65536] * 10_000)
        with trio.fail_after(30), trio.CancelScope() as scope:  # fail_after: a hang guard
            async with pool.pipeline("POST", "/stall", body=body) as response:
                async for chunk in response.body:
                    assert chunk == b"a"
                    body.go.set()
                    # Every task waits now: the writer in its send to the full socket.
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
                    await trio.sleep_forever()
        assert scope.cancelled_caught
        assert 0 < body.sent < len(body.rest)
        assert_idle(pool)
        assert (await pool.request("GET", "/")).body == b"1"  # a new connection


async def test_the_body_iterable_raising_reaches_the_caller(
    autojump_clock: trio.testing.MockClock, dispatcher: Client | Pool
) -> None:
    class Boom(Exception):
        pass

    body = Body(raises=Boom("the body failed"))
    with trio.fail_after(10), pytest.raises(Boom):
        await echo(dispatcher, body)
    assert_idle(dispatcher)
    assert (await dispatcher.request("GET", "/")).body == b"1"  # not reused


async def test_the_server_closing_mid_body_is_a_socket_error(
    autojump_clock: trio.testing.MockClock, dispatcher: Client | Pool
) -> None:
    body = Body()
    with trio.fail_after(10):
        async with dispatcher.pipeline("POST", "/hangup", body=body) as response:
            chunks = aiter(response.body)
            assert await anext(chunks) == b"a"
            body.go.set()
            await trio.sleep(1)  # the writer meets the closed connection first
            with pytest.raises(SocketError) as info:
                await anext(chunks)
    assert isinstance(info.value.__cause__, trio.BrokenResourceError)
    assert_idle(dispatcher)
    assert (await dispatcher.request("GET", "/")).body == b"1"


async def test_leaving_the_block_early_stops_the_writer(
    autojump_clock: trio.testing.MockClock, dispatcher: Client | Pool
) -> None:
    body = Body()
    with trio.fail_after(10):
        async with dispatcher.pipeline("POST", "/echo", body=body) as response:
            async for chunk in response.body:
                assert chunk == b"a"
                break
    assert body.cancelled
    assert_idle(dispatcher)
    assert (await dispatcher.request("GET", "/")).body == b"1"  # closed, not reused


async def test_a_whole_response_before_the_body_ended_stops_the_writer(
    autojump_clock: trio.testing.MockClock, dispatcher: Client | Pool
) -> None:
    body = Body()  # never told to go on: only the response can end this exchange
    with trio.fail_after(10):
        async with dispatcher.pipeline("POST", "/early", body=body) as response:
            assert response.status == 413
            assert await response.read() == b"too big"
    assert body.cancelled
    assert_idle(dispatcher)
    assert (await dispatcher.request("GET", "/")).body == b"1"  # half-written: closed


async def test_headers_timeout_counts_from_the_request_head(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        serve_memory(script, streaming=True) as server,
        Client(server.origin, connector=server.connector, headers_timeout=3) as client,
    ):
        body = Body()
        start = trio.current_time()
        with trio.fail_after(10), pytest.raises(HeadersTimeoutError):
            async with client.pipeline("POST", "/silent", body=body):
                pytest.fail("no response was sent")
        assert trio.current_time() - start == pytest.approx(3)
        assert body.cancelled
        assert_idle(client)
        assert (await client.request("GET", "/")).body == b"1"


async def test_an_error_in_the_block_leaves_as_itself(
    autojump_clock: trio.testing.MockClock, dispatcher: Client | Pool
) -> None:
    body = Body()
    with trio.fail_after(10), pytest.raises(KeyError):  # not in an ExceptionGroup
        async with dispatcher.pipeline("POST", "/echo", body=body) as response:
            async for chunk in response.body:
                raise KeyError(chunk)
    assert body.cancelled
    assert_idle(dispatcher)
    assert (await dispatcher.request("GET", "/")).body == b"1"


async def test_a_body_error_while_waiting_for_the_head_is_raised_on_entering(
    autojump_clock: trio.testing.MockClock, dispatcher: Client | Pool
) -> None:
    class Boom(Exception):
        pass

    async def go_later() -> None:
        await trio.sleep(1)
        body.go.set()

    body = Body(raises=Boom("the body failed"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(go_later)
        with trio.fail_after(10), pytest.raises(Boom):
            async with dispatcher.pipeline("POST", "/silent", body=body):
                pytest.fail("no response was sent")
    assert body.task is not trio.lowlevel.current_task()  # raised in the writer task
    assert_idle(dispatcher)
    assert (await dispatcher.request("GET", "/")).body == b"1"


async def test_never_pipelined_behind_another_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        serve_memory(script, streaming=True) as server,
        Client(server.origin, connector=server.connector, pipelining=10) as client,
    ):
        stats = []

        async def observe() -> None:
            await trio.sleep(0.75)  # the GET is answered at 1 s
            stats.append(client.statistics())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.request, "GET", "/slow")
            nursery.start_soon(observe)
            await trio.sleep(0.5)
            with trio.fail_after(10):
                assert b"".join(await echo(client, Body())) == b"abc"
        assert (stats[0].running, stats[0].pending) == (1, 1)
        assert [(r.target, r.connection, r.index) for r in server.requests] == [
            ("/slow", 0, 0),
            ("/echo", 0, 1),
        ]


async def test_balanced_pool_pipeline_is_duplex(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        serve_memory(script, streaming=True) as server,
        BalancedPool([server.origin], connector=server.connector) as pool,
    ):
        with trio.fail_after(10):
            assert b"".join(await echo(pool, Body())) == b"abc"
        assert_idle(pool)
