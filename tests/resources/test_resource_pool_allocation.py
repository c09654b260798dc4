"""Allocation: ``max`` under load and under timeouts, ``min`` filling and refilling, idle
eviction, the backoff schedule of failed allocations, and ``bail_after``."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from resource_fakes import (
    FORMS,
    AllocationError,
    FakeBackend,
    FakeResource,
    ResourceDiedError,
    idle_values,
    make_pool,
    quiet,
    snapshot,
    start_holders,
)
from trio.testing import MockClock

import trio_pool
from trio_pool import AcquireTimeoutError, Backoff, PoolBailedError, TrioPoolError


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


# --------------------------------------------------------------------------- max


@pytest.mark.parametrize("form", FORMS)
async def test_allocated_never_exceeds_max_under_load(form: str, autojump_clock: MockClock) -> None:
    backend = FakeBackend(acquire_delay=0.3)
    rng = random.Random(1234)
    seen_allocated: list[int] = []
    served = 0
    async with make_pool(backend, form, max=3) as pool:

        async def user() -> None:
            nonlocal served
            await trio.sleep(rng.random())
            async with pool.acquire():
                seen_allocated.append(pool.statistics().allocated)
                await trio.sleep(rng.random())
            served += 1

        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(user)
            while served < 40:
                seen_allocated.append(pool.statistics().allocated)
                await trio.sleep(0.05)
        assert max(seen_allocated) <= 3
        assert backend.peak_outstanding <= 3
        assert len(backend.created) == 3
        assert snapshot(pool) == idle_values(3)


async def test_allocated_never_exceeds_max_when_allocations_fail_under_load(
    autojump_clock: MockClock,
) -> None:
    async def fail_every_third(attempt: int) -> None:
        await trio.sleep(0.2)
        if attempt % 3 == 0:
            raise AllocationError(f"attempt {attempt}")

    backend = FakeBackend(attempt_hook=fail_every_third)
    served = 0
    async with make_pool(
        backend, max=4, bail_after=None, backoff=Backoff(min=0.5, max=1.0)
    ) as pool:

        async def user(delay: float) -> None:
            nonlocal served
            await trio.sleep(delay)
            async with pool.acquire() as resource:
                assert pool.statistics().allocated <= 4
                await trio.sleep(0.7)
                backend.note_removed(resource)
                pool.remove(resource)  # force many allocations
            served += 1

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(user, i * 0.1)
        assert served == 30
        assert backend.peak_outstanding <= 4
        await quiet()
        stats = pool.statistics()
        assert (stats.queued, stats.allocated) == (0, stats.available)


@pytest.mark.parametrize("form", FORMS)
async def test_hanging_allocation_times_out_and_is_retried(
    form: str, autojump_clock: MockClock
) -> None:
    async def first_hangs(attempt: int) -> None:
        if attempt == 1:
            await trio.sleep_forever()

    backend = FakeBackend(attempt_hook=first_hangs)
    backoff = Backoff(min=1.0, max=1.0)
    async with make_pool(
        backend, form, acquire_timeout=5.0, bail_after=None, backoff=backoff
    ) as pool:
        async with pool.acquire() as resource:
            assert trio.current_time() == pytest.approx(6.0)
            assert resource is backend.created[0]
        assert backend.attempts == pytest.approx([0.0, 6.0])
        assert backend.in_flight == 0
        assert backend.peak_outstanding == 1
        assert snapshot(pool) == idle_values(1)


@pytest.mark.parametrize("form", FORMS)
async def test_late_resource_after_acquire_timeout_is_disposed_and_max_holds(
    form: str, autojump_clock: MockClock
) -> None:
    """The first allocation ignores cancellation and returns its resource 3 s after the
    acquire_timeout: that resource is disposed, and no second allocation runs alongside it
    (pool2#30: a timed-out create that keeps running must not let the pool exceed max)."""
    backend = FakeBackend(late_delays=[8.0])
    async with make_pool(
        backend,
        form,
        max=1,
        acquire_timeout=5.0,
        bail_after=None,
        backoff=Backoff(min=1.0, max=1.0),
    ) as pool:
        async with pool.acquire() as resource:
            late = backend.created[0]
            assert resource is not late
            assert pool.statistics().allocated == 1
        await quiet()
        assert backend.gracefully_closed == [late]
        assert backend.dispose_finished == [late]  # a real dispose, not one cut short
        assert backend.destroyed == []
        assert backend.peak_outstanding == 1
        assert snapshot(pool) == idle_values(1)


async def test_late_resources_never_push_allocated_over_max_with_several_waiters(
    autojump_clock: MockClock,
) -> None:
    backend = FakeBackend(late_delays=[8.0, 8.0, 8.0])
    async with make_pool(
        backend, max=2, acquire_timeout=5.0, bail_after=None, backoff=Backoff(min=1.0, max=1.0)
    ) as pool:
        samples: list[int] = []
        async with trio.open_nursery() as nursery:
            holders = await start_holders(nursery, pool, ["a", "b", "c"])
            for _ in range(300):
                samples.append(pool.statistics().allocated)
                await trio.sleep(0.1)
            for holder in holders:
                if holder.state == "holding":
                    holder.release()
                    await quiet()
        assert max(samples) <= 2
        assert backend.peak_outstanding <= 2
        assert [h.state for h in holders] == ["released"] * 3


async def test_acquire_timeout_error_is_the_cause_when_a_never_live_pool_bails(
    autojump_clock: MockClock,
) -> None:
    backend = FakeBackend(acquire_hangs=True)
    async with make_pool(backend, acquire_timeout=5.0) as pool:
        with pytest.raises(PoolBailedError) as info:
            await pool.checkout()
        assert trio.current_time() == pytest.approx(5.0)
        cause = info.value.__cause__
        assert isinstance(cause, AcquireTimeoutError)
        assert isinstance(cause, trio.TooSlowError)
        assert isinstance(cause, TrioPoolError)
        await quiet()
        assert backend.in_flight == 0


# --------------------------------------------------------------------------- min


@pytest.mark.parametrize("form", FORMS)
async def test_min_is_filled_at_start(form: str, autojump_clock: MockClock) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form, min=3, max=5) as pool:
        await quiet()
        assert snapshot(pool) == idle_values(3)
        assert len(backend.created) == 3
        assert pool.live


