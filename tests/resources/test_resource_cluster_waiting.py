"""Cluster.acquire waiting across pools (issue 17, API.md section 9): when no capable pool has an
idle resource, waiters are served first come, first served by the first capable pool that frees
or creates one. Virtual time throughout (``autojump_clock``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from resource_fakes import AllocationError, FakeBackend, FakeResource, make_pool, quiet

from trio_pool import (
    Cluster,
    PoolDestroyedError,
    PoolEndingError,
    PoolFullError,
    RequestTimeoutError,
    ResourcePool,
)


@asynccontextmanager
async def two_pools(
    a: dict[str, Any] | None = None,
    b: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[tuple[Cluster[FakeResource], list[ResourcePool[FakeResource]]]]:
    """Pools "a" (read, write) and "b" (read), each ``max=1`` unless ``options`` say (``a`` and
    ``b``: options for that pool only)."""
    options = {"max": 1, **options}
    async with AsyncExitStack() as stack:
        pools = [
            await stack.enter_async_context(
                make_pool(FakeBackend(label=label), capabilities=tags, **options, **own)
            )
            for label, tags, own in (("a", ("read", "write"), a or {}), ("b", ("read",), b or {}))
        ]
        yield Cluster(pools), pools


@attrs.define(eq=False)
class ClusterHolder:
    """One cluster acquirer, run as a task: holds its resource until told to let go."""

    cluster: Cluster[FakeResource]
    name: str
    order: list[str]
    capability: str | None = "read"
    resource: FakeResource | None = None
    let_go: trio.Event = attrs.field(factory=trio.Event)
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    async def run(self) -> None:
        with self.scope:
            async with self.cluster.acquire(self.capability) as resource:
                self.resource = resource
                self.order.append(f"{self.name}:{resource.label}")
                await self.let_go.wait()


async def start(nursery: trio.Nursery, holder: ClusterHolder) -> ClusterHolder:
    nursery.start_soon(holder.run)
    await quiet()
    return holder


def stats_of(pool: ResourcePool[Any]) -> tuple[int, int, int]:
    stats = pool.statistics()
    return (stats.allocated, stats.available, stats.queued)


async def test_waiters_are_served_fifo_by_whichever_pool_frees_a_resource(
    autojump_clock: trio.testing.MockClock,
) -> None:
    order: list[str] = []
    async with two_pools() as (cluster, (a, b)), trio.open_nursery() as nursery:
        first = await start(nursery, ClusterHolder(cluster, "h1", order))
        second = await start(nursery, ClusterHolder(cluster, "h2", order))
        assert order == ["h1:a", "h2:b"]  # both pools are full now
        waiters = [await start(nursery, ClusterHolder(cluster, f"w{n}", order)) for n in (1, 2, 3)]
        assert (a.statistics().queued, b.statistics().queued) == (0, 0)  # on the cluster's queue
        second.let_go.set()  # b frees first: the oldest waiter gets b's resource
        await quiet()
        assert order[2:] == ["w1:b"]
        first.let_go.set()
        await quiet()
        assert order[2:] == ["w1:b", "w2:a"]
        waiters[0].let_go.set()
        await quiet()
        assert order[2:] == ["w1:b", "w2:a", "w3:b"]
        for waiter in waiters:
            waiter.let_go.set()
    assert stats_of(a) == (0, 0, 0)  # the pools ended with their blocks


async def test_a_waiter_is_served_by_a_new_allocation_in_a_pool_with_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    order: list[str] = []
    async with two_pools() as (cluster, (_, b)):
        b.resize(max=2)
        async with trio.open_nursery() as nursery:
            await start(nursery, ClusterHolder(cluster, "h1", order))
            await start(nursery, ClusterHolder(cluster, "h2", order))
            assert order == ["h1:b", "h2:a"]  # the most spare capacity first
            # Nothing is idle; b has room for one more: the waiter gets b's new resource.
            waiter = await start(nursery, ClusterHolder(cluster, "w", order))
            assert order == ["h1:b", "h2:a", "w:b"]
            assert b.statistics().allocated == 2
            waiter.scope.cancel()
            nursery.cancel_scope.cancel()


async def test_a_capability_only_one_pool_has_waits_for_that_pool(
    autojump_clock: trio.testing.MockClock,
) -> None:
    order: list[str] = []
    async with two_pools() as (cluster, _), trio.open_nursery() as nursery:
        writer = await start(nursery, ClusterHolder(cluster, "h1", order, "write"))
        reader = await start(nursery, ClusterHolder(cluster, "h2", order, "read"))
        assert order == ["h1:a", "h2:b"]
        waiting_writer = await start(nursery, ClusterHolder(cluster, "w", order, "write"))
        waiting_reader = await start(nursery, ClusterHolder(cluster, "r", order, "read"))
        reader.let_go.set()  # b cannot serve the writer, which waits longer: the reader gets it
        await quiet()
        assert order[2:] == ["r:b"]
        writer.let_go.set()
        await quiet()
        assert order[2:] == ["r:b", "w:a"]
        waiting_writer.let_go.set()
        waiting_reader.let_go.set()


async def test_cancelling_waiters_leaves_both_pools_idle_and_the_next_acquire_works(
    autojump_clock: trio.testing.MockClock,
) -> None:
    order: list[str] = []
    async with two_pools() as (cluster, (a, b)):
        async with trio.open_nursery() as nursery:
            holders = [await start(nursery, ClusterHolder(cluster, f"h{n}", order)) for n in (1, 2)]
            waiters = [await start(nursery, ClusterHolder(cluster, f"w{n}", order)) for n in (1, 2)]
            for waiter in waiters:
                waiter.scope.cancel()
            await quiet()
            for holder in holders:
                holder.let_go.set()
        assert order == ["h1:a", "h2:b"]
        assert (stats_of(a), stats_of(b)) == ((1, 1, 0), (1, 1, 0))
        a._check_invariants()
        b._check_invariants()
        async with cluster.acquire("read") as resource:
            assert resource.label in ("a", "b")


async def test_a_waiter_cancelled_while_its_allocation_runs_leaves_it_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slow = FakeBackend(label="s", acquire_delay=5.0)
    async with make_pool(slow, capabilities=("read",), max=1) as s:
        only_slow = Cluster([s])
        with trio.move_on_after(1.0):
            async with only_slow.acquire("read"):
                raise AssertionError("served before its creation finished")  # pragma: no cover
        await trio.sleep(5.0)
        assert stats_of(s) == (1, 1, 0)
        async with only_slow.acquire("read") as resource:
            assert resource.label == "s"


async def test_cluster_end_fails_its_waiters(autojump_clock: trio.testing.MockClock) -> None:
    order: list[str] = []
    failures: list[BaseException] = []
    async with two_pools() as (cluster, _):
        async with trio.open_nursery() as nursery:
            holders = [await start(nursery, ClusterHolder(cluster, f"h{n}", order)) for n in (1, 2)]

            async def waiter() -> None:
                try:
                    async with cluster.acquire("read"):
                        pass  # pragma: no cover
                except PoolDestroyedError as exc:
                    failures.append(exc)

            nursery.start_soon(waiter)
            await quiet()
            nursery.start_soon(cluster.end)
            await quiet()
            assert len(failures) == 1
            for holder in holders:
                holder.let_go.set()


async def test_a_waiter_only_an_ending_pool_could_serve_fails_with_its_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    order: list[str] = []
    failures: list[BaseException] = []
    async with two_pools() as (cluster, (a, _)), trio.open_nursery() as nursery:
        writer = await start(nursery, ClusterHolder(cluster, "h1", order, "write"))
        reader = await start(nursery, ClusterHolder(cluster, "h2", order, "read"))

        async def waiting_writer() -> None:
            try:
                async with cluster.acquire("write"):
                    pass  # pragma: no cover
            except PoolEndingError as exc:
                failures.append(exc)

        nursery.start_soon(waiting_writer)
        waiting_reader = await start(nursery, ClusterHolder(cluster, "r", order, "read"))
        nursery.start_soon(a.end)
        await quiet()
        assert len(failures) == 1  # only a had "write"
        assert order == ["h1:a", "h2:b"]  # the reader still waits: b can serve it
        reader.let_go.set()
        await quiet()
        assert order == ["h1:a", "h2:b", "r:b"]
        writer.let_go.set()
        waiting_reader.let_go.set()


async def test_a_waiter_times_out_after_the_strictest_request_timeout_of_its_pools(
    autojump_clock: trio.testing.MockClock,
) -> None:
    order: list[str] = []
    async with two_pools(a={"request_timeout": 5.0}, b={"request_timeout": 2.0}) as (
        cluster,
        (a, b),
    ):
        async with trio.open_nursery() as nursery:
            holders = [await start(nursery, ClusterHolder(cluster, f"h{n}", order)) for n in (1, 2)]
            started = trio.current_time()
            with pytest.raises(RequestTimeoutError) as caught:
                async with cluster.acquire("read"):
                    raise AssertionError("served while both pools were full")  # pragma: no cover
            assert trio.current_time() - started == pytest.approx(2.0)  # b's, the strictest
            assert caught.value.__cause__ is None  # nothing was failing: the pools were busy
            timeouts = [pool.statistics().request_timeouts_total for pool in (a, b)]
            assert timeouts == [0, 1]
            # A writer only "a" can serve waits by a's own bound.
            started = trio.current_time()
            with pytest.raises(RequestTimeoutError):
                async with cluster.acquire("write"):
                    raise AssertionError("served while a was full")  # pragma: no cover
            assert trio.current_time() - started == pytest.approx(5.0)
            assert a.statistics().request_timeouts_total == 1
            for holder in holders:
                holder.let_go.set()
        assert (stats_of(a), stats_of(b)) == ((1, 1, 0), (1, 1, 0))
        a._check_invariants()
        b._check_invariants()
        async with cluster.acquire("read") as resource:  # the next acquire works
            assert resource.label in ("a", "b")


async def test_a_waiter_timing_out_during_an_outage_names_the_allocation_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    down = FakeBackend(label="d", fail_always=True)
    async with make_pool(down, max=1, request_timeout=3.0, bail_after=None) as pool:
        with pytest.raises(RequestTimeoutError) as caught:
            async with Cluster([pool]).acquire():
                raise AssertionError("served by a failing pool")  # pragma: no cover
        assert isinstance(caught.value.__cause__, AllocationError)
        assert stats_of(pool) == (0, 0, 0)
        down.fail_always = False
        async with Cluster([pool]).acquire() as resource:
            assert resource.label == "d"


async def test_a_ping_past_the_cluster_deadline_times_the_waiter_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(label="p", ping_delay=3.5)
    async with make_pool(backend, ping=True, max=1, request_timeout=4.0) as pool:
        cluster = Cluster([pool])
        order: list[str] = []
        async with trio.open_nursery() as nursery:
            holder = ClusterHolder(cluster, "h", order, None)
            nursery.start_soon(holder.run)
            await trio.sleep(3.6)  # created at once, pinged for 3.5 s: within the 4 s
            assert order == ["h:p"]
            started = trio.current_time()

            async def let_go_soon() -> None:
                await trio.sleep(1.0)
                holder.let_go.set()

            nursery.start_soon(let_go_soon)
            with pytest.raises(RequestTimeoutError):
                async with cluster.acquire():
                    raise AssertionError("served past its deadline")  # pragma: no cover
            assert trio.current_time() - started == pytest.approx(4.0)  # parked 1, pinged 3
        await quiet()
        pool._check_invariants()
        assert pool.statistics().request_timeouts_total == 1
        assert pool.statistics().queued == 0
        async with cluster.acquire() as resource:  # a new resource (the cut one is gone)
            assert resource.label == "p"


async def test_waiters_beyond_the_strictest_max_requests_are_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    order: list[str] = []
    async with two_pools(b={"max_requests": 1}) as (cluster, (a, b)):
        async with trio.open_nursery() as nursery:
            holders = [await start(nursery, ClusterHolder(cluster, f"h{n}", order)) for n in (1, 2)]
            waiter = await start(nursery, ClusterHolder(cluster, "w", order))
            with pytest.raises(PoolFullError):  # b allows one waiter: the reader competes
                async with cluster.acquire("read"):
                    raise AssertionError("served while both pools were full")  # pragma: no cover
            # A writer only "a" (no max_requests) can serve is not bound by b's limit.
            writer = await start(nursery, ClusterHolder(cluster, "w2", order, "write"))
            holders[0].let_go.set()
            await quiet()
            assert order == ["h1:a", "h2:b", "w:a"]
            holders[1].let_go.set()
            await quiet()
            assert order == ["h1:a", "h2:b", "w:a"]  # b's resource cannot serve the writer
            waiter.let_go.set()
            await quiet()
            assert order == ["h1:a", "h2:b", "w:a", "w2:a"]
            writer.let_go.set()
        assert (stats_of(a), stats_of(b)) == ((1, 1, 0), (1, 1, 0))
        async with cluster.acquire("read") as resource:
            assert resource.label in ("a", "b")
