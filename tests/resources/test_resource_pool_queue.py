"""The waiters' queue: FIFO order, max_requests, request_timeout, and cancellation of a
waiter at each point of its wait (the hand-off races of aiohttp#9670 / asyncpg#467)."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing
from resource_fakes import (
    FORMS,
    AllocationError,
    FakeBackend,
    Holder,
    idle_values,
    make_pool,
    quiet,
    snapshot,
    start_holders,
)

import trio_pool
from trio_pool import PoolFullError, RequestTimeoutError


@pytest.mark.parametrize("form", FORMS)
async def test_waiters_are_served_in_arrival_order(form: str) -> None:
    backend = FakeBackend()
    order: list[str] = []
    names = [f"w{i}" for i in range(8)]
    async with make_pool(backend, form, max=1) as pool:
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            holders = await start_holders(nursery, pool, names, order)
            assert pool.statistics().queued == len(names)
            pool.release(held)
            for holder in holders:
                await quiet()
                assert holder.state == "holding", holder
                holder.release()
        assert order == names
        assert len(backend.created) == 1
        assert snapshot(pool) == idle_values(1)


async def test_waiters_are_served_in_arrival_order_across_several_resources() -> None:
    backend = FakeBackend()
    names = [f"w{i}" for i in range(9)]
    async with make_pool(backend, max=3) as pool:
        held = [await pool.checkout() for _ in range(3)]
        async with trio.open_nursery() as nursery:
            holders = await start_holders(nursery, pool, names)
            for resource in held:
                pool.release(resource)
            await quiet()
            # Tasks woken together run in any order; the assignment is what is FIFO.
            assert [h.state for h in holders[:4]] == ["holding"] * 3 + ["waiting"]
            assert [h.resource for h in holders[:3]] == held
            for index, holder in enumerate(holders):
                given_back = holder.resource
                holder.release()
                await quiet()
                if index + 3 < len(holders):
                    assert holders[index + 3].resource is given_back
                    assert all(h.state == "waiting" for h in holders[index + 4 :])
        assert len(backend.created) == 3


async def test_released_resource_goes_to_the_oldest_waiter_not_a_newcomer() -> None:
    backend = FakeBackend()
    order: list[str] = []
    async with make_pool(backend, max=1) as pool:
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            [old] = await start_holders(nursery, pool, ["old"], order)
            pool.release(held)
            # The newcomer arrives before the old waiter has had a chance to run.
            newcomer = Holder(pool, "new", order)
            nursery.start_soon(newcomer.run)
            await quiet()
            assert order == ["old"]
            assert newcomer.state == "waiting"
            old.release()
            await quiet()
            newcomer.release()
        assert order == ["old", "new"]


async def test_new_acquirer_waits_behind_queued_ones_even_when_a_slot_is_free(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Queued acquirers waiting for an allocation are not overtaken by later arrivals."""
    backend = FakeBackend(acquire_delay=1.0)
    order: list[str] = []
    async with make_pool(backend, max=1) as pool:
        async with trio.open_nursery() as nursery:
            holders = await start_holders(nursery, pool, ["a", "b", "c"], order)
            for holder in holders:
                await holder.done.wait()
                holder.release()
        assert order == ["a", "b", "c"]


# --------------------------------------------------------------------------- max_requests


async def test_max_requests_overflow_raises_pool_full_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1, max_requests=2) as pool:
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            waiters = await start_holders(nursery, pool, ["a", "b"])
            assert pool.statistics().queued == 2
            start = trio.current_time()
            with pytest.raises(PoolFullError, match="Pool is full"):
                await pool.checkout()
            with pytest.raises(PoolFullError):
                async with pool.acquire():
                    pass
            assert trio.current_time() == start
            assert pool.statistics().queued == 2
            pool.release(held)
            for waiter in waiters:
                await quiet()
                waiter.release()
        assert [w.state for w in waiters] == ["released", "released"]
        assert snapshot(pool) == idle_values(1)


async def test_max_requests_frees_up_as_waiters_are_served() -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1, max_requests=1) as pool:
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            [first] = await start_holders(nursery, pool, ["first"])
            with pytest.raises(PoolFullError):
                await pool.checkout()
            pool.release(held)
            await quiet()
            assert first.state == "holding"
            [second] = await start_holders(nursery, pool, ["second"])
            assert second.state == "waiting"
            first.release()
            await quiet()
            second.release()


async def test_max_requests_zero_serves_idle_resources_but_nobody_may_wait() -> None:
    backend = FakeBackend()
    async with make_pool(backend, min=1, max=1, max_requests=0) as pool:
        await quiet()
        resource = await pool.checkout()
        with pytest.raises(PoolFullError):
            await pool.checkout()
        pool.release(resource)
        assert await pool.checkout() is resource
        pool.release(resource)


