"""Cluster: capability filtering, most-idle-first selection and its tie-breaks, pool
membership, and end()."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from resource_fakes import (
    DisposeError,
    FakeBackend,
    FakeResource,
    error_chain_contains,
    make_pool,
    quiet,
    start_holders,
)

from trio_pool import (
    Cluster,
    InvalidArgumentError,
    NoCapablePoolError,
    PoolBailedError,
    PoolDestroyedError,
    PoolEndingError,
    ResourcePool,
    TrioPoolError,
)


@asynccontextmanager
async def open_pools(
    specs: Sequence[dict[str, Any]],
) -> AsyncIterator[tuple[list[ResourcePool[FakeResource]], list[FakeBackend]]]:
    """Enter one pool per spec; each spec's ``label`` names its backend's resources."""
    backends: list[FakeBackend] = []
    pools: list[ResourcePool[FakeResource]] = []
    async with AsyncExitStack() as stack:
        for spec in specs:
            options = dict(spec)
            backend = FakeBackend(label=options.pop("label"))
            pool = await stack.enter_async_context(make_pool(backend, **options))
            backends.append(backend)
            pools.append(pool)
        await quiet()
        yield pools, backends


async def label_of(cluster: Cluster[FakeResource], capability: str | None = None) -> str:
    if capability is None:
        async with cluster.acquire() as resource:
            return resource.label
    async with cluster.acquire(capability) as resource:
        return resource.label


@pytest.mark.parametrize("pools", ["one pool", 42, "text"])
async def test_cluster_of_something_that_is_not_a_list_of_pools_is_rejected(pools: Any) -> None:
    # issue 12 item 12: Cluster(pool) (one pool, not a list) was a bare TypeError.
    backend = FakeBackend()
    async with make_pool(backend) as pool:
        arguments = {"one pool": pool}.get(pools, pools)
        with pytest.raises(InvalidArgumentError, match="invalid pool"):
            Cluster(arguments)
        assert pool.statistics().allocated == 0  # nothing was touched


async def test_acquire_without_capability_uses_any_pool() -> None:
    async with open_pools([{"label": "a", "capabilities": ("read",)}]) as (pools, _):
        cluster = Cluster(pools)
        async with cluster.acquire() as resource:
            assert isinstance(resource, FakeResource)
            assert resource.label == "a"
            assert pools[0].statistics().available == 0
        assert pools[0].statistics().available == 1


async def test_capability_filters_the_pools() -> None:
    specs: list[dict[str, Any]] = [
        {"label": "replica", "capabilities": ("read",), "min": 3},
        {"label": "primary", "capabilities": ("read", "write")},
    ]
    async with open_pools(specs) as (pools, _):
        cluster = Cluster(pools)
        for _ in range(5):
            assert await label_of(cluster, "write") == "primary"
        # "read": the replica has the most idle resources.
        assert await label_of(cluster, "read") == "replica"


async def test_no_capable_pool_names_the_capability() -> None:
    async with open_pools([{"label": "a", "capabilities": ("read",)}]) as (pools, _):
        cluster = Cluster(pools)
        with pytest.raises(NoCapablePoolError, match="write") as info:
            async with cluster.acquire("write"):
                pass  # pragma: no cover
        assert isinstance(info.value, TrioPoolError)


async def test_an_empty_cluster_has_no_capable_pool() -> None:
    cluster: Cluster[FakeResource] = Cluster()
    assert cluster.pools == []
    with pytest.raises(NoCapablePoolError):
        async with cluster.acquire():
            pass  # pragma: no cover
    with pytest.raises(NoCapablePoolError, match="read"):
        async with cluster.acquire("read"):
            pass  # pragma: no cover


async def test_most_idle_pool_is_chosen_first() -> None:
    specs: list[dict[str, Any]] = [
        {"label": "a", "min": 1},
        {"label": "b", "min": 3},
        {"label": "c", "min": 2},
    ]
    async with open_pools(specs) as (pools, _):
        cluster = Cluster(pools)
        assert await label_of(cluster) == "b"
        async with cluster.acquire() as first, cluster.acquire() as second:
            # b: 3 idle -> 2 idle, a tie with c; no queues; c has more spare capacity.
            assert first.label == "b"
            assert second.label == "c"


async def test_ties_on_idle_go_to_the_pool_with_fewest_queued() -> None:
    specs: list[dict[str, Any]] = [{"label": "a", "max": 1}, {"label": "b", "max": 1}]
    async with open_pools(specs) as (pools, _):
        a, b = pools
        cluster = Cluster([a, b])
        held_a = await a.checkout()
        held_b = await b.checkout()
        async with trio.open_nursery() as nursery:
            [waiter] = await start_holders(nursery, a, ["queued-on-a"])
            assert (a.statistics().queued, b.statistics().queued) == (1, 0)
            result: list[str] = []

            async def use_cluster() -> None:
                result.append(await label_of(cluster))

            nursery.start_soon(use_cluster)
            await quiet()
            # Nothing idle anywhere: it waits on the cluster for the first pool that frees one.
            assert (a.statistics().queued, b.statistics().queued) == (1, 0)
            b.release(held_b)
            a.release(held_a)
            await quiet()
            waiter.release()
        assert result == ["b"]


async def test_ties_on_idle_and_queued_go_to_the_pool_with_most_spare_capacity() -> None:
    specs: list[dict[str, Any]] = [{"label": "small", "max": 2}, {"label": "big", "max": 5}]
    async with open_pools(specs) as (pools, _):
        small, big = pools
        cluster = Cluster([small, big])
        held = [await small.checkout(), await big.checkout()]
        assert await label_of(cluster) == "big"
        small.release(held[0])
        big.release(held[1])


@pytest.mark.parametrize("reverse", [False, True])
async def test_full_ties_go_to_the_first_pool_added(reverse: bool) -> None:
    specs: list[dict[str, Any]] = [{"label": "a"}, {"label": "b"}, {"label": "c"}]
    async with open_pools(specs) as (pools, _):
        cluster = Cluster(pools[::-1] if reverse else pools)
        assert await label_of(cluster) == ("c" if reverse else "a")


async def test_selection_prefers_idle_over_spare_capacity() -> None:
    specs: list[dict[str, Any]] = [
        {"label": "big", "max": 10},
        {"label": "warm", "min": 1, "max": 1},
    ]
    async with open_pools(specs) as (pools, backends):
        cluster = Cluster(pools)
        assert await label_of(cluster) == "warm"
        assert backends[0].created == []


async def test_pools_lists_members_in_insertion_order_as_a_copy() -> None:
    specs: list[dict[str, Any]] = [{"label": "a"}, {"label": "b"}, {"label": "c"}]
    async with open_pools(specs) as (pools, _):
        a, b, c = pools
        cluster = Cluster([a, b])
        assert cluster.pools == [a, b]
        listing = cluster.pools
        listing.append(c)
        assert cluster.pools == [a, b]
        cluster.add_pool(c)
        assert cluster.pools == [a, b, c]
        cluster.add_pool(a)  # already present: no-op
        assert cluster.pools == [a, b, c]
        cluster.remove_pool(b)
        assert cluster.pools == [a, c]
        with pytest.raises(InvalidArgumentError):
            cluster.remove_pool(b)
        assert cluster.pools == [a, c]


async def test_a_removed_pool_is_no_longer_used_and_an_added_one_is() -> None:
    specs: list[dict[str, Any]] = [{"label": "a", "min": 2}, {"label": "b", "capabilities": ("x",)}]
    async with open_pools(specs) as (pools, _):
        a, b = pools
        cluster = Cluster([a])
        assert await label_of(cluster) == "a"
        cluster.remove_pool(a)
        with pytest.raises(NoCapablePoolError):
            await label_of(cluster)
        cluster.add_pool(b)
        assert await label_of(cluster, "x") == "b"
        assert await label_of(cluster) == "b"


async def test_cluster_end_ends_every_pool_and_consolidates_errors() -> None:
    specs: list[dict[str, Any]] = [{"label": "a"}, {"label": "b"}, {"label": "c"}]
    async with open_pools(specs) as (pools, backends):
        resources = []
        for pool in pools:
            async with pool.acquire() as resource:
                resources.append(resource)
        error_a, error_c = DisposeError("a"), DisposeError("c")
        resources[0].dispose_error = error_a
        resources[2].dispose_error = error_c
        cluster = Cluster(pools)
        errors = await cluster.end()
        assert len(errors) == 2
        assert error_chain_contains(errors, error_a)
        assert error_chain_contains(errors, error_c)
        for pool, backend in zip(pools, backends, strict=True):
            assert backend.disposed == backend.created
            with pytest.raises(PoolDestroyedError):
                await pool.checkout()
        with pytest.raises(PoolDestroyedError):
            async with cluster.acquire():
                pass  # pragma: no cover


async def test_cluster_end_ends_pools_concurrently(autojump_clock: trio.testing.MockClock) -> None:
    specs: list[dict[str, Any]] = [{"label": "a"}, {"label": "b"}]
    async with open_pools(specs) as (pools, _):
        a, b = pools
        held_a, held_b = await a.checkout(), await b.checkout()
        cluster = Cluster(pools)
        async with trio.open_nursery() as nursery:

            async def release_later(
                pool: ResourcePool[FakeResource], resource: FakeResource
            ) -> None:
                await trio.sleep(5)
                pool.release(resource)

            nursery.start_soon(release_later, a, held_a)
            nursery.start_soon(release_later, b, held_b)
            assert await cluster.end() == []
            assert trio.current_time() == pytest.approx(5.0)


async def test_ending_pools_are_skipped_while_another_capable_pool_is_open() -> None:
    specs: list[dict[str, Any]] = [{"label": "a", "min": 3}, {"label": "b"}]
    async with open_pools(specs) as (pools, _):
        a = pools[0]
        cluster = Cluster(pools)
        held = await a.checkout()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.end)
            await quiet()
            with pytest.raises(PoolEndingError):
                await a.checkout()
            assert await label_of(cluster) == "b"
            a.release(held)


async def test_when_no_capable_pool_is_open_the_pools_own_error_surfaces() -> None:
    async with open_pools([{"label": "a"}]) as (pools, _):
        [a] = pools
        cluster = Cluster(pools)
        await a.end()
        with pytest.raises(PoolDestroyedError):
            await label_of(cluster)


async def test_bailed_pools_are_skipped_while_another_capable_pool_is_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    specs: list[dict[str, Any]] = [{"label": "broken"}, {"label": "healthy"}]
    async with open_pools(specs) as (pools, backends):
        broken, _healthy = pools
        backends[0].fail_always = True
        with pytest.raises(PoolBailedError):
            await broken.checkout()
        cluster = Cluster(pools)
        assert await label_of(cluster) == "healthy"
