"""``failover=True``: a request whose connect to an upstream failed goes to the next one
(real refused ports on 127.0.0.1, live trio servers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest
import trio
import trio.testing
from _upstreams import Upstream, upstreams

from trio_pool import (
    BalancedPool,
    ConnectError,
    InvalidArgumentError,
    RequestOptions,
    compose,
    interceptors,
)
from trio_pool.interceptors import Controller
from trio_pool.testing import ServerConnection, ServerRequest


def idle(pool: BalancedPool) -> None:
    stats = pool.statistics()
    assert (stats.pending, stats.queued, stats.running, stats.size) == (0, 0, 0, 0)


async def cancel_on_the_second_attempt(
    pool: BalancedPool, send: Callable[[], Awaitable[object]]
) -> None:
    """Run ``send()`` and cancel it once its second attempt (on the live upstream, after the
    dead one refused) is the one request running."""
    with trio.CancelScope() as scope:

        async def cancel_when_running() -> None:
            await trio.testing.wait_all_tasks_blocked()
            assert pool.statistics().running == 1
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_when_running)
            await send()
    assert scope.cancelled_caught


async def test_one_dead_upstream_of_two_fails_no_request() -> None:
    async with upstreams(2) as (dead, live):
        await dead.stop()  # its port now refuses connections
        async with BalancedPool([dead.origin, live.origin], connections=4) as pool:
            failures: list[BaseException] = []

            async def client() -> None:
                for _ in range(30):
                    try:
                        response = await pool.request("GET", "/")
                    except ConnectError as exc:  # pragma: no cover - the failure asserted
                        failures.append(exc)
                    else:
                        assert response.body == b"B"

            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(client)
            assert failures == []
            assert live.served == 300
            idle(pool)


async def test_failover_off_gives_the_caller_the_connect_error() -> None:
    async with upstreams(2) as (dead, live):
        await dead.stop()
        async with BalancedPool([dead.origin, live.origin], failover=False) as pool:
            with pytest.raises(ConnectError):
                await pool.request("GET", "/")  # the rotation starts at the first upstream
            assert (await pool.request("GET", "/")).body == b"B"


async def test_every_upstream_down_raises_the_last_error_with_the_others_noted() -> None:
    async with upstreams(3) as ups:
        for up in ups:
            await up.stop()
        async with BalancedPool([up.origin for up in ups]) as pool:
            with pytest.raises(ConnectError) as info:
                await pool.request("GET", "/")
            notes = getattr(info.value, "__notes__", [])
            assert any(ups[0].origin in note for note in notes)
            assert any(ups[1].origin in note for note in notes)
            assert any("3 upstreams tried" in note for note in notes)
            idle(pool)
            await ups[1].start()  # same port: one comes back
            assert (await pool.request("GET", "/")).body == b"B"


async def test_failover_stays_within_the_capability() -> None:
    async with upstreams(3) as (a, b, c):
        await a.stop()
        async with BalancedPool([]) as pool:
            pool.add_upstream(a.origin, capabilities=["write"])
            pool.add_upstream(b.origin, capabilities=["read"])
            pool.add_upstream(c.origin, capabilities=["write"])
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(4):
                assert (await pool.request("POST", "/", capability="write")).body == b"C"
            assert b.served == 0


@pytest.mark.parametrize("kind", ["bytes", "list", "generator"])
async def test_a_body_goes_whole_to_the_next_upstream(kind: str) -> None:
    received: list[bytes] = []

    async def echo(request: ServerRequest, conn: ServerConnection) -> None:
        received.append(request.body)
        await conn.respond(200, body=request.body)

    async with trio.open_nursery() as nursery:
        dead = Upstream("A", nursery, [])
        live = Upstream("B", nursery, [], script=echo)
        await dead.start()
        await live.start()
        await dead.stop()

        def body() -> bytes | list[bytes] | Iterator[bytes]:
            if kind == "bytes":
                return b"hello world"
            if kind == "list":
                return [b"hello", b" world"]
            return (chunk for chunk in (b"hello", b" world"))

        async with BalancedPool([dead.origin, live.origin]) as pool:
            for _ in range(3):
                response = await pool.request("POST", "/", body=body())
                assert response.body == b"hello world"
        assert received == [b"hello world"] * 3
        nursery.cancel_scope.cancel()


async def test_a_stream_fails_over_while_entering() -> None:
    async with upstreams(2) as (dead, live):
        await dead.stop()
        async with BalancedPool([dead.origin, live.origin]) as pool:
            for _ in range(3):
                async with pool.stream("GET", "/") as response:
                    assert await response.read() == b"B"
            idle(pool)


async def test_cancelled_during_the_failover_attempt_leaves_nothing_behind() -> None:
    async with upstreams(2) as (dead, live):
        await dead.stop()
        async with BalancedPool([dead.origin, live.origin], connections=1) as pool:
            # B answers /slow once its gate opens.
            await cancel_on_the_second_attempt(pool, lambda: pool.request("GET", "/slow"))
            await trio.testing.wait_all_tasks_blocked()
            idle(pool)
            pool._check_invariants()
            live.gate.set()
            assert (await pool.request("GET", "/")).body == b"B"
            idle(pool)


async def test_failover_must_be_a_bool() -> None:
    with pytest.raises(InvalidArgumentError, match="failover"):
        BalancedPool("http://127.0.0.1:1", failover=1)  # type: ignore[arg-type]


class _Recorder:
    """A dispatch() handler that records what it is told, controller included."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.body = b""
        self.error: BaseException | None = None
        self.controllers: set[int] = set()
        self.origin: str | None = None  # controller.origin when the request ended

    def on_request_start(self, controller: object) -> None:
        self.controllers.add(id(controller))
        self.events.append("start")

    def on_response_start(
        self, controller: object, status: int, headers: object, reason: str
    ) -> None:
        self.controllers.add(id(controller))
        self.events.append(f"response {status}")

    def on_response_data(self, controller: object, chunk: bytes) -> None:
        self.body += chunk

    def on_response_end(self, controller: Controller, trailers: object) -> None:
        self.origin = controller.origin
        self.events.append("end")

    def on_response_error(self, controller: Controller, error: BaseException) -> None:
        self.controllers.add(id(controller))
        self.origin = controller.origin
        self.error = error
        self.events.append("error")