async def test_max_requests_counts_waiters_whose_allocation_is_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(acquire_delay=5.0)
    async with make_pool(backend, max=5, max_requests=2) as pool:
        async with trio.open_nursery() as nursery:
            holders = await start_holders(nursery, pool, ["a", "b"])
            assert pool.statistics().queued == 2
            with pytest.raises(PoolFullError):
                await pool.checkout()
            await trio.sleep(6)
            for holder in holders:
                assert holder.state == "holding"
                holder.release()


# --------------------------------------------------------------------------- request_timeout


async def test_request_timeout_raises_request_timeout_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1, request_timeout=5.0) as pool:
        held = await pool.checkout()
        start = trio.current_time()
        with pytest.raises(RequestTimeoutError) as info:
            await pool.checkout()
        assert trio.current_time() - start == pytest.approx(5.0)
        assert isinstance(info.value, trio.TooSlowError)
        assert isinstance(info.value, trio_pool.TrioPoolError)
        assert pool.statistics().queued == 0
        pool.release(held)
        assert snapshot(pool) == idle_values(1)


async def test_request_timeout_also_bounds_acquire_context_manager(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1, request_timeout=2.0) as pool:
        held = await pool.checkout()
        with pytest.raises(RequestTimeoutError):
            async with pool.acquire():
                pytest.fail("should not get a resource")  # pragma: no cover
        pool.release(held)


async def test_request_timeout_covers_a_slow_allocation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(acquire_delay=20.0)
    async with make_pool(backend, request_timeout=5.0, acquire_timeout=60.0) as pool:
        start = trio.current_time()
        with pytest.raises(RequestTimeoutError):
            await pool.checkout()
        assert trio.current_time() - start == pytest.approx(5.0)
        # The allocation continues for the pool and ends up idle.
        await trio.sleep(20)
        assert snapshot(pool) == idle_values(1)
        assert backend.peak_outstanding == 1


async def test_request_timeout_does_not_fire_when_served_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1, request_timeout=5.0) as pool:
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            [waiter] = await start_holders(nursery, pool, ["w"])
            await trio.sleep(4.9)
            pool.release(held)
            await quiet()
            assert waiter.state == "holding"
            # Holding the resource past the request timeout is fine.
            await trio.sleep(10)
            waiter.release()
        assert waiter.error is None


# --------------------------------------------------------------------------- cancellation


async def test_cancelled_waiter_leaves_no_trace(autojump_clock: trio.testing.MockClock) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1) as pool:
        held = await pool.checkout()
        with trio.move_on_after(3) as scope:
            await pool.checkout()
        assert scope.cancelled_caught
        assert pool.statistics().queued == 0
        pool.release(held)
        await quiet()
        assert snapshot(pool) == idle_values(1)
        assert await pool.checkout() is held
        pool.release(held)


async def test_cancelled_waiter_in_the_middle_of_the_queue_is_skipped() -> None:
    backend = FakeBackend()
    order: list[str] = []
    async with make_pool(backend, max=1) as pool:
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            a, b, c = await start_holders(nursery, pool, ["a", "b", "c"], order)
            b.scope.cancel()
            await quiet()
            assert b.state == "cancelled"
            assert pool.statistics().queued == 2
            pool.release(held)
            await quiet()
            a.release()
            await quiet()
            c.release()
        assert order == ["a", "c"]
        assert snapshot(pool) == idle_values(1)


async def test_hand_off_to_a_waiter_cancelled_at_that_instant_goes_to_the_next_waiter() -> None:
    """Cancel waiter A's scope and release in one synchronous step: B gets the resource."""
    backend = FakeBackend()
    async with make_pool(backend, max=1) as pool:
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            a, b = await start_holders(nursery, pool, ["a", "b"])
            a.scope.cancel()
            pool.release(held)  # no checkpoint in between
            await quiet()
            assert (a.state, b.state) == ("cancelled", "holding")
            assert b.resource is held
            b.release()
        assert snapshot(pool) == idle_values(1)
        assert len(backend.created) == 1


async def test_release_then_cancel_of_the_first_waiter_loses_nothing() -> None:
    """Release hands the resource to A, then A's scope is cancelled before A runs. Either A
    keeps it (its checkout had completed) or it passes to B; it is never lost."""
    backend = FakeBackend()
    async with make_pool(backend, max=1) as pool:
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            a, b = await start_holders(nursery, pool, ["a", "b"])
            pool.release(held)
            a.scope.cancel()  # no checkpoint in between
            await quiet()
            if a.state == "holding":
                assert (a.resource, b.state) == (held, "waiting")
                a.release()
                await quiet()
            else:
                assert a.state == "cancelled"
            assert b.state == "holding"
            assert b.resource is held
            b.release()
        assert snapshot(pool) == idle_values(1)
        assert len(backend.created) == 1