async def test_min_is_refilled_after_failed_allocations(autojump_clock: MockClock) -> None:
    backend = FakeBackend(fail_next=3)
    async with make_pool(
        backend, min=2, bail_after=None, sync_interval=10.0, backoff=Backoff(min=1.0, max=2.0)
    ) as pool:
        await trio.sleep(25)
        assert snapshot(pool) == idle_values(2)
        assert len(backend.errors) == 3


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("operation", ["remove", "destroy"])
async def test_min_is_refilled_after_removal(
    form: str, operation: str, autojump_clock: MockClock
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form, min=2, max=2, sync_interval=10.0) as pool:
        await quiet()
        resource = await pool.checkout()
        getattr(pool, operation)(resource)
        await trio.sleep(11)
        assert snapshot(pool) == idle_values(2)
        assert len(backend.created) == 3


async def test_min_is_refilled_when_an_idle_open_resource_dies(autojump_clock: MockClock) -> None:
    """An ``open=`` resource whose own task dies while idle (its context manager raises) is
    dropped without crashing the pool, and ``min`` is refilled."""
    backend = FakeBackend()
    kill: dict[int, trio.Event] = {}

    @asynccontextmanager
    async def open_resource() -> AsyncIterator[FakeResource]:
        async with backend.open() as resource:
            killed = trio.Event()
            kill[resource.id] = killed

            async def watchdog() -> None:
                await killed.wait()
                raise ResourceDiedError(f"{resource!r} died")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watchdog)
                yield resource
                nursery.cancel_scope.cancel()

    async with trio_pool.ResourcePool(open=open_resource, min=1, max=1, sync_interval=10.0) as pool:
        await quiet()
        [first] = backend.created
        kill[first.id].set()
        await trio.sleep(11)
        assert snapshot(pool) == idle_values(1)
        async with pool.acquire() as resource:
            assert resource is not first
        assert backend.alive_resources == [backend.created[1]]


