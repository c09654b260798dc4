"""close(), destroy(), events, statistics and the async with block (undici parity)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing
from _helpers import ok

import trio_pool
from trio_pool import Client, ClientClosedError, ClientDestroyedError, Pool
from trio_pool.testing import ServerConnection, ServerRequest, serve_memory


async def slow(request: ServerRequest, conn: ServerConnection) -> None:
    """Answers after one second; ``/never`` never answers."""
    if request.target == "/never":
        await trio.sleep_forever()
    await trio.sleep(1)
    await conn.respond(200, body=request.target.encode())


async def test_close_finishes_queued_and_running_work(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_memory(slow) as server:
        async with Pool(server.origin, connector=server.connector, connections=1) as pool:
            results: list[bytes] = []

            async def run(path: str) -> None:
                results.append((await pool.request("GET", path)).body)

            async with trio.open_nursery() as nursery:
                for path in ["/1", "/2", "/3"]:
                    nursery.start_soon(run, path)
                await trio.testing.wait_all_tasks_blocked()
                assert pool.statistics().size == 3
                await pool.close()
                assert pool.closed
                assert not pool.destroyed
                assert sorted(results) == [b"/1", b"/2", b"/3"]
                assert pool.statistics().connected == 0
            with pytest.raises(ClientClosedError):
                await pool.request("GET", "/")
            await pool.close()  # again: nothing more to wait for


async def test_close_while_connecting_for_a_cancelled_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Found by the chaos soak (BalancedPool upstream churn): a connection opened for a
    request whose caller gave up, that connects once ``close()`` began, is retired before
    its task sleeps; close() must still end (it used to wait forever, the connection
    counted as connected but not free)."""
    async with serve_memory(slow) as server:
        server.connect_delay = 2
        async with Pool(server.origin, connector=server.connector) as pool:
            with trio.move_on_after(1):
                await pool.request("GET", "/")
            with trio.fail_after(10):
                await pool.close()
            assert pool.statistics() == trio_pool.PoolStats(0, 0, 0, 0, 0, 0)


async def test_destroy_fails_queued_and_running_work(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_memory(slow) as server:
        async with Pool(server.origin, connector=server.connector, connections=1) as pool:
            errors: list[BaseException] = []

            async def run(path: str) -> None:
                try:
                    await pool.request("GET", path)
                except trio_pool.TrioPoolError as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, "/never")
                nursery.start_soon(run, "/queued")
                await trio.testing.wait_all_tasks_blocked()
                assert pool.statistics().queued == 1
                await pool.destroy()
            assert pool.destroyed
            assert pool.closed
            assert len(errors) == 2
            assert all(isinstance(e, ClientDestroyedError) for e in errors)
            stats = pool.statistics()
            assert (stats.size, stats.connected) == (0, 0)
            with pytest.raises(ClientDestroyedError):
                await pool.request("GET", "/")
            with pytest.raises(ClientDestroyedError):
                await pool.close()
            await pool.destroy()  # again: nothing happens


async def test_destroy_with_an_error(autojump_clock: trio.testing.MockClock) -> None:
    class Gone(Exception):
        pass

    async with serve_memory(slow) as server:
        async with Client(server.origin, connector=server.connector) as client:
            async with trio.open_nursery() as nursery:

                async def run() -> None:
                    with pytest.raises(Gone):
                        await client.request("GET", "/never")

                nursery.start_soon(run)
                await trio.testing.wait_all_tasks_blocked()
                await client.destroy(Gone())


async def test_statistics_inside_a_running_request() -> None:
    seen: list[trio_pool.PoolStats] = []
    pool: Pool

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        seen.append(pool.statistics())
        await conn.respond(200)

    async with serve_memory(script) as server:
        async with Pool(server.origin, connector=server.connector) as pool:
            await pool.request("GET", "/")
            assert seen == [
                trio_pool.PoolStats(connected=1, free=0, pending=0, queued=0, running=1, size=1)
            ]
            assert pool.statistics() == trio_pool.PoolStats(1, 1, 0, 0, 0, 0)


