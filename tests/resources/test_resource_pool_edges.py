"""Edge cases: option defaults and "0 disables", late allocations during shutdown, pings
failing under load, max_requests with cancellation, bail_after measured from the start of
the block, and end() on a pool with ``min``."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from resource_fakes import (
    FORMS,
    FakeBackend,
    FakeResource,
    idle_values,
    make_pool,
    quiet,
    snapshot,
    start_holders,
)
from trio.testing import MockClock

from trio_pool import (
    Backoff,
    Cluster,
    InvalidArgumentError,
    PoolBailedError,
    PoolFullError,
    RequestTimeoutError,
    ResourcePool,
    TrioPoolError,
)

# --------------------------------------------------------------------------- defaults


async def test_default_acquire_timeout_is_30_seconds(autojump_clock: MockClock) -> None:
    backend = FakeBackend(acquire_hangs=True)
    async with make_pool(backend) as pool:
        with pytest.raises(PoolBailedError):
            await pool.checkout()
        assert trio.current_time() == pytest.approx(30.0)


async def test_default_ping_timeout_is_10_seconds(autojump_clock: MockClock) -> None:
    backend = FakeBackend()
    async with make_pool(backend, ping=True) as pool:
        async with pool.acquire() as stuck:
            stuck.ping_hangs = True
        start = trio.current_time()
        async with pool.acquire() as resource:
            assert resource is not stuck
        assert trio.current_time() - start == pytest.approx(10.0)


async def test_default_dispose_timeout_is_30_seconds(autojump_clock: MockClock) -> None:
    backend = FakeBackend()
    async with make_pool(backend) as pool:
        resource = await pool.checkout()
        resource.dispose_hangs = True
        pool.remove(resource)
        await trio.sleep(29.9)
        assert backend.destroyed == []
        await trio.sleep(0.2)
        assert backend.destroyed == [resource]


async def test_default_request_timeout_is_unlimited(autojump_clock: MockClock) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1) as pool:
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            [waiter] = await start_holders(nursery, pool, ["w"])
            await trio.sleep(10_000)
            assert waiter.state == "waiting"
            pool.release(held)
        waiter.release()


async def test_default_idle_timeout_and_sync_interval(autojump_clock: MockClock) -> None:
    backend = FakeBackend()
    async with make_pool(backend) as pool:
        async with pool.acquire():
            pass
        await trio.sleep(59)
        assert snapshot(pool) == idle_values(1)
        await trio.sleep(60 + 10 + 1 - 59)
        assert snapshot(pool) == idle_values(0)


# --------------------------------------------------------------------------- 0 disables


async def test_acquire_timeout_zero_disables_it(autojump_clock: MockClock) -> None:
    backend = FakeBackend(acquire_delay=500.0)
    async with make_pool(backend, acquire_timeout=0) as pool:
        async with pool.acquire() as resource:
            assert trio.current_time() == pytest.approx(500.0)
            assert resource is backend.created[0]


async def test_ping_timeout_zero_disables_it(autojump_clock: MockClock) -> None:
    backend = FakeBackend()

    async def slow_ping(resource: FakeResource) -> None:
        await trio.sleep(100)

    pool = ResourcePool(backend.acquire, backend.dispose, ping=slow_ping, ping_timeout=0)
    async with pool:
        async with pool.acquire() as first:
            pass
        async with pool.acquire() as second:
            assert second is first
        assert backend.closed == []


async def test_dispose_timeout_zero_disables_it(autojump_clock: MockClock) -> None:
    backend = FakeBackend()

    async def slow_dispose(resource: FakeResource) -> None:
        await trio.sleep(500)
        await backend.dispose(resource)

    pool = ResourcePool(backend.acquire, slow_dispose, destroy=backend.destroy, dispose_timeout=0)
    async with pool:
        resource = await pool.checkout()
        pool.remove(resource)
        await trio.sleep(501)
        assert backend.disposed == [resource]
        assert backend.destroyed == []


async def test_request_timeout_zero_disables_it(autojump_clock: MockClock) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1, request_timeout=0) as pool:
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            [waiter] = await start_holders(nursery, pool, ["w"])
            await trio.sleep(1000)
            assert waiter.state == "waiting"
            pool.release(held)
        waiter.release()


# --------------------------------------------------------------------------- late allocations


async def test_a_late_allocation_finishing_after_end_began_is_disposed(
    autojump_clock: MockClock,
) -> None:
    backend = FakeBackend(late_delays=[5.0])
    async with make_pool(backend, min=1) as pool:
        await quiet()
        assert backend.in_flight == 1
        assert await pool.end() == []
        assert len(backend.created) == 1
        assert backend.alive_resources == []
        assert backend.dispose_finished == backend.created
        assert backend.destroyed == []


async def test_a_late_allocation_finishing_after_an_exceptional_exit_is_not_leaked(
    autojump_clock: MockClock,
) -> None:
    backend = FakeBackend(late_delays=[5.0])
    with pytest.raises(KeyError):
        async with make_pool(backend, min=1):
            await quiet()
            raise KeyError("boom")
    assert len(backend.created) == 1
    assert backend.alive_resources == []


async def test_a_pool_does_not_refill_min_once_ending(autojump_clock: MockClock) -> None:
    backend = FakeBackend()
    async with make_pool(backend, min=2, sync_interval=1.0) as pool:
        await quiet()
        assert await pool.end() == []
        await trio.sleep(100)
        assert len(backend.attempts) == 2
        assert backend.alive_resources == []


@pytest.mark.parametrize("operation", ["release", "remove", "destroy"])
async def test_giving_back_the_last_checked_out_resource_lets_end_finish(
    operation: str, autojump_clock: MockClock
) -> None:
    """end() waits for checked-out resources; removing or destroying one counts as giving it
    back, exactly like releasing it."""
    backend = FakeBackend()
    async with make_pool(backend) as pool:
        resource = await pool.checkout()
        with trio.fail_after(100):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool.end)
                await trio.sleep(3)
                getattr(pool, operation)(resource)
        assert trio.current_time() == pytest.approx(3.0)
        assert backend.closed == [resource]


async def test_cancelling_the_user_block_of_acquire_leaves_the_pool_consistent(
    autojump_clock: MockClock,
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1) as pool:
        with trio.move_on_after(1):
            async with pool.acquire():
                await trio.sleep_forever()
        await quiet()
        stats = pool.statistics()
        assert stats.queued == 0
        assert stats.allocated == stats.available
        with trio.fail_after(1):
            async with pool.acquire():
                pass


# --------------------------------------------------------------------------- load with pings


@pytest.mark.parametrize("form", FORMS)
async def test_allocated_never_exceeds_max_when_pings_fail_under_load(
    form: str, autojump_clock: MockClock
) -> None:
    backend = FakeBackend(acquire_delay=0.2)
    rng = random.Random(99)
    samples: list[int] = []
    served = 0
    async with make_pool(backend, form, ping=True, max=3) as pool:

        async def user() -> None:
            nonlocal served
            await trio.sleep(rng.random() * 3)
            async with pool.acquire() as resource:
                assert resource.alive
                samples.append(pool.statistics().allocated)
                await trio.sleep(rng.random())
                if rng.random() < 0.4:
                    resource.alive = False  # its next ping fails
            served += 1

        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(user)
            while served < 40:
                samples.append(pool.statistics().allocated)
                await trio.sleep(0.05)
        assert max(samples) <= 3
        assert backend.peak_outstanding <= 3
        await quiet()
        stats = pool.statistics()
        assert (stats.queued, stats.allocated) == (0, stats.available)
        assert len(backend.alive_resources) == stats.available


# --------------------------------------------------------------------------- max_requests


async def test_a_cancelled_waiter_frees_its_max_requests_place() -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1, max_requests=1) as pool:
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            [first] = await start_holders(nursery, pool, ["first"])
            with pytest.raises(PoolFullError):
                await pool.checkout()
            first.scope.cancel()
            await quiet()
            [second] = await start_holders(nursery, pool, ["second"])
            assert second.state == "waiting"
            pool.release(held)
            await quiet()
            assert second.resource is held
            second.release()


async def test_a_timed_out_waiter_frees_its_max_requests_place(autojump_clock: MockClock) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1, max_requests=1, request_timeout=2.0) as pool:
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            [first] = await start_holders(nursery, pool, ["first"])
            await trio.sleep(3)
            assert first.state == "failed"
            [second] = await start_holders(nursery, pool, ["second"])
            assert second.state == "waiting"
            pool.release(held)
            await quiet()
            second.release()


# --------------------------------------------------------------------------- bail_after


async def test_bail_after_is_measured_from_entering_the_block(autojump_clock: MockClock) -> None:
    backend = FakeBackend(fail_always=True)
    pool = make_pool(backend, bail_after=10.0, backoff=Backoff(min=1.0, max=1.0))
    await trio.sleep(100)  # constructed long before it is entered
    async with pool:
        entered = trio.current_time()
        with pytest.raises(PoolBailedError):
            await pool.checkout()
        assert trio.current_time() - entered >= 10.0
        assert len(backend.attempts) > 5


async def test_a_bailed_pool_still_ends_cleanly(autojump_clock: MockClock) -> None:
    backend = FakeBackend(fail_always=True)
    async with make_pool(backend) as pool:
        with pytest.raises(PoolBailedError):
            await pool.checkout()
        with trio.fail_after(10):
            assert await pool.end() == []
    assert backend.in_flight == 0


async def test_pool_errors_do_not_leak_other_exception_types(autojump_clock: MockClock) -> None:
    """Everything an acquire raises because of the pool derives from TrioPoolError."""
    backend = FakeBackend(fail_always=True)
    async with make_pool(backend) as pool:
        with pytest.raises(TrioPoolError):
            await pool.checkout()


@pytest.mark.parametrize("operation", ["remove", "destroy"])
async def test_removing_a_resource_serves_a_queued_waiter_with_a_new_one(operation: str) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1) as pool:
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            [waiter] = await start_holders(nursery, pool, ["w"])
            getattr(pool, operation)(held)
            await quiet()
            assert waiter.state == "holding"
            assert waiter.resource is not held
            waiter.release()
        assert snapshot(pool) == idle_values(1)
        assert backend.closed == [held]


# --------------------------------------------------------------------------- more races


async def test_an_acquirer_whose_ping_failed_takes_the_next_released_resource_first(
    autojump_clock: MockClock,
) -> None:
    """A's ping fails and a replacement is being allocated; meanwhile another resource is
    released: A (head of the queue) gets it, and B gets the replacement."""
    backend = FakeBackend()
    async with make_pool(backend, ping=True, max=2) as pool:
        r0, r1 = await pool.checkout(), await pool.checkout()
        backend.acquire_delay = 5.0
        async with trio.open_nursery() as nursery:
            a, b = await start_holders(nursery, pool, ["a", "b"])
            r0.alive = False
            pool.release(r0)
            await trio.sleep(1)
            assert (a.state, b.state) == ("waiting", "waiting")
            pool.release(r1)
            await quiet()
            assert (a.state, b.state) == ("holding", "waiting")
            assert a.resource is r1
            await trio.sleep(5)
            assert b.state == "holding"
            assert b.resource is backend.created[2]
            a.release()
            b.release()
        assert backend.gracefully_closed == [r0]


async def test_request_timeout_during_a_slow_ping_raises_request_timeout(
    autojump_clock: MockClock,
) -> None:
    backend = FakeBackend()
    slow = False

    async def slow_ping(resource: FakeResource) -> None:
        if slow:
            await trio.sleep(10)

    pool = ResourcePool(
        backend.acquire, backend.dispose, ping=slow_ping, ping_timeout=20, request_timeout=5
    )
    async with pool:
        resource = await pool.checkout()
        pool.release(resource)
        slow = True
        start = trio.current_time()
        with pytest.raises(RequestTimeoutError):
            await pool.checkout()
        assert trio.current_time() - start == pytest.approx(5.0)
        await quiet()
        stats = pool.statistics()
        assert (stats.queued, stats.allocated) == (0, stats.available)
        assert len(backend.alive_resources) == stats.available


async def test_request_timeout_at_the_instant_of_release_loses_nothing(
    autojump_clock: MockClock,
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1, request_timeout=5.0) as pool:
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            [waiter] = await start_holders(nursery, pool, ["w"])
            await trio.sleep_until(5.0)
            pool.release(held)
            await quiet()
            if waiter.state == "holding":
                waiter.release()
            else:
                assert isinstance(waiter.error, RequestTimeoutError)
        assert snapshot(pool) == idle_values(1)


async def test_backoff_restarts_after_a_success(autojump_clock: MockClock) -> None:
    backend = FakeBackend(fail_next=2)
    async with make_pool(backend, bail_after=None, backoff=Backoff(min=1.0, max=10.0)) as pool:
        resource = await pool.checkout()
        assert backend.attempts == pytest.approx([0.0, 1.0, 2.0])
        await trio.sleep_until(100)
        backend.fail_next = 2
        pool.remove(resource)
        async with pool.acquire():
            pass
        assert backend.attempts[3:] == pytest.approx([100.0, 101.0, 102.0])


async def test_cancelled_cluster_acquire_leaves_no_trace(autojump_clock: MockClock) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1) as pool:
        cluster = Cluster([pool])
        held = await pool.checkout()
        with trio.move_on_after(2):
            async with cluster.acquire():
                pytest.fail("unreachable")  # pragma: no cover
        assert pool.statistics().queued == 0
        pool.release(held)
        assert snapshot(pool) == idle_values(1)


# --------------------------------------------------------------------------- destroy callback


async def test_no_destroy_callback_is_fine_when_dispose_times_out(
    autojump_clock: MockClock,
) -> None:
    backend = FakeBackend()
    pool = ResourcePool(backend.acquire, backend.dispose, dispose_timeout=5.0)
    async with pool:
        resource = await pool.checkout()
        resource.dispose_hangs = True
        pool.remove(resource)
        await trio.sleep(10)
        async with pool.acquire() as fresh:
            assert fresh is not resource
        other = await pool.checkout()
        pool.destroy(other)
        assert pool.statistics().allocated == 0


async def test_a_raising_destroy_callback_in_the_background_does_not_crash_the_pool(
    autojump_clock: MockClock,
) -> None:
    backend = FakeBackend()

    def bad_destroy(resource: FakeResource) -> None:
        backend.destroy(resource)
        raise RuntimeError("destroy failed")

    pool = ResourcePool(backend.acquire, backend.dispose, destroy=bad_destroy, dispose_timeout=5.0)
    async with pool:
        resource = await pool.checkout()
        resource.dispose_hangs = True
        pool.remove(resource)
        await trio.sleep(10)
        assert backend.destroyed == [resource]
        async with pool.acquire() as fresh:
            assert fresh is not resource


async def test_leaving_with_an_exception_destroys_a_resource_whose_dispose_is_running(
    autojump_clock: MockClock,
) -> None:
    """The destroy callback is the last resort for a resource whose dispose was cut short."""
    backend = FakeBackend()
    with pytest.raises(KeyError):
        async with make_pool(backend) as pool:
            resource = await pool.checkout()
            resource.dispose_hangs = True
            pool.remove(resource)
            await trio.sleep(1)
            raise KeyError("boom")
    assert trio.current_time() == pytest.approx(1.0)
    assert backend.destroyed == [resource]


# --------------------------------------------------------------------------- open= form, logging


async def test_open_context_manager_enters_and_exits_in_one_pool_owned_task() -> None:
    """With ``open=``, the resource lives in its own task: its context manager is entered
    and exited by that task, never by the acquirer's."""
    backend = FakeBackend()
    tasks: dict[str, object] = {}

    @asynccontextmanager
    async def open_resource() -> AsyncIterator[FakeResource]:
        tasks["enter"] = trio.lowlevel.current_task()
        async with backend.open() as resource:
            yield resource
        tasks["exit"] = trio.lowlevel.current_task()

    async with ResourcePool(open=open_resource) as pool:
        async with pool.acquire() as resource:
            assert resource is backend.created[0]
        pool.remove(await pool.checkout())
        await quiet()
    me = trio.lowlevel.current_task()
    assert tasks["enter"] is tasks["exit"]
    assert tasks["enter"] is not me


