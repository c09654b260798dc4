"""Cluster: pick among ResourcePools by capability tag, then by how idle they are.

Theory of operation
-------------------
A cluster owns no tasks: its pools are entered (``async with``) by the caller, which keeps
their lifetimes structured. Selection is a synchronous scan over the cluster's pools (a
handful: a primary and its replicas), so it costs O(number of pools) per acquire.

When a capable open pool has an idle resource, the acquirer takes it from that pool. When none
has, the acquirer parks on the cluster's own :class:`~trio_pool._handoff.HandoffQueue`
(``_waiters``, keyed by a :class:`_Waiter` naming its capability) and is served, first come
first served among the waiters that pool can serve, by the first capable pool that frees or
creates a resource. The hook is each pool's :class:`~._lending.Lending` ``spills`` list, where
the cluster puts one :class:`_Spill` per pool (in :meth:`Cluster.add_pool`; removed by
:meth:`Cluster.remove_pool`): a resource that would go idle is handed to the oldest capable
cluster waiter instead (the pool's own waiters come first), and the pool counts, as demand to
allocate for, the waiters the cluster assigned to it: each waiter is assigned, when it parks,
to the capable open pool with the most spare capacity (none if all are full: it waits for a
release). Only the cluster parks and hands on ``_waiters``; a waiter cancelled while parked
leaves it with nothing handed (the hand-off's rule), so the pools stay as they were.

A parked waiter is bounded as strictly as the strictest capable pool would bound it: it waits
(and is pinged) at most the smallest ``request_timeout`` among the capable open pools when it
parks (:class:`RequestTimeoutError`, counted by that pool, ``__cause__`` its allocation outage
if any), and it is refused with :class:`PoolFullError` when the cluster waiters it competes
with (those some of its capable pools could serve) already reach the smallest
``max_requests`` among them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar, final

import attrs
import trio

from .._errors import (
    InvalidArgumentError,
    NoCapablePoolError,
    PoolDestroyedError,
    PoolFullError,
)
from .._handoff import HandoffQueue
from ._checkout import give_back
from ._pool import ResourcePool
from ._slot import Slot

__all__ = ["Cluster"]

T = TypeVar("T")

_INF = float("inf")


@final
class Cluster(Generic[T]):
    """A set of :class:`ResourcePool` objects acquired from as one.

    ``cluster.acquire("read")`` picks, among the pools whose ``capabilities`` include
    ``"read"``, the one with the most idle resources (ties: fewest queued acquirers, then
    most spare capacity, then the order the pools were added), and acquires from it.
    Pools that are ending, destroyed or bailed are passed over while another capable pool
    is open.

    Args:
        pools: the pools, already entered by the caller (an iterable, even for one pool).

    Raises:
        InvalidArgumentError: ``pools`` is not an iterable of :class:`ResourcePool`.
    """

    def __init__(self, pools: Iterable[ResourcePool[T]] = ()) -> None:
        try:
            members = iter(pools)  # a single pool is not iterable: Cluster(pool) lands here
        except TypeError:
            raise InvalidArgumentError(
                f"invalid pools: expected an iterable of ResourcePool, got {pools!r}"
            ) from None
        self._pools: list[ResourcePool[T]] = []
        self._spills: dict[int, _Spill] = {}  # id(pool) -> its hook into that pool
        self._waiters: HandoffQueue[_Waiter, tuple[ResourcePool[Any], Slot]] = HandoffQueue()
        self._ended = False
        for pool in members:
            self.add_pool(pool)

    def __repr__(self) -> str:
        return f"<Cluster of {len(self._pools)} pools{' (ended)' if self._ended else ''}>"

    @property
    def pools(self) -> list[ResourcePool[T]]:
        """The pools, in the order they were added (a copy)."""
        return list(self._pools)

    def add_pool(self, pool: ResourcePool[T]) -> None:
        """Add a pool; adding one already present does nothing.

        Raises:
            InvalidArgumentError: ``pool`` is not a :class:`ResourcePool`.
        """
        if not isinstance(pool, ResourcePool):
            raise InvalidArgumentError(f"invalid pool: expected a ResourcePool, got {pool!r}")
        if not any(p is pool for p in self._pools):
            self._pools.append(pool)
            spill = self._spills[id(pool)] = _Spill(self, pool)
            pool._lending.spills.append(spill)

    def remove_pool(self, pool: ResourcePool[T]) -> None:
        """Stop selecting ``pool`` (its own lifetime is untouched).

        Raises:
            InvalidArgumentError: ``pool`` is not in this cluster.
        """
        for index, present in enumerate(self._pools):
            if present is pool:
                del self._pools[index]
                pool._lending.spills.remove(self._spills.pop(id(pool)))
                return
        raise InvalidArgumentError(f"invalid pool: {pool!r} is not in this cluster")

    def acquire(self, capability: str | None = None) -> AbstractAsyncContextManager[T]:
        """``async with cluster.acquire(capability) as resource:`` from the best capable pool.

        Entering the block is a checkpoint. If a capable open pool has an idle resource, it
        comes from the best such pool (as above, chosen when this is called) and entering
        raises what that pool's :meth:`ResourcePool.acquire` raises. Otherwise the acquirer
        waits, first come first served, for the first capable pool that frees or creates a
        resource (a pool's own waiters are served before the cluster's); ``ping`` then runs
        as in that pool. That wait is bounded by the strictest ``request_timeout`` and
        ``max_requests`` of the capable pools.

        Raises:
            NoCapablePoolError: no pool has ``capability`` (or the cluster is empty).
            PoolDestroyedError: :meth:`end` was called.
            PoolFullError: as many cluster waiters as the smallest ``max_requests`` of the
                capable pools already wait for them.
            RequestTimeoutError: nothing came within the smallest ``request_timeout`` of the
                capable pools.
        """
        if self._ended:
            raise PoolDestroyedError("Cluster is ended")
        pool = self._select(capability)
        if pool.statistics().available or not pool._accepting():
            return pool.acquire()
        return _ClusterAcquire(self, capability)

    async def _take(self, capability: str | None) -> tuple[ResourcePool[Any], Slot]:
        """Check a slot out of the best capable pool, or of the first that can serve. A
        checkpoint."""
        await trio.lowlevel.checkpoint_if_cancelled()
        pool = self._select(capability)
        if pool.statistics().available or not pool._accepting():  # it changed meanwhile
            return pool, await pool._checkout.take()
        return await self._park(capability)

    async def _park(self, capability: str | None) -> tuple[ResourcePool[Any], Slot]:
        """Park on the cluster's queue until a capable pool hands over a lent slot, then
        check it out of that pool. A checkpoint."""
        capable = [p for p in self._pools if p._accepting() and _can(p, capability)]
        limits = [p._options.max_requests for p in capable if p._options.max_requests is not None]
        if limits and self._competing(capable) >= min(limits):
            raise PoolFullError("Pool is full")
        strictest = min(capable, key=_request_timeout, default=None)
        timeout = _request_timeout(strictest) if strictest is not None else _INF
        deadline = trio.current_time() + timeout
        spare = [p for p in capable if _spare(p) > 0]
        waiter = _Waiter(capability, max(spare, key=_spare) if spare else None)
        if waiter.assigned is not None:
            waiter.assigned._maybe_allocate(arriving=1)
        handed: tuple[ResourcePool[Any], Slot] | None = None
        with trio.CancelScope(deadline=deadline):
            # Once handed, the slot is this waiter's even if the deadline passes meanwhile.
            handed = await self._waiters.park(waiter)
        if handed is None:  # the deadline's scope caught its cancellation while parked
            assert strictest is not None
            raise strictest._checkout.timed_out()
        pool, slot = handed
        # The ping is bounded by the same deadline inside adopt(), as a pool's own acquirer's.
        return pool, await pool._checkout.adopt(slot, deadline)

    def _competing(self, capable: list[ResourcePool[T]]) -> int:
        """How many parked cluster waiters one of ``capable`` could serve."""
        return sum(
            any(_can(pool, waiter.capability) for pool in capable) for waiter in self._waiters
        )

    def _select(self, capability: str | None) -> ResourcePool[T]:
        capable = [p for p in self._pools if _can(p, capability)]
        if not capable:
            if capability is None:
                raise NoCapablePoolError("no capable pool: the cluster has no pools")
            raise NoCapablePoolError(f"no capable pool: no pool has capability {capability!r}")
        open_pools = [p for p in capable if p._accepting()]
        if not open_pools:
            return capable[0]  # its own acquire raises why it is closed
        return max(open_pools, key=_preference)

    async def end(self) -> list[BaseException]:
        """End every pool concurrently; return all their errors in one list. A checkpoint."""
        self._ended = True
        self._waiters.fail_all(lambda _: PoolDestroyedError("Cluster is ended"))
        errors: list[list[BaseException]] = [[] for _ in self._pools]

        async def end_one(index: int, pool: ResourcePool[Any]) -> None:
            errors[index] = await pool.end()

        async with trio.open_nursery() as nursery:
            for index, pool in enumerate(self._pools):
                nursery.start_soon(end_one, index, pool)
        return [error for pool_errors in errors for error in pool_errors]


def _preference(pool: ResourcePool[Any]) -> tuple[int, int, int]:
    stats = pool.statistics()
    return (stats.available, -stats.queued, stats.max - stats.allocated)


def _can(pool: ResourcePool[Any], capability: str | None) -> bool:
    return capability is None or capability in pool.capabilities


def _request_timeout(pool: ResourcePool[Any]) -> float:
    timeout = pool._options.request_timeout
    return _INF if timeout is None else timeout


def _spare(pool: ResourcePool[Any]) -> int:
    stats = pool.statistics()
    return stats.max - stats.allocated


@attrs.define(eq=False, slots=True)
class _Waiter:
    """A cluster acquirer parked on the cluster's queue (its key there)."""

    capability: str | None
    assigned: ResourcePool[Any] | None  # the pool that allocates for it, if any had room


