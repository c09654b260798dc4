"""BalancedPool lifetime: close/destroy, the async with block, events, statistics, the
balanced-level queue and its cancellation, upstreams added and removed mid-flight."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing
from _helpers import assert_idle

from trio_pool import (
    BalancedPool,
    BalancedPoolMissingUpstreamError,
    Client,
    ClientClosedError,
    ClientDestroyedError,
    ConnectError,
    InformationalError,
    InvalidArgumentError,
    Pool,
    RequestAbortedError,
    RequestOptions,
    TrioPoolError,
)
from trio_pool.interceptors import Controller
from trio_pool.testing import H11Server, Script, ServerConnection, ServerRequest, serve_h11


class Gate:
    """Scripts for upstreams: ``/slow`` waits for :meth:`open`, ``/never`` never answers,
    anything else is answered at once; the body is the upstream's name."""

    def __init__(self) -> None:
        self.opened = trio.Event()

    def open(self) -> None:
        self.opened.set()

    def script(self, name: str) -> Script:
        async def answer(request: ServerRequest, conn: ServerConnection) -> None:
            if request.target == "/never":
                await trio.sleep_forever()
            if request.target == "/slow":
                await self.opened.wait()
            await conn.respond(200, body=name.encode())

        return answer


@asynccontextmanager
async def servers(gate: Gate, *names: str) -> AsyncIterator[list[H11Server]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(serve_h11(gate.script(name))) for name in names]


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def test_requests_need_the_async_with_block() -> None:
    pool = BalancedPool("http://127.0.0.1:9")
    with pytest.raises(RuntimeError, match="async with"):
        await pool.request("GET", "/")
    await pool.close()
    assert pool.closed
    with pytest.raises(ClientClosedError):
        async with pool:
            pass  # pragma: no cover


async def test_close_lets_running_and_queued_work_finish() -> None:
    gate = Gate()
    async with servers(gate, "A", "B") as (a, b):
        async with BalancedPool([a.origin, b.origin], connections=1) as pool:
            pools = [pool.get_upstream(a.origin), pool.get_upstream(b.origin)]
            results: list[bytes] = []

            async def slow() -> None:
                results.append((await pool.request("GET", "/slow")).body)

            async with trio.open_nursery() as nursery:
                for _ in range(6):  # 2 running, 2 queued in the Pools, 2 in the BalancedPool
                    nursery.start_soon(slow)
                await settle()
                stats = pool.statistics()
                assert (stats.running, stats.queued, stats.size) == (2, 4, 6)
                nursery.start_soon(pool.close)
                await settle()
                assert pool.closed
                assert not pool.destroyed
                with pytest.raises(ClientClosedError):
                    await pool.request("GET", "/")
                with pytest.raises(ClientClosedError):
                    pool.add_upstream("http://127.0.0.1:9")
                gate.open()
            assert sorted(results) == [b"A"] * 3 + [b"B"] * 3
            assert pool.statistics().connected == 0
            assert all(upstream is not None and upstream.closed for upstream in pools)
            assert pool.upstreams == []
            await pool.close()  # again: nothing more to wait for


@pytest.mark.parametrize("error", [None, InformationalError("going away")])
async def test_destroy_fails_running_and_queued_work(error: BaseException | None) -> None:
    gate = Gate()
    async with servers(gate, "A") as (a,):
        async with BalancedPool(a.origin, connections=1) as pool:
            errors: list[BaseException] = []

            async def never() -> None:
                try:
                    await pool.request("GET", "/never")
                except TrioPoolError as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                for _ in range(3):  # running, queued in the Pool, queued here
                    nursery.start_soon(never)
                await settle()
                assert pool.statistics().queued == 2
                await pool.destroy(error)
            assert pool.destroyed
            assert pool.closed
            assert len(errors) == 3
            expected = ClientDestroyedError if error is None else InformationalError
            assert all(isinstance(exc, expected) for exc in errors)
            assert_idle(pool)
            assert pool.statistics().connected == 0
            with pytest.raises(ClientDestroyedError):
                await pool.request("GET", "/")
            with pytest.raises(ClientDestroyedError):
                await pool.close()
            await pool.destroy()  # again: nothing happens