async def test_dispatch_fails_over_and_its_handler_sees_one_request() -> None:
    async with upstreams(2) as (dead, live):
        await dead.stop()
        async with BalancedPool([dead.origin, live.origin]) as pool:
            for _ in range(4):  # both rotation positions, twice
                handler = _Recorder()
                await pool.dispatch(RequestOptions("GET", "/"), handler)
                assert handler.events == ["start", "response 200", "end"]
                assert handler.body == b"B"
                assert len(handler.controllers) == 1  # one controller across the attempts
                assert handler.origin == live.origin  # it names the attempt that answered
            assert live.served == 4
            idle(pool)


async def test_dispatch_with_every_upstream_down_reports_the_last_error_once() -> None:
    async with upstreams(2) as ups:
        for up in ups:
            await up.stop()
        async with BalancedPool([up.origin for up in ups]) as pool:
            handler = _Recorder()
            await pool.dispatch(RequestOptions("GET", "/"), handler)
            assert handler.events == ["start", "error"]
            assert isinstance(handler.error, ConnectError)
            assert any("2 upstreams tried" in n for n in getattr(handler.error, "__notes__", []))
            # The controller names the upstream of the last attempt, the one the error is of.
            assert handler.origin is not None
            assert handler.origin in getattr(handler.error, "__notes__", [""])[-1]
            idle(pool)


async def test_a_composed_balanced_pool_fails_over_under_its_interceptors() -> None:
    async with upstreams(2) as (dead, live):
        await dead.stop()
        async with BalancedPool([dead.origin, live.origin]) as balanced:
            pool = compose(balanced, interceptors.redirect(), interceptors.decompress())
            for _ in range(6):
                assert (await pool.request("GET", "/")).body == b"B"
            async with pool.stream("GET", "/") as response:
                assert await response.read() == b"B"
            idle(balanced)


async def test_dispatch_cancelled_during_the_failover_attempt_tells_its_handler_once() -> None:
    async with upstreams(2) as (dead, live):
        await dead.stop()
        async with BalancedPool([dead.origin, live.origin], connections=1) as pool:
            handler = _Recorder()
            options = RequestOptions("GET", "/slow")
            await cancel_on_the_second_attempt(pool, lambda: pool.dispatch(options, handler))
            assert handler.events == ["start", "error"]
            assert not isinstance(handler.error, ConnectError)
            await trio.testing.wait_all_tasks_blocked()
            idle(pool)
            live.gate.set()
            assert (await pool.request("GET", "/")).body == b"B"
            idle(pool)