@attrs.define(eq=False, slots=True)
class _Spill:
    """The cluster's hook into one pool (a :class:`~._lending.Spill`)."""

    cluster: Cluster[Any]
    pool: ResourcePool[Any]

    @property
    def waiters(self) -> HandoffQueue[_Waiter, tuple[ResourcePool[Any], Slot]]:
        return self.cluster._waiters

    def closed(self) -> None:
        """The pool stopped accepting: its waiters are assigned afresh; a waiter no open pool
        can serve any more fails with the reason this pool gives."""
        pools = self.cluster._pools
        for waiter in self.waiters:
            if waiter.assigned is self.pool:
                waiter.assigned = None
            if not any(p._accepting() and _can(p, waiter.capability) for p in pools):
                refusal = self.pool._refusal()
                assert refusal is not None
                self.waiters.fail(refusal, waiter)
        for pool in pools:
            if pool._accepting():
                pool._maybe_allocate()  # they take on the waiters left unassigned

    def claim(self) -> Callable[[Slot], object] | None:
        for waiter in self.waiters:  # oldest first; O(waiters) only while some wait
            if _can(self.pool, waiter.capability):
                return lambda slot: self.waiters.hand((self.pool, slot), waiter)
        return None

    def demand(self) -> int:
        if not self.waiters:
            return 0
        # A waiter that found every capable pool full is assigned to the first that asks
        # (it asks when a place frees up) and has room.
        pool, room = self.pool, _spare(self.pool)
        count = 0
        for waiter in self.waiters:
            if waiter.assigned is None and room > 0 and _can(pool, waiter.capability):
                waiter.assigned = pool
                room -= 1
            count += waiter.assigned is pool
        return count


@attrs.define(eq=False, slots=True)
class _ClusterAcquire(Generic[T]):
    """What :meth:`Cluster.acquire` returns when it must wait across the pools."""

    _cluster: Cluster[T]
    _capability: str | None
    _taken: tuple[ResourcePool[Any], Slot, int] | None = None

    async def __aenter__(self) -> T:
        pool, slot = await self._cluster._take(self._capability)
        self._taken = (pool, slot, slot.lease)
        return slot.resource  # type: ignore[no-any-return]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        taken, self._taken = self._taken, None
        assert taken is not None
        pool, slot, lease = taken
        give_back(pool._checkout, slot, lease)
