"""ResourcePool's ``reset`` option (issue 17, API.md section 9): run in the pool's nursery on
every release before the resource is handed out again, bounded by ``ping_timeout``; a reset that
raises or times out removes the resource. Virtual time throughout (``autojump_clock``)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from resource_fakes import FORMS, FakeBackend, FakeResource, idle_values, make_pool, quiet, snapshot

from trio_pool import InvalidArgumentError, PoolDestroyedError


class ResetError(Exception):
    pass


class Resets:
    """A ``reset`` callback that records what it reset, in which task, and can fail."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.started: list[FakeResource] = []
        self.finished: list[tuple[FakeResource, float]] = []
        self.tasks: list[trio.lowlevel.Task] = []
        self.fail_next = False
        self.cancelled = 0

    async def __call__(self, resource: FakeResource) -> None:
        self.started.append(resource)
        self.tasks.append(trio.lowlevel.current_task())
        try:
            await trio.sleep(self.delay)
        except trio.Cancelled:
            self.cancelled += 1
            raise
        if self.fail_next:
            self.fail_next = False
            raise ResetError(f"cannot reset {resource!r}")
        self.finished.append((resource, trio.current_time()))


async def resets_done(resets: Resets) -> None:
    """Let the resets under way finish (virtual time: this sleeps as long as one takes)."""
    await trio.sleep(resets.delay)
    await quiet()


def test_a_reset_that_is_not_callable_is_rejected_by_name() -> None:
    with pytest.raises(InvalidArgumentError, match="invalid reset"):
        make_pool(FakeBackend(), reset="DISCARD ALL")


@pytest.mark.parametrize("form", FORMS)
async def test_reset_runs_on_every_release_in_the_pools_task_before_reuse(
    form: str, autojump_clock: trio.testing.MockClock
) -> None:
    backend, resets = FakeBackend(), Resets(delay=1.0)
    async with make_pool(backend, form, reset=resets, max=1) as pool:
        resource = await pool.checkout()
        released_at = trio.current_time()
        pool.release(resource)  # synchronous: the reset runs elsewhere
        assert resets.started == []
        await quiet()
        assert resets.started == [resource]
        assert resets.tasks[0] is not trio.lowlevel.current_task()
        # While it resets it is neither idle nor lent, but still allocated.
        assert snapshot(pool) == {"allocated": 1, "available": 0, "queued": 0}
        async with pool.acquire() as again:
            assert again is resource
            assert resets.finished == [(resource, released_at + 1.0)]
            assert trio.current_time() == released_at + 1.0
        await resets_done(resets)
        assert len(resets.finished) == 2
        assert snapshot(pool) == idle_values(1)
        assert pool.statistics().reset_failures_total == 0


async def test_a_waiter_gets_the_resource_only_after_its_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend, resets = FakeBackend(), Resets(delay=2.0)
    async with make_pool(backend, reset=resets, max=1) as pool:
        held = await pool.checkout()
        got: list[tuple[FakeResource, float]] = []

        async def waiter() -> None:
            resource = await pool.checkout()
            got.append((resource, trio.current_time()))
            pool.release(resource)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await quiet()
            assert snapshot(pool)["queued"] == 1
            pool.release(held)
            released_at = trio.current_time()
        assert got == [(held, released_at + 2.0)]
        assert resets.finished[0] == (held, released_at + 2.0)
        await resets_done(resets)
        assert snapshot(pool) == idle_values(1)


@pytest.mark.parametrize("form", FORMS)
async def test_a_failing_reset_removes_the_resource_and_is_counted(
    form: str, autojump_clock: trio.testing.MockClock
) -> None:
    backend, resets = FakeBackend(), Resets()
    async with make_pool(backend, form, reset=resets, max=1) as pool:
        first = await pool.checkout()
        resets.fail_next = True
        pool.release(first)
        async with pool.acquire() as second:
            assert second is not first
        await quiet()
        assert backend.gracefully_closed == [first]
        assert pool.statistics().reset_failures_total == 1
        assert snapshot(pool) == idle_values(1)