# --------------------------------------------------------------------------- idle eviction


@pytest.mark.parametrize("form", FORMS)
async def test_idle_resources_are_evicted_down_to_min(form: str, autojump_clock: MockClock) -> None:
    backend = FakeBackend()
    async with make_pool(
        backend, form, min=1, max=5, idle_timeout=30.0, sync_interval=10.0
    ) as pool:
        await quiet()
        resources = [await pool.checkout() for _ in range(4)]
        for resource in resources:
            pool.release(resource)
        released_at = trio.current_time()
        await trio.sleep_until(released_at + 29)
        assert snapshot(pool) == idle_values(4)
        await trio.sleep_until(released_at + 30 + 10 + 0.5)
        assert snapshot(pool) == idle_values(1)
        assert len(backend.gracefully_closed) == 3
        assert len(backend.dispose_finished) == 3
        await trio.sleep(200)
        assert snapshot(pool) == idle_values(1)
        assert len(backend.closed) == 3
        assert len(backend.created) == 4


async def test_idle_eviction_never_goes_below_min(autojump_clock: MockClock) -> None:
    backend = FakeBackend()
    async with make_pool(backend, min=2, idle_timeout=5.0, sync_interval=1.0) as pool:
        for _ in range(20):
            await trio.sleep(5)
            assert snapshot(pool) == idle_values(2)
        assert backend.closed == []
        assert len(backend.attempts) == 2


async def test_only_resources_idle_longer_than_idle_timeout_are_evicted(
    autojump_clock: MockClock,
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, idle_timeout=30.0, sync_interval=10.0) as pool:
        old = await pool.checkout()
        young = await pool.checkout()
        pool.release(old)
        await trio.sleep(20)
        pool.release(young)
        await trio.sleep(25)  # old: idle 45 s, young: idle 25 s
        assert backend.closed == [old]
        assert snapshot(pool) == idle_values(1)
        await trio.sleep(20)  # young: idle 45 s
        assert backend.closed == [old, young]
        assert snapshot(pool) == idle_values(0)


async def test_using_a_resource_resets_its_idle_time(autojump_clock: MockClock) -> None:
    backend = FakeBackend()
    async with make_pool(backend, idle_timeout=30.0, sync_interval=10.0) as pool:
        resource = await pool.checkout()
        for _ in range(10):
            pool.release(resource)
            await trio.sleep(20)
            assert await pool.checkout() is resource
        pool.release(resource)
        assert backend.closed == []


@pytest.mark.parametrize("idle_timeout", [None, 0])
async def test_idle_timeout_none_or_zero_disables_eviction(
    idle_timeout: float | None, autojump_clock: MockClock
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, idle_timeout=idle_timeout, sync_interval=1.0) as pool:
        async with pool.acquire():
            pass
        await trio.sleep(1000)
        assert snapshot(pool) == idle_values(1)
        assert backend.closed == []


# --------------------------------------------------------------------------- backoff


async def test_failed_allocations_are_retried_on_the_backoff_schedule(
    autojump_clock: MockClock,
) -> None:
    backend = FakeBackend(fail_always=True)
    backoff = Backoff(min=1.0, max=5.0)
    async with make_pool(backend, bail_after=None, backoff=backoff) as pool:
        with trio.move_on_after(30):
            await pool.checkout()
        expected = [0.0, 1.0, 2.0, 4.0, 7.0, 12.0, 17.0, 22.0, 27.0]
        assert backend.attempts[: len(expected)] == pytest.approx(expected)
        assert len([t for t in backend.attempts if t <= 30]) == len(expected)