async def test_lifecycle_is_logged_at_debug_and_nothing_is_printed(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = FakeBackend()
    with caplog.at_level(logging.DEBUG, logger="trio_pool"):
        async with make_pool(backend) as pool:
            resource = await pool.checkout()
            pool.remove(resource)
            await quiet()
    records = [r for r in caplog.records if r.name.startswith("trio_pool.resource")]
    assert records, [r.name for r in caplog.records]
    assert {r.levelno for r in records} == {logging.DEBUG}
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "")


async def test_an_acquirer_whose_ping_fails_while_the_pool_is_ending_is_still_served(
    autojump_clock: MockClock,
) -> None:
    """A is already acquiring (its ping of an idle resource is running) when end() starts;
    the ping fails, so A waits again for a replacement. A was accepted before end(), so it
    is served (decision 8) and end() finishes after A gives the resource back; A is never
    left parked in a pool that has shut down."""
    backend = FakeBackend()
    dead: list[FakeResource] = []

    async def ping(resource: FakeResource) -> None:
        if resource in dead:
            await trio.sleep(1)
            raise RuntimeError("dead")

    pool = ResourcePool(backend.acquire, backend.dispose, destroy=backend.destroy, ping=ping)
    async with pool:
        stale = await pool.checkout()
        pool.release(stale)
        dead.append(stale)
        backend.acquire_delay = 0.25  # the replacement takes a moment to create
        got: list[FakeResource] = []

        async def acquirer() -> None:
            resource = await pool.checkout()
            got.append(resource)
            await trio.sleep(2)
            pool.release(resource)

        with trio.fail_after(100):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(acquirer)
                await trio.sleep(0.5)  # A is mid-ping
                assert await pool.end() == []
        assert len(got) == 1
        assert got[0] is not stale
        assert backend.alive_resources == []