async def test_hand_off_to_the_only_waiter_cancelled_at_that_instant_goes_idle() -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1) as pool:
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            [a] = await start_holders(nursery, pool, ["a"])
            pool.release(held)
            a.scope.cancel()
            await quiet()
            if a.state == "holding":  # pragma: no cover - checkout completed first
                a.release()
        assert snapshot(pool) == idle_values(1)
        async with pool.acquire() as resource:
            assert resource is held


async def test_cancelling_the_waiter_that_triggered_an_allocation_gives_it_to_the_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(acquire_delay=5.0)
    async with make_pool(backend, max=1) as pool:
        async with trio.open_nursery() as nursery:
            [a] = await start_holders(nursery, pool, ["a"])
            await trio.sleep(1)
            [b] = await start_holders(nursery, pool, ["b"])
            await trio.sleep(1)
            a.scope.cancel()
            await quiet()
            assert a.state == "cancelled"
            assert pool.statistics().queued == 1
            assert pool.statistics().allocated == 1
            await trio.sleep(3.5)
            assert b.state == "holding"
            assert b.got_at == pytest.approx(5.0, abs=0.01)
            assert b.resource is backend.created[0]
            b.release()
        assert len(backend.attempts) == 1
        assert backend.peak_outstanding == 1
        assert snapshot(pool) == idle_values(1)


async def test_cancelling_the_only_waiter_during_allocation_leaves_the_resource_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(acquire_delay=5.0)
    async with make_pool(backend, max=1) as pool:
        with trio.move_on_after(2):
            await pool.checkout()
        assert pool.statistics().queued == 0
        await trio.sleep(4)
        assert snapshot(pool) == idle_values(1)
        async with pool.acquire() as resource:
            assert resource is backend.created[0]
        assert len(backend.attempts) == 1


@pytest.mark.parametrize("form", FORMS)
async def test_cancelled_acquires_at_every_await_point_leave_the_pool_idle(
    form: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Cancel an acquire while queued, while its allocation runs, and while its ping runs;
    each time the statistics return to idle values and the next acquire succeeds."""
    backend = FakeBackend()
    async with make_pool(backend, form, ping=True, max=1, ping_timeout=50.0) as pool:
        # 1. while queued
        held = await pool.checkout()
        with trio.move_on_after(1):
            await pool.checkout()
        pool.release(held)
        await quiet()
        assert snapshot(pool) == idle_values(1)

        # 2. while its allocation runs
        resource = await pool.checkout()
        backend.note_removed(resource)
        pool.remove(resource)
        backend.acquire_delay = 5.0
        with trio.move_on_after(1):
            await pool.checkout()
        await trio.sleep(5)
        assert snapshot(pool) == idle_values(1)
        backend.acquire_delay = 0.0

        # 3. while its ping runs
        [idle] = backend.alive_resources
        idle.ping_hangs = True
        with trio.move_on_after(1):
            await pool.checkout()
        await quiet()
        assert pool.statistics().queued == 0
        assert pool.statistics().allocated == pool.statistics().available

        async with pool.acquire() as resource:
            assert resource.alive
            assert not resource.ping_hangs
        assert pool.statistics().queued == 0
        assert backend.peak_outstanding == 1


async def test_allocation_done_for_a_waiter_cancelled_at_that_instant_serves_the_next() -> None:
    """The allocation callback itself cancels waiter A just before returning the resource
    (no checkpoint in between): B, the next waiter, gets it."""
    gate = trio.Event()
    waiters: list[Holder] = []

    async def cancel_first_waiter_then_succeed(attempt: int) -> None:
        await gate.wait()
        waiters[0].scope.cancel()

    backend = FakeBackend(attempt_hook=cancel_first_waiter_then_succeed)
    async with make_pool(backend, max=1) as pool:
        async with trio.open_nursery() as nursery:
            waiters.extend(await start_holders(nursery, pool, ["a", "b"]))
            a, b = waiters
            assert backend.in_flight == 1
            gate.set()
            await quiet()
            assert (a.state, b.state) == ("cancelled", "holding")
            assert b.resource is backend.created[0]
            b.release()
        assert snapshot(pool) == idle_values(1)
        assert len(backend.created) == 1


async def test_request_timeout_during_an_allocation_outage_chains_the_last_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # issue 12 item 13: "database down" and "pool exhausted" must not look alike.
    backend = FakeBackend(fail_always=True)
    async with make_pool(backend, max=2, request_timeout=5.0, bail_after=None) as pool:
        with pytest.raises(RequestTimeoutError) as info:
            await pool.checkout()
        assert isinstance(info.value.__cause__, AllocationError)
        assert snapshot(pool)["queued"] == 0
        backend.fail_always = False
        with trio.fail_after(60):  # the backoff retries; the next creation succeeds
            async with pool.acquire():
                pass


async def test_request_timeout_of_an_exhausted_pool_has_no_cause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1, request_timeout=5.0) as pool:
        async with pool.acquire():
            with pytest.raises(RequestTimeoutError) as info:
                await pool.checkout()
            assert info.value.__cause__ is None
        assert snapshot(pool) == idle_values(1)