async def test_default_backoff_is_used_when_none_is_given(autojump_clock: MockClock) -> None:
    backend = FakeBackend(fail_always=True)
    async with make_pool(backend, bail_after=None) as pool:
        with trio.move_on_after(1.0):
            await pool.checkout()
        expected = [0.0, 0.1, 0.2, 0.4, 0.7]
        assert backend.attempts[:5] == pytest.approx(expected)
        assert len([t for t in backend.attempts if t <= 1.0]) == 5


async def test_retries_run_one_at_a_time_for_many_waiters(autojump_clock: MockClock) -> None:
    """Five waiters and failing allocations: after the first failures, one probe at a time on
    the backoff schedule (no busy loop, no thundering herd)."""
    backend = FakeBackend(fail_always=True)
    async with make_pool(backend, bail_after=None, backoff=Backoff(min=1.0, max=1.0)) as pool:
        async with trio.open_nursery() as nursery:
            holders = await start_holders(nursery, pool, [f"w{i}" for i in range(5)])
            await trio.sleep(20.5)
            later = [t for t in backend.attempts if t > 0]
            assert len(later) <= 20
            assert all(gap >= 1.0 - 1e-9 for gap in gaps(later))
            assert len(backend.attempts) <= 5 + 20
            # Recovery: one success and every waiter is served.
            backend.fail_always = False
            await trio.sleep(2)
            assert pool.statistics().queued == 0
            assert pool.statistics().allocated == 5
            for holder in holders:
                holder.release()


async def test_allocation_is_concurrent_again_after_a_success(autojump_clock: MockClock) -> None:
    backend = FakeBackend(fail_next=2)
    async with make_pool(backend, bail_after=None, backoff=Backoff(min=1.0, max=1.0)) as pool:
        first = await pool.checkout()
        assert trio.current_time() == pytest.approx(2.0)
        backend.acquire_delay = 1.0
        async with trio.open_nursery() as nursery:
            holders = await start_holders(nursery, pool, ["b", "c", "d"])
            await trio.sleep(1.5)
            assert [h.state for h in holders] == ["holding"] * 3
            for holder in holders:
                holder.release()
        pool.release(first)
        assert backend.peak_in_flight == 3


# --------------------------------------------------------------------------- bail_after


@pytest.mark.parametrize("form", FORMS)
async def test_default_bail_after_fails_a_never_live_pool_on_the_first_failure(
    form: str, autojump_clock: MockClock
) -> None:
    backend = FakeBackend(fail_always=True)
    async with make_pool(backend, form) as pool:
        async with trio.open_nursery() as nursery:
            waiters = await start_holders(nursery, pool, ["a", "b", "c"])
        for waiter in waiters:
            assert isinstance(waiter.error, PoolBailedError)
            assert waiter.error.__cause__ in backend.errors
        attempts = len(backend.attempts)
        assert attempts <= 3
        with pytest.raises(PoolBailedError) as info:
            await pool.checkout()
        assert isinstance(info.value.__cause__, AllocationError)
        with pytest.raises(PoolBailedError):
            async with pool.acquire():
                pass  # pragma: no cover
        await trio.sleep(100)
        assert len(backend.attempts) == attempts
        assert pool.live is False
        assert pool.statistics().queued == 0


async def test_bail_cause_is_the_allocation_error(autojump_clock: MockClock) -> None:
    backend = FakeBackend(fail_always=True)
    async with make_pool(backend) as pool:
        with pytest.raises(PoolBailedError) as info:
            await pool.checkout()
        assert backend.attempts == [0.0]
        assert info.value.__cause__ is backend.errors[0]


async def test_a_pool_bails_when_filling_min_fails(autojump_clock: MockClock) -> None:
    backend = FakeBackend(fail_always=True)
    async with make_pool(backend, min=1) as pool:
        await quiet()
        with pytest.raises(PoolBailedError) as info:
            await pool.checkout()
        assert info.value.__cause__ is backend.errors[-1]


