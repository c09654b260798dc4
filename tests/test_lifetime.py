"""API.md section 0: the ``async with`` block is the lifetime, and the user's exception
leaves it as itself (never wrapped in an ExceptionGroup). Shown on ResourcePool; the HTTP
classes share the same supervisor and have their own tests."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

import trio_pool

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup


class Recorder:
    """acquire/dispose/destroy callbacks that record what happened to each resource."""

    def __init__(self) -> None:
        self._ids = itertools.count()
        self.created: list[int] = []
        self.disposed: list[int] = []
        self.destroyed: list[int] = []

    async def acquire(self) -> int:
        await trio.lowlevel.checkpoint()
        resource = next(self._ids)
        self.created.append(resource)
        return resource

    async def dispose(self, resource: int) -> None:
        await trio.lowlevel.checkpoint()
        self.disposed.append(resource)

    def destroy(self, resource: int) -> None:
        self.destroyed.append(resource)

    def pool(self, **options: Any) -> trio_pool.ResourcePool[int]:
        return trio_pool.ResourcePool(self.acquire, self.dispose, destroy=self.destroy, **options)


async def test_construction_does_no_io_and_starts_no_task() -> None:
    rec = Recorder()
    root = trio.lowlevel.current_root_task()
    assert root is not None  # inside trio.run
    tasks_before = len(root.child_nurseries)
    pool = rec.pool(min=3)
    await trio.testing.wait_all_tasks_blocked()
    assert rec.created == []
    assert len(root.child_nurseries) == tasks_before
    assert pool.statistics().allocated == 0


async def test_user_exception_leaves_as_itself_and_destroys_everything() -> None:
    rec = Recorder()
    error = ValueError("the user's own")
    with pytest.raises(ValueError, match="the user's own") as caught:
        async with rec.pool(min=2) as pool:
            await trio.testing.wait_all_tasks_blocked()
            await pool.checkout()  # still out when the block fails
            raise error
    assert caught.value is error
    assert sorted(rec.destroyed) == sorted(rec.created) == [0, 1]
    assert rec.disposed == []


async def test_user_exception_group_leaves_as_the_same_group() -> None:
    rec = Recorder()
    group = ExceptionGroup("the user's group", [KeyError("a"), OSError("b")])
    with pytest.raises(ExceptionGroup) as caught:
        async with rec.pool(min=1):
            raise group
    assert caught.value is group


async def test_outer_cancellation_of_the_block_propagates_as_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    with trio.move_on_after(5) as scope:
        async with rec.pool(min=1) as pool:
            async with pool.acquire():
                await trio.sleep_forever()
    assert scope.cancelled_caught
    assert rec.destroyed == [0]
    assert rec.disposed == []


async def test_cancellation_during_graceful_end_destroys_and_propagates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    with trio.move_on_after(10) as scope:
        async with rec.pool(min=1) as pool:
            # A resource that never comes back makes end() wait until the deadline.
            await pool.checkout()
    assert scope.cancelled_caught
    assert trio.current_time() == pytest.approx(10)
    assert rec.destroyed == [0]


async def test_leaving_normally_ends_gracefully() -> None:
    rec = Recorder()
    async with rec.pool(min=2) as pool:
        async with pool.acquire():
            pass
    assert sorted(rec.disposed) == [0, 1]
    assert rec.destroyed == []
    with pytest.raises(trio_pool.PoolDestroyedError):
        await pool.checkout()


async def test_ended_inside_the_block_then_leaving_raises_nothing() -> None:
    rec = Recorder()
    async with rec.pool(min=1) as pool:
        await trio.testing.wait_all_tasks_blocked()  # min is filled
        assert await pool.end() == []
    assert rec.disposed == [0]


async def test_end_abandons_a_creation_nobody_waits_for() -> None:
    rec = Recorder()
    async with rec.pool(min=1) as pool:
        assert await pool.end() == []  # the min=1 creation may still be under way
    assert rec.disposed == rec.created  # whatever was created was disposed
    assert pool.statistics().allocated == 0


async def test_cancelling_the_user_inside_the_block_does_not_touch_the_pool() -> None:
    rec = Recorder()
    async with rec.pool(min=1) as pool:
        with trio.CancelScope() as scope:
            scope.cancel()
            await trio.sleep(1)
        async with pool.acquire() as resource:
            assert resource == 0


async def test_a_block_cannot_be_entered_twice() -> None:
    rec = Recorder()
    pool = rec.pool()
    async with pool:
        with pytest.raises(RuntimeError, match="already entered") as caught:
            await pool.__aenter__()
        assert isinstance(caught.value, trio_pool.TrioPoolError)


async def _use_resource_pool(pool: trio_pool.ResourcePool[int]) -> None:
    await pool.checkout()


async def _use_http(pool: trio_pool.Client | trio_pool.Pool | trio_pool.BalancedPool) -> None:
    await pool.request("GET", "/")


@pytest.mark.parametrize(
    ("make", "use"),
    [
        (lambda: Recorder().pool(), _use_resource_pool),
        (lambda: trio_pool.Client("http://127.0.0.1:1"), _use_http),
        (lambda: trio_pool.Pool("http://127.0.0.1:1"), _use_http),
        (lambda: trio_pool.BalancedPool(["http://127.0.0.1:1"]), _use_http),
    ],
    ids=["ResourcePool", "Client", "Pool", "BalancedPool"],
)
async def test_use_before_the_block_is_a_trio_pool_error_and_a_runtime_error(
    # Any: each ``use`` takes what its own ``make`` makes, which one annotation cannot say.
    make: Callable[[], Any],
    use: Callable[[Any], Awaitable[None]],
) -> None:
    obj = make()
    with pytest.raises(trio_pool.TrioPoolError, match="async with") as caught:
        await use(obj)
    assert isinstance(caught.value, RuntimeError)