async def test_user_exception_leaves_the_block_unwrapped() -> None:
    gate = Gate()
    async with servers(gate, "A", "B") as (a, b):
        pool = BalancedPool([a.origin, b.origin])
        errors: list[BaseException] = []

        async def never() -> None:
            try:
                await pool.request("GET", "/never")
            except TrioPoolError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            with pytest.raises(KeyError, match="mine"):
                async with pool:
                    nursery.start_soon(never)
                    await settle()
                    raise KeyError("mine")
        assert pool.destroyed
        assert len(errors) == 1
        assert isinstance(errors[0], ClientDestroyedError)

        async with BalancedPool([a.origin]) as pool:
            await pool.destroy()  # destroyed inside the block: leaving it does nothing more


async def test_events_carry_the_three_element_chain() -> None:
    gate = Gate()
    async with servers(gate, "A") as (a,):
        seen: list[tuple[str, list[object]]] = []
        pool = BalancedPool(
            [a.origin, "http://127.0.0.1:9"],
            keep_alive_timeout_threshold=0,
            connections=1,
            failover=False,  # the refused request's error is the caller's
        )
        for event in ("connect", "disconnect", "connection_error", "drain"):
            pool.on(
                event, lambda origin, targets, *rest, event=event: seen.append((event, targets))
            )
        async with pool:
            upstream = pool.get_upstream(a.origin)
            assert isinstance(upstream, Pool)
            heard: list[list[object]] = []
            upstream.on("connect", lambda origin, targets: heard.append(targets))
            assert (await pool.request("GET", "/")).body == b"A"
            with pytest.raises(ConnectError):
                await pool.request("GET", "/")  # port 9 (discard) refuses
            # The keep-alive threshold of 0 closes after each response: a disconnect.
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(pool.request, "GET", "/slow")
                await settle()
                gate.open()
        kinds = [event for event, _ in seen]
        assert {"connect", "disconnect", "connection_error", "drain"} <= set(kinds)
        for event, targets in seen:
            assert len(targets) == 3, event
            assert targets[0] is pool
            assert isinstance(targets[1], Pool)
            assert isinstance(targets[2], Client)
        assert heard
        assert all(len(targets) == 2 and targets[0] is upstream for targets in heard)


async def test_statistics_sum_the_pools_and_return_to_idle() -> None:
    gate = Gate()
    async with servers(gate, "A", "B") as (a, b):
        async with BalancedPool([a.origin, b.origin], connections=2) as pool:
            assert_idle(pool)
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(pool.request, "GET", "/slow")
                await settle()
                stats = pool.statistics()
                assert (stats.connected, stats.running, stats.queued, stats.size) == (4, 4, 1, 5)
                assert stats.free == 0
                assert stats.pending == 1
                gate.open()
            stats = pool.statistics()
            assert_idle(pool)
            assert stats.connected == stats.free == 4


async def test_cancelled_while_queued_here_leaves_the_queue() -> None:
    gate = Gate()
    async with servers(gate, "A", "B") as (a, b):
        async with BalancedPool([a.origin, b.origin], connections=1) as pool:
            results: list[bytes] = []

            async def slow() -> None:
                results.append((await pool.request("GET", "/slow")).body)

            async with trio.open_nursery() as nursery:
                for _ in range(4):  # two running, one queued in each Pool
                    nursery.start_soon(slow)
                await settle()
                scopes = [trio.CancelScope() for _ in range(3)]

                async def waiter(scope: trio.CancelScope) -> None:
                    with scope:
                        await pool.request("GET", "/")

                for scope in scopes:  # every Pool has a backlog: they wait here
                    nursery.start_soon(waiter, scope)
                await settle()
                stats = pool.statistics()
                assert (stats.queued, stats.pending, stats.size) == (5, 5, 7)
                scopes[1].cancel()  # from the middle of the queue
                await settle()
                stats = pool.statistics()
                assert (stats.queued, stats.pending, stats.size) == (4, 4, 6)
                scopes[0].cancel()
                scopes[2].cancel()
                await settle()
                assert all(scope.cancelled_caught for scope in scopes)
                stats = pool.statistics()
                assert (stats.queued, stats.running, stats.size) == (2, 2, 4)
                gate.open()
            assert sorted(results) == [b"A", b"A", b"B", b"B"]
            assert_idle(pool)
            assert (await pool.request("GET", "/")).body in (b"A", b"B")
            assert_idle(pool)