async def test_bailed_pool_stays_bailed_even_if_allocations_would_now_succeed(
    autojump_clock: MockClock,
) -> None:
    backend = FakeBackend(fail_next=1)
    async with make_pool(backend) as pool:
        with pytest.raises(PoolBailedError):
            await pool.checkout()
        await trio.sleep(100)
        with pytest.raises(PoolBailedError):
            await pool.checkout()
        assert backend.created == []


async def test_bail_after_a_number_retries_until_then(autojump_clock: MockClock) -> None:
    backend = FakeBackend(fail_always=True)
    async with make_pool(backend, bail_after=10.0, backoff=Backoff(min=1.0, max=5.0)) as pool:
        with pytest.raises(PoolBailedError) as info:
            await pool.checkout()
        # Attempts at 0, 1, 2, 4, 7 fail before the deadline; the one at 12 bails.
        assert 10.0 <= trio.current_time() <= 12.0
        assert backend.attempts[:5] == pytest.approx([0.0, 1.0, 2.0, 4.0, 7.0])
        assert info.value.__cause__ is backend.errors[-1]
        assert len(backend.errors) in (5, 6)


async def test_bail_after_none_retries_forever(autojump_clock: MockClock) -> None:
    backend = FakeBackend(fail_always=True)
    async with make_pool(backend, bail_after=None, backoff=Backoff(min=1.0, max=5.0)) as pool:
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(100):
                await pool.checkout()
        assert len(backend.attempts) > 15
        backend.fail_always = False
        with trio.fail_after(6):
            async with pool.acquire():
                pass
        assert pool.live


async def test_a_pool_that_was_live_once_never_bails(autojump_clock: MockClock) -> None:
    backend = FakeBackend()
    async with make_pool(backend, bail_after=0, backoff=Backoff(min=1.0, max=5.0)) as pool:
        resource = await pool.checkout()
        pool.remove(resource)
        backend.fail_always = True
        with trio.move_on_after(50) as scope:
            await pool.checkout()
        assert scope.cancelled_caught
        assert len(backend.errors) > 5
        backend.fail_always = False
        with trio.fail_after(6):
            async with pool.acquire():
                pass


async def test_failing_acquire_callback_does_not_crash_a_live_pool(
    autojump_clock: MockClock,
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, min=1, backoff=Backoff(min=1.0, max=1.0)) as pool:
        await quiet()
        backend.fail_next = 3
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            [waiter] = await start_holders(nursery, pool, ["w"])
            await trio.sleep(3.5)
            assert waiter.state == "holding"
            waiter.release()
        pool.release(held)
        assert len(backend.errors) == 3


@pytest.mark.parametrize("knob", ["idle_timeout", "max_lifetime"])
async def test_ages_are_read_on_trios_own_clock_as_on_trio_current_time(knob: str) -> None:
    # Real time on purpose: under trio's own SystemClock the pool reads perf_counter() plus
    # the clock's offset itself (a fast path); a wrong offset would evict or renew a
    # resource at once or never. The margins are wide against a loaded machine.
    backend = FakeBackend()
    options: dict[str, Any] = {knob: 1.0}
    async with make_pool(backend, sync_interval=0.05, **options) as pool:
        created_after = trio.current_time()
        async with pool.acquire() as first:
            pass
        given_back = trio.current_time()
        await trio.sleep(0.2)
        if trio.current_time() - created_after < 0.8:  # not early (unless the machine stalled)
            async with pool.acquire() as again:
                assert again is first
            given_back = trio.current_time()
        for _ in range(200):  # and not never (10 s)
            if first in backend.closed:
                break
            await trio.sleep(0.05)
        else:
            pytest.fail(f"{knob} never retired the resource")
        # idle_timeout counts from the last give-back; max_lifetime (x [0.9, 1.0]) from
        # the creation.
        since = given_back if knob == "idle_timeout" else created_after
        assert trio.current_time() - since >= 0.9
        async with pool.acquire() as renewed:
            assert renewed is not first
