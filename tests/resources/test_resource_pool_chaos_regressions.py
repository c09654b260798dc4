"""Focused regression tests for defects the chaos rounds (tests/chaos/test_resource_chaos.py)
found in ResourcePool; each names the seed that first showed it."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from resource_fakes import FORMS, FakeBackend, FakeResource, make_pool
from trio.testing import MockClock

from trio_pool import Backoff, PoolDestroyedError, ResourcePool


@pytest.mark.parametrize("form", FORMS)
async def test_end_waits_for_disposes_after_every_task_ended_while_ending(
    form: str, autojump_clock: MockClock
) -> None:
    """Chaos seed 52 (callbacks, pool): end() used to return while a resource was still
    being disposed. Its "every resource task has ended" event was made when end() began, so
    a moment with no task alive while waiters were still being served (the only creation
    failed and was backing off) set it for good; the retry's resource then served the
    waiter, and after the drain end() finished without waiting for its dispose."""
    backend = FakeBackend(fail_next=1, acquire_delay=1.0, dispose_hangs=True)
    async with make_pool(
        backend, form, max=1, bail_after=None, backoff=Backoff(min=1.0), dispose_timeout=5
    ) as pool:

        async def user() -> None:
            async with pool.acquire():
                await trio.sleep(1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(user)
            await trio.testing.wait_all_tasks_blocked()
            # The waiter is queued and its creation in flight; that creation fails at t=1,
            # the retry delivers at t=3, the user gives it back at t=4.
            assert pool.statistics().queued == 1
            start = trio.current_time()
            errors = await pool.end()
        assert len(backend.errors) == 1
        assert len(backend.created) == 1
        # end() waited out the hanging dispose, destroyed the resource and reported it.
        assert trio.current_time() - start == 4 + 5
        assert backend.destroyed == backend.created
        assert len(errors) == 1
        assert isinstance(errors[0], trio.TooSlowError)


class Boom(Exception):
    pass


@pytest.mark.parametrize("form", FORMS)
async def test_a_waiter_handed_a_resource_as_the_pool_is_torn_down_gets_no_dead_resource(
    form: str,
) -> None:
    """Chaos seed 75 (callbacks, pool, torn down): a waiter was handed a resource, then the
    pool's block raised before the waiter ran again. The teardown destroyed that resource
    with the rest, yet the waiter went on to return it to its caller. With a ping the same
    race already raised PoolDestroyedError; without one it now does too."""
    backend = FakeBackend()
    outcome: list[object] = []

    async def waiter(pool: ResourcePool[FakeResource]) -> None:
        try:
            async with pool.acquire() as resource:
                outcome.append(resource)
        except PoolDestroyedError as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        with pytest.raises(Boom):
            async with make_pool(backend, form, max=1) as pool:
                resource = await pool.checkout()
                nursery.start_soon(waiter, pool)
                await trio.testing.wait_all_tasks_blocked()
                assert pool.statistics().queued == 1
                pool.release(resource)  # handed straight to the waiter...
                raise Boom  # ...which has not run yet when the pool is torn down
    assert backend.destroyed == [resource]
    assert len(outcome) == 1
    assert isinstance(outcome[0], PoolDestroyedError)
