"""Handing resources out and taking them back: acquire(), checkout()/release(), remove(),
destroy(), ping, and the ``live`` flag. Run with both forms (callbacks and ``open=``)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from resource_fakes import (
    FORMS,
    OPEN,
    FakeBackend,
    FakeResource,
    idle_values,
    make_pool,
    quiet,
    snapshot,
)

import trio_pool
from trio_pool import InvalidArgumentError

pytestmark = pytest.mark.parametrize("form", FORMS)


async def test_acquire_hands_out_a_resource_and_takes_it_back(form: str) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form) as pool:
        async with pool.acquire() as resource:
            assert resource is backend.created[0]
            assert snapshot(pool) == {"allocated": 1, "available": 0, "queued": 0}
        assert snapshot(pool) == idle_values(1)
        async with pool.acquire() as again:
            assert again is resource
        assert len(backend.created) == 1
        assert backend.closed == []


async def test_checkout_release_pair(form: str) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form, max=2) as pool:
        first = await pool.checkout()
        second = await pool.checkout()
        assert first is not second
        assert snapshot(pool) == {"allocated": 2, "available": 0, "queued": 0}
        pool.release(first)
        assert snapshot(pool) == {"allocated": 2, "available": 1, "queued": 0}
        pool.release(second)
        assert snapshot(pool) == idle_values(2)


async def test_idle_resources_are_reused_most_recently_released_first(form: str) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form, max=3) as pool:
        resources = [await pool.checkout() for _ in range(3)]
        for resource in resources:
            pool.release(resource)
        again = await pool.checkout()
        pool.release(again)
        assert again is resources[-1]


async def test_acquire_releases_when_the_block_raises(form: str) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form) as pool:
        with pytest.raises(KeyError):
            async with pool.acquire():
                raise KeyError("user error")
        assert snapshot(pool) == idle_values(1)
        assert backend.closed == []


async def test_live_is_false_until_an_allocation_succeeds(form: str) -> None:
    backend = FakeBackend()
    pool = make_pool(backend, form)
    # Read into locals: asserting on ``pool.live`` itself would leave mypy holding it
    # narrowed to False at the final check.
    unopened = pool.live
    assert unopened is False
    async with pool:
        await quiet()
        at_rest = pool.live
        assert at_rest is False
        assert pool.statistics().live is False
        async with pool.acquire():
            pass
        assert pool.live is True
        assert pool.statistics().live is True


# --------------------------------------------------------------------------- remove / destroy


async def test_remove_inside_acquire_disposes_and_exit_does_not_release(form: str) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form) as pool:
        async with pool.acquire() as resource:
            pool.remove(resource)
            assert pool.statistics().allocated == 0
        await quiet()
        assert backend.gracefully_closed == [resource]
        assert backend.dispose_finished == [resource]
        assert backend.destroyed == []
        assert snapshot(pool) == idle_values(0)
        async with pool.acquire() as fresh:
            assert fresh is not resource


async def test_destroy_inside_acquire_calls_destroy_not_dispose(form: str) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form) as pool:
        async with pool.acquire() as resource:
            pool.destroy(resource)
            # destroy is a synchronous, fire-and-forget callback.
            assert backend.destroyed == [resource]
            assert pool.statistics().allocated == 0
        await quiet()
        assert backend.gracefully_closed == []
        assert backend.destroyed == [resource]
        if form == OPEN:
            # The resource's task was cancelled: its context manager did not exit normally.
            assert [kind for r, kind in backend.exits if r is resource] == ["Cancelled"]
        assert snapshot(pool) == idle_values(0)


async def test_remove_of_a_checked_out_resource_frees_its_slot(form: str) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form, max=1) as pool:
        resource = await pool.checkout()
        pool.remove(resource)
        with trio.fail_after(1):
            replacement = await pool.checkout()
        assert replacement is not resource
        pool.release(replacement)
        await quiet()
        assert backend.gracefully_closed == [resource]


@pytest.mark.parametrize("operation", ["release", "remove", "destroy"])
async def test_operations_on_a_foreign_resource_are_rejected(form: str, operation: str) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form) as pool:
        foreign = FakeResource(99)
        with pytest.raises(InvalidArgumentError):
            getattr(pool, operation)(foreign)
        async with pool.acquire():
            pass
        with pytest.raises(InvalidArgumentError):
            getattr(pool, operation)(foreign)
        assert snapshot(pool) == idle_values(1)


async def test_releasing_an_already_released_resource_is_rejected(form: str) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form) as pool:
        resource = await pool.checkout()
        pool.release(resource)
        with pytest.raises(InvalidArgumentError):
            pool.release(resource)
        # Nothing changed: the resource is still idle and usable.
        assert snapshot(pool) == idle_values(1)
        assert backend.closed == []
        assert await pool.checkout() is resource
        pool.release(resource)


@pytest.mark.parametrize("operation", ["remove", "destroy"])
async def test_remove_or_destroy_of_an_idle_resource_evicts_it(form: str, operation: str) -> None:
    # issue 12 item 10: API.md forbids only resources the pool does not own; an idle one is
    # the pool's, so it is evicted (disposed, or destroyed), and a second call is rejected.
    backend = FakeBackend()
    async with make_pool(backend, form, max=2) as pool:
        first, second = await pool.checkout(), await pool.checkout()
        pool.release(first)
        pool.release(second)
        getattr(pool, operation)(first)
        assert snapshot(pool) == idle_values(1)
        with pytest.raises(InvalidArgumentError):
            getattr(pool, operation)(first)
        await quiet()
        assert backend.closed == [first]
        if operation == "destroy":
            assert backend.destroyed == [first]
        else:
            assert backend.gracefully_closed == [first]
        async with pool.acquire() as resource:
            assert resource is second
        assert snapshot(pool) == idle_values(1)


@pytest.mark.parametrize("first", ["remove", "destroy"])
@pytest.mark.parametrize("second", ["release", "remove", "destroy"])
async def test_operations_on_a_removed_resource_are_rejected(
    form: str, first: str, second: str
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form) as pool:
        resource = await pool.checkout()
        getattr(pool, first)(resource)
        with pytest.raises(InvalidArgumentError):
            getattr(pool, second)(resource)
        await quiet()
        assert backend.closed == [resource]
        assert snapshot(pool) == idle_values(0)


# --------------------------------------------------------------------------- ping


async def test_ping_runs_before_every_hand_out(form: str) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form, ping=True) as pool:
        async with pool.acquire() as resource:
            pass
        async with pool.acquire() as again:
            assert again is resource
        assert backend.pinged.count(resource) >= 1
        count = len(backend.pinged)
        async with pool.acquire():
            pass
        assert len(backend.pinged) == count + 1


async def test_failed_ping_removes_the_resource_and_hands_out_another(form: str) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form, ping=True, max=2) as pool:
        async with pool.acquire() as dead:
            pass
        dead.alive = False
        async with pool.acquire() as resource:
            assert resource is not dead
            assert resource.alive
            assert snapshot(pool) == {"allocated": 1, "available": 0, "queued": 0}
        await quiet()
        assert backend.gracefully_closed == [dead]
        assert snapshot(pool) == idle_values(1)


async def test_hanging_ping_times_out_and_the_resource_is_replaced(
    form: str, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form, ping=True, ping_timeout=3.0) as pool:
        async with pool.acquire() as stuck:
            pass
        stuck.ping_hangs = True
        start = trio.current_time()
        async with pool.acquire() as resource:
            assert resource is not stuck
            assert trio.current_time() - start == pytest.approx(3.0)
        await quiet()
        assert backend.gracefully_closed == [stuck]
        assert snapshot(pool) == idle_values(1)


async def test_a_ping_that_ignores_cancellation_and_returns_late_counts_as_failed(
    form: str, autojump_clock: trio.testing.MockClock
) -> None:
    # issue 12 item 11: the ping runs past ping_timeout under a shield and then returns
    # normally; the resource it vouched for is not handed out (late), it is replaced.
    backend = FakeBackend()
    stubborn: list[FakeResource] = []

    async def ping(resource: FakeResource) -> None:
        if resource in stubborn:
            with trio.CancelScope(shield=True):
                await trio.sleep(5.0)

    pool = trio_pool.ResourcePool(**backend.options(form), ping=ping, ping_timeout=1.0)
    async with pool:
        async with pool.acquire() as late:
            pass
        stubborn.append(late)
        start = trio.current_time()
        async with pool.acquire() as resource:
            assert resource is not late
            assert trio.current_time() - start == pytest.approx(5.0)
        await quiet()
        assert backend.gracefully_closed == [late]
        assert snapshot(pool) == idle_values(1)


async def test_every_idle_dead_resource_is_skipped(form: str) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form, ping=True, max=3) as pool:
        resources = [await pool.checkout() for _ in range(3)]
        for resource in resources:
            resource.alive = False
            pool.release(resource)
        async with pool.acquire() as fresh:
            assert fresh not in resources
        await quiet()
        assert sorted(r.id for r in backend.gracefully_closed) == [0, 1, 2]
        assert snapshot(pool) == idle_values(1)


async def test_failed_ping_keeps_the_acquirers_place_in_the_queue(form: str) -> None:
    """max=1; A then B wait; the released resource goes to A, its ping fails, so it is
    replaced: the replacement must go to A (head of the queue), not B."""
    backend = FakeBackend()
    order: list[str] = []
    async with make_pool(backend, form, ping=True, max=1) as pool:
        held = await pool.checkout()

        async def waiter(name: str) -> None:
            async with pool.acquire() as resource:
                order.append(name)
                assert resource is not held
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter, "A")
            await quiet()
            nursery.start_soon(waiter, "B")
            await quiet()
            assert pool.statistics().queued == 2
            held.alive = False
            pool.release(held)
        assert order == ["A", "B"]
        assert backend.gracefully_closed == [held]


async def test_ping_failure_refills_min(form: str) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form, ping=True, min=2, max=2) as pool:
        await quiet()
        first = await pool.checkout()
        second = await pool.checkout()
        first.alive = False
        pool.release(first)
        pool.release(second)
        async with pool.acquire() as a, pool.acquire() as b:
            assert first not in (a, b)
        await quiet()
        assert snapshot(pool) == idle_values(2)
        assert backend.gracefully_closed == [first]


async def test_cancelled_ping_removes_the_resource(
    form: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Decision 6: a ping interrupted by the acquirer's own cancellation removes the resource
    (its state is unknown), then the cancellation propagates; the pool is quiet again."""
    backend = FakeBackend()
    async with make_pool(backend, form, ping=True, ping_timeout=100.0) as pool:
        async with pool.acquire() as resource:
            pass
        resource.ping_hangs = True
        with trio.move_on_after(2) as scope:
            await pool.checkout()
        assert scope.cancelled_caught
        await quiet()
        assert resource in backend.gracefully_closed
        assert snapshot(pool) == idle_values(0)
        async with pool.acquire() as fresh:
            assert fresh is not resource