async def test_a_reset_over_ping_timeout_removes_the_resource(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend, resets = FakeBackend(), Resets(delay=10.0)
    async with make_pool(backend, reset=resets, ping_timeout=3.0, max=1) as pool:
        first = await pool.checkout()
        released_at = trio.current_time()
        pool.release(first)
        async with pool.acquire() as second:
            assert second is not first
            assert trio.current_time() == released_at + 3.0  # not the 10 s of the reset
        await quiet()
        assert resets.cancelled >= 1
        assert backend.gracefully_closed == [first]
        assert pool.statistics().reset_failures_total == 1


async def test_cancelling_a_waiter_while_the_resource_resets_leaves_the_pool_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend, resets = FakeBackend(), Resets(delay=5.0)
    async with make_pool(backend, reset=resets, max=1) as pool:
        held = await pool.checkout()
        with trio.move_on_after(1.0):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool.checkout)
                await quiet()
                pool.release(held)
        await resets_done(resets)
        assert snapshot(pool) == idle_values(1)
        pool._check_invariants()
        async with pool.acquire() as resource:
            assert resource is held
        assert pool.statistics().reset_failures_total == 0


@pytest.mark.parametrize("form", FORMS)
async def test_end_waits_for_a_reset_then_disposes_the_resource(
    form: str, autojump_clock: trio.testing.MockClock
) -> None:
    backend, resets = FakeBackend(), Resets(delay=2.0)
    pool = make_pool(backend, form, reset=resets)
    async with pool:
        resource = await pool.checkout()
        pool.release(resource)
        started = trio.current_time()
        assert await pool.end() == []
        assert trio.current_time() == started + 2.0
    assert resets.finished == [(resource, started + 2.0)]
    assert backend.gracefully_closed == [resource]
    assert backend.destroyed == []
    with pytest.raises(PoolDestroyedError):
        await pool.checkout()


@pytest.mark.parametrize("form", FORMS)
async def test_a_teardown_during_a_reset_destroys_the_resource_once(
    form: str, autojump_clock: trio.testing.MockClock
) -> None:
    backend, resets = FakeBackend(), Resets(delay=60.0)
    pool = make_pool(backend, form, reset=resets)
    with pytest.raises(ResetError):
        async with pool:
            resource = await pool.checkout()
            pool.release(resource)
            await quiet()
            assert resets.started == [resource]
            raise ResetError("the block failed")
    assert resets.cancelled == 1
    assert resets.finished == []
    assert backend.closed == [resource]
    if form == "callbacks":
        assert backend.destroyed == [resource]
    assert backend.disposed == []
    pool._check_invariants()


async def test_expire_all_during_a_reset_retires_the_resource_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend, resets = FakeBackend(), Resets(delay=1.0)
    async with make_pool(backend, reset=resets, max=1) as pool:
        old = await pool.checkout()
        pool.release(old)
        pool.expire_all()
        async with pool.acquire() as new:
            assert new is not old
        await quiet()
        assert backend.gracefully_closed == [old]
        assert pool.statistics().reset_failures_total == 0


async def test_a_reset_resource_released_again_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend, resets = FakeBackend(), Resets(delay=1.0)
    async with make_pool(backend, reset=resets) as pool:
        resource = await pool.checkout()
        pool.release(resource)
        with pytest.raises(InvalidArgumentError, match="not checked out"):
            pool.release(resource)
        with pytest.raises(InvalidArgumentError):
            pool.remove(resource)
        await resets_done(resets)
        assert snapshot(pool) == idle_values(1)
        assert len(resets.finished) == 1


async def test_a_reset_that_ignores_its_timeout_and_returns_late_removes_the_resource(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend()

    async def stubborn_reset(resource: FakeResource) -> None:
        with trio.CancelScope(shield=True):
            await trio.sleep(5.0)

    async with make_pool(backend, reset=stubborn_reset, ping_timeout=1.0, max=1) as pool:
        first = await pool.checkout()
        pool.release(first)
        async with pool.acquire() as second:
            assert second is not first
        assert pool.statistics().reset_failures_total == 1
        assert backend.gracefully_closed == [first]