async def test_resources_are_tracked_by_identity_not_equality_or_hash() -> None:
    """Resources may be unhashable and compare equal (here: empty lists)."""
    created: list[list[int]] = []
    disposed: list[list[int]] = []

    async def acquire() -> list[int]:
        resource: list[int] = []
        created.append(resource)
        return resource

    async def dispose(resource: list[int]) -> None:
        disposed.append(resource)

    async with ResourcePool(acquire, dispose, max=2) as pool:
        first = await pool.checkout()
        second = await pool.checkout()
        assert first is not second
        pool.release(first)
        with pytest.raises(InvalidArgumentError):
            pool.release(first)  # equal to `second`, but not checked out
        assert snapshot(pool) == {"allocated": 2, "available": 1, "queued": 0}
        pool.remove(second)
        await quiet()
        assert len(disposed) == 1
        assert disposed[0] is second
    assert len(disposed) == 2
    assert disposed[1] is first


async def test_entering_a_pool_twice_raises_a_trio_pool_error() -> None:
    """Every error the library raises derives from TrioPoolError (API.md section 0)."""
    pool = make_pool(FakeBackend())
    async with pool:
        with pytest.raises(TrioPoolError):
            async with pool:
                pytest.fail("entered twice")  # pragma: no cover
    with pytest.raises(TrioPoolError):
        async with pool:
            pytest.fail("entered after exit")  # pragma: no cover