class Calls:
    """A dispatch() handler that records which of its methods were called."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.error: BaseException | None = None
        self.origin: str | None = None  # what the last controller said ran the request

    def on_request_start(self, controller: object) -> None:
        self.calls.append("start")

    def on_response_start(self, controller: object, *head: object) -> None:
        self.calls.append("head")

    def on_response_data(self, controller: object, chunk: bytes) -> None:
        self.calls.append("data")

    def on_response_end(self, controller: object, trailers: object) -> None:
        self.calls.append("end")

    def on_response_error(self, controller: Controller, error: BaseException) -> None:
        self.calls.append("error")
        self.error = error
        self.origin = controller.origin


async def test_dispatch_cancelled_while_queued_here_tells_its_handler() -> None:
    """Found by the chaos soak: a dispatch() cancelled while it waits here for an upstream
    ends, for its handler, as it would in a Pool: ``on_request_start`` then one
    ``on_response_error`` (the handler used to hear nothing at all)."""
    gate = Gate()
    async with servers(gate, "A") as (a,):
        async with BalancedPool([a.origin], connections=1) as pool:
            handler = Calls()
            scope = trio.CancelScope()

            async def dispatch() -> None:
                with scope:
                    await pool.dispatch(RequestOptions("GET", "/"), handler)

            async with trio.open_nursery() as nursery:
                for _ in range(2):  # one running, one queued in the Pool
                    nursery.start_soon(pool.request, "GET", "/slow")
                await settle()
                nursery.start_soon(dispatch)
                await settle()
                assert pool.statistics().queued == 2  # one in the Pool, one here
                scope.cancel()
                await settle()
                assert handler.calls == ["start", "error"]
                assert isinstance(handler.error, RequestAbortedError)
                assert handler.origin is None  # it never reached an upstream
                gate.open()
            assert_idle(pool)
            await pool.dispatch(RequestOptions("GET", "/"), handler := Calls())
            assert handler.calls == ["start", "head", "data", "end"]


async def test_waiter_cancelled_as_it_is_given_an_upstream_passes_it_on() -> None:
    gate = Gate()
    async with servers(gate, "A", "U") as (a, u):
        async with BalancedPool([], connections=1) as pool:
            pool.add_upstream(a.origin, capabilities=["main"])
            pool.add_upstream(u.origin, capabilities=["other"])
            await settle()
            upstream = pool.get_upstream(a.origin)
            assert upstream is not None
            results: list[bytes] = []

            async def main(path: str, scope: trio.CancelScope) -> None:
                with scope:
                    results.append((await pool.request("GET", path, capability="main")).body)

            async def direct(scope: trio.CancelScope) -> None:
                with scope:
                    await upstream.request("GET", "/")

            direct_scope, first, second = (trio.CancelScope() for _ in range(3))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(main, "/slow", trio.CancelScope())  # running on A
                await settle()
                nursery.start_soon(direct, direct_scope)  # queued in A's own Pool
                await settle()
                nursery.start_soon(main, "/", first)  # both wait here
                await settle()
                nursery.start_soon(main, "/", second)
                await settle()
                assert pool.statistics().queued == 3
                direct_scope.cancel()  # A has no backlog now, but nothing told us
                await settle()
                assert pool.statistics().queued == 2
                # The first waiter is cancelled, then (before it runs) handed A by the pump
                # that removing an upstream runs: it must pass A on to the second.
                first.cancel()
                pool.remove_upstream(u.origin)
                await settle()
                assert first.cancelled_caught
                stats = pool.statistics()
                assert (stats.queued, stats.running, stats.size) == (1, 1, 2)  # in A's Pool
                gate.open()
            assert results == [b"A", b"A"]
            assert not second.cancelled_caught
            assert_idle(pool)


async def test_remove_upstream_while_requests_are_in_flight() -> None:
    gate = Gate()
    async with servers(gate, "A", "B", "C") as (a, b, c):
        async with BalancedPool([a.origin, b.origin]) as pool:
            removed = pool.get_upstream(a.origin)
            assert removed is not None
            results: list[bytes] = []

            async def slow() -> None:
                results.append((await pool.request("GET", "/slow")).body)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow)  # to A
                await settle()
                pool.remove_upstream(a.origin)
                assert pool.upstreams == [b.origin]
                assert pool.get_upstream(a.origin) is None
                # Through a local: asserting on ``removed.closed`` itself would leave mypy
                # holding it narrowed to False at the later check that it closed.
                still_open = not removed.closed
                assert still_open  # its request is still running
                assert pool.statistics().running == 1
                bodies = [(await pool.request("GET", "/")).body for _ in range(2)]
                assert bodies == [b"B", b"B"]
                pool.add_upstream(c.origin)
                pool.add_upstream(a.origin)  # again: a new Pool, at the end
                assert pool.upstreams == [b.origin, c.origin, a.origin]
                await settle()
                bodies = [(await pool.request("GET", "/")).body for _ in range(3)]
                assert sorted(bodies) == [b"A", b"B", b"C"]
                gate.open()
            assert results == [b"A"]
            await settle()
            assert removed.closed
            assert pool.get_upstream(a.origin) is not removed
            assert_idle(pool)


async def test_removing_the_last_capable_upstream_fails_its_waiters() -> None:
    gate = Gate()
    async with servers(gate, "A", "B") as (a, b):
        async with BalancedPool([], connections=1) as pool:
            pool.add_upstream(a.origin, capabilities=["write"])
            pool.add_upstream(b.origin, capabilities=["read"])
            errors: list[BaseException] = []

            async def write(path: str) -> None:
                try:
                    await pool.request("POST", path, capability="write")
                except TrioPoolError as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write, "/slow")  # running on A
                nursery.start_soon(write, "/slow")  # queued in A's Pool
                await settle()
                nursery.start_soon(write, "/")  # waits here
                await settle()
                assert pool.statistics().queued == 2
                # Reads are not held up behind the waiting write.
                assert (await pool.request("GET", "/", capability="read")).body == b"B"
                pool.remove_upstream(a.origin)
                await settle()
                assert len(errors) == 1
                assert isinstance(errors[0], BalancedPoolMissingUpstreamError)
                assert "'write'" in str(errors[0])
                gate.open()
            assert len(errors) == 1  # the two already on A finished
            assert_idle(pool)


async def test_an_upstream_whose_pool_was_closed_is_replaced_when_added_again() -> None:
    gate = Gate()
    async with servers(gate, "A", "B") as (a, b):
        async with BalancedPool([a.origin, b.origin]) as pool:
            first = pool.get_upstream(a.origin)
            assert first is not None
            await first.destroy()
            assert pool.upstreams == [b.origin]
            assert pool.get_upstream(a.origin) is None
            assert [(await pool.request("GET", "/")).body for _ in range(2)] == [b"B", b"B"]
            pool.add_upstream(a.origin)
            await settle()
            second = pool.get_upstream(a.origin)
            assert second is not None
            assert second is not first
            assert pool.upstreams == [b.origin, a.origin]
            bodies = sorted([(await pool.request("GET", "/")).body for _ in range(2)])
            assert bodies == [b"A", b"B"]


async def test_a_pool_that_cannot_be_entered_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    gate = Gate()
    async with servers(gate, "A") as (a,), Pool("http://127.0.0.1:9") as used:

        def factory(origin: str, **options: object) -> Pool:
            return used if origin == used_origin else Pool(origin)

        used_origin = "http://127.0.0.1:9"
        async with BalancedPool([a.origin, used_origin], factory=factory) as pool:
            assert pool.upstreams == [a.origin]
            assert (await pool.request("GET", "/")).body == b"A"
        assert "could not be entered" in caplog.text
        with pytest.raises(InvalidArgumentError, match="factory"):
            BalancedPool([a.origin, "http://127.0.0.1:10"], factory=lambda o, **k: used)
        await used.close()
        with pytest.raises(InvalidArgumentError, match="factory"):
            BalancedPool(a.origin, factory=lambda o, **k: used)


async def test_an_upstream_added_in_the_block_serves_the_waiters() -> None:
    gate = Gate()
    async with servers(gate, "A", "B") as (a, b):
        async with BalancedPool(a.origin, connections=1) as pool:
            results: list[bytes] = []

            async def get(path: str) -> None:
                results.append((await pool.request("GET", path)).body)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(get, "/slow")  # running on A
                await settle()
                nursery.start_soon(get, "/slow")  # queued in A's Pool
                await settle()
                nursery.start_soon(get, "/")  # waits here
                await settle()
                assert pool.statistics().queued == 2
                pool.add_upstream(b.origin)
                await settle()
                assert results == [b"B"]
                gate.open()
            assert sorted(results) == [b"A", b"A", b"B"]
            assert_idle(pool)


async def test_cancelled_while_its_pools_are_being_entered() -> None:
    # Pool is final; a test subclass is the one way to make entering a Pool hang.
    class SlowPool(Pool):  # type: ignore[misc]
        async def __aenter__(self) -> SlowPool:
            await trio.sleep_forever()  # the holder is stuck entering it

    pool = BalancedPool("http://127.0.0.1:9", factory=SlowPool)
    scope = trio.CancelScope()

    async def enter() -> None:
        with scope:
            async with pool:
                pass  # pragma: no cover

    async with trio.open_nursery() as nursery:
        nursery.start_soon(enter)
        await settle()
        scope.cancel()
    assert scope.cancelled_caught
    assert pool.closed
    assert pool.destroyed