async def test_events_carry_targets(autojump_clock: trio.testing.MockClock) -> None:
    made: list[Client] = []

    def factory(origin: str, **options: Any) -> Client:
        client = Client(origin, **options)
        made.append(client)
        return client

    events: list[tuple[str, str, list[object]]] = []
    async with serve_memory(ok) as server:
        pool = Pool(server.origin, connector=server.connector, factory=factory, connections=1)
        for name in ("connect", "disconnect", "drain"):
            pool.on(
                name,
                lambda origin, targets, *rest, name=name: events.append((name, origin, targets)),
            )
        async with pool:
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(pool.request, "GET", "/")
        assert len(made) == 1
        assert events[0] == ("connect", server.origin, [pool, made[0]])
        assert ("drain", server.origin, [pool, made[0]]) in events
        assert events[-1] == ("disconnect", server.origin, [pool, made[0]])

        client_events: list[list[object]] = []
        client = Client(server.origin, connector=server.connector)
        client.on("connect", lambda origin, targets: client_events.append(targets))
        async with client:
            await client.request("GET", "/")
        assert client_events == [[client]]

        # off() removes a listener; the factory's clients hear their own connection's events.
        counted: list[object] = []

        def listener(origin: str, targets: list[object]) -> None:
            counted.append(targets)

        made[0].on("connect", listener)
        pool2 = Pool(server.origin, connector=server.connector, factory=lambda o, **kw: made[0])
        pool2.on("connect", listener)
        pool2.off("connect", listener)
        async with pool2:
            await pool2.request("GET", "/")
        assert counted == [[made[0]]]


async def test_invalid_event_and_listener() -> None:
    pool = Pool("http://x")
    with pytest.raises(trio_pool.InvalidArgumentError, match="event"):
        pool.on("nope", print)
    with pytest.raises(trio_pool.InvalidArgumentError, match="callback"):
        pool.on("connect", 12)  # type: ignore[arg-type]


async def test_a_failing_listener_does_not_break_the_pool(caplog: pytest.LogCaptureFixture) -> None:
    async with serve_memory(ok) as server, Pool(server.origin, connector=server.connector) as pool:
        pool.on("connect", lambda origin, targets: 1 / 0)
        assert (await pool.request("GET", "/")).status == 200
    assert "ZeroDivisionError" in caplog.text


@pytest.mark.parametrize("kind", [Client, Pool])
async def test_user_exception_leaves_the_block_unwrapped(kind: type[Client | Pool]) -> None:
    class Mine(Exception):
        pass

    async with serve_memory(ok) as server:
        dispatcher = kind(server.origin, connector=server.connector)
        with pytest.raises(Mine):
            async with dispatcher:
                await dispatcher.request("GET", "/")
                raise Mine
        assert dispatcher.destroyed
        with pytest.raises(ClientDestroyedError):
            await dispatcher.request("GET", "/")


async def test_leaving_the_block_with_work_running_fails_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Mine(Exception):
        pass

    errors: list[BaseException] = []
    async with serve_memory(slow) as server:
        with pytest.RaisesGroup(Mine):  # the test's own nursery wraps it; the pool did not
            async with trio.open_nursery() as nursery:
                async with Pool(server.origin, connector=server.connector) as pool:

                    async def run() -> None:
                        try:
                            await pool.request("GET", "/never")
                        except ClientDestroyedError as exc:
                            errors.append(exc)

                    nursery.start_soon(run)
                    await trio.testing.wait_all_tasks_blocked()
                    raise Mine
    assert len(errors) == 1


async def test_block_left_after_close_or_destroy_does_nothing_more() -> None:
    async with Pool("http://x") as pool:
        await pool.destroy()
    async with Client("http://x") as client:
        await client.close()
    with pytest.raises(ClientClosedError):
        async with client:
            pass


async def test_logging_never_shows_credentials(caplog: pytest.LogCaptureFixture) -> None:
    async def ok(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, [("set-cookie", "session=SECRET2")])

    caplog.set_level(logging.DEBUG, logger="trio_pool")
    async with serve_memory(ok) as server, Pool(server.origin, connector=server.connector) as pool:
        response = await pool.request(
            "GET", "/", headers={"authorization": "Bearer SECRET1", "cookie": "SECRET3"}
        )
    assert "SECRET" not in caplog.text
    assert "SECRET" not in repr(response.headers)
    assert any(r.name.startswith("trio_pool.") for r in caplog.records)
