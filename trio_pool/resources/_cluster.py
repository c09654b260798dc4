"""Cluster: pick among ResourcePools by capability tag, then by how idle they are.

A cluster owns no tasks: its pools are entered (``async with``) by the caller, which keeps
their lifetimes structured. Selection is a synchronous scan over the cluster's pools (a
handful: a primary and its replicas), so it costs O(number of pools) per acquire.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar, final

import trio

from .._errors import InvalidArgumentError, NoCapablePoolError, PoolDestroyedError
from ._pool import ResourcePool

__all__ = ["Cluster"]

T = TypeVar("T")


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

    def remove_pool(self, pool: ResourcePool[T]) -> None:
        """Stop selecting ``pool`` (its own lifetime is untouched).

        Raises:
            InvalidArgumentError: ``pool`` is not in this cluster.
        """
        for index, present in enumerate(self._pools):
            if present is pool:
                del self._pools[index]
                return
        raise InvalidArgumentError(f"invalid pool: {pool!r} is not in this cluster")

    def acquire(self, capability: str | None = None) -> AbstractAsyncContextManager[T]:
        """``async with cluster.acquire(capability) as resource:`` from the best capable pool.

        The pool is chosen when this is called; entering the block is a checkpoint and
        raises what that pool's :meth:`ResourcePool.acquire` raises.

        Raises:
            NoCapablePoolError: no pool has ``capability`` (or the cluster is empty).
            PoolDestroyedError: :meth:`end` was called.
        """
        if self._ended:
            raise PoolDestroyedError("Cluster is ended")
        return self._select(capability).acquire()

    def _select(self, capability: str | None) -> ResourcePool[T]:
        capable = [p for p in self._pools if capability is None or capability in p.capabilities]
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
