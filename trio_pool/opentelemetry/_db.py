"""The database-client connection-pool metrics of one :class:`~trio_pool.ResourcePool`.

Theory of operation
-------------------
:class:`PoolMetrics` reports what the conventions ask of a connection pool, each with
``db.client.connection.pool.name`` = the pool's ``name``:

* observed from ``statistics()`` (O(1), no I/O; read from the metric reader's thread):
  ``db.client.connection.count`` (``idle`` = ``available``; ``used`` = ``allocated -
  available``: checked out, or being created for a waiter), ``.max``, ``.idle.min``,
  ``.pending_requests`` (``queued``) and ``.timeouts`` (``request_timeouts_total``);
* recorded from the pool's events: ``db.client.connection.wait_time`` (``"acquired"``) and
  ``.use_time`` (``"released"``); the pool takes those times only while someone listens.

Only :meth:`PoolMetrics.start` and :meth:`PoolMetrics.stop` register and remove the sources
and listeners.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.metrics import Meter, Observation

from ..resources._pool import ResourcePool
from ._observers import Hub, Kind, Source
from ._semconv import (
    DB_CONNECTION_COUNT,
    DB_CONNECTION_IDLE_MIN,
    DB_CONNECTION_MAX,
    DB_CONNECTION_PENDING_REQUESTS,
    DB_CONNECTION_TIMEOUTS,
    DB_CONNECTION_USE_TIME,
    DB_CONNECTION_WAIT_TIME,
    DB_POOL_NAME,
    DB_STATE,
    seconds_histogram,
)

__all__ = ["PoolMetrics"]


class PoolMetrics:
    """The connection-pool metrics of one resource pool (see the module docstring)."""

    def __init__(self, pool: ResourcePool[Any], meter: Meter, hub: Hub) -> None:
        self._pool = pool
        self._hub = hub
        self._name = {DB_POOL_NAME: pool.name}
        self._wait_time = seconds_histogram(
            meter,
            DB_CONNECTION_WAIT_TIME,
            "The time it took to obtain an open connection from the pool.",
        )
        self._use_time = seconds_histogram(
            meter,
            DB_CONNECTION_USE_TIME,
            "The time between borrowing a connection and returning it to the pool.",
        )
        # name -> (kind, unit, description, source): the observed metrics.
        self._observed: dict[str, tuple[Kind, str, str, Source]] = {
            DB_CONNECTION_COUNT: (
                "up_down_counter",
                "{connection}",
                "The number of connections that are currently in state described by the state"
                " attribute.",
                self._count,
            ),
            DB_CONNECTION_MAX: (
                "up_down_counter",
                "{connection}",
                "The maximum number of open connections allowed.",
                lambda: [Observation(self._pool.statistics().max, self._name)],
            ),
            DB_CONNECTION_IDLE_MIN: (
                "up_down_counter",
                "{connection}",
                "The minimum number of idle open connections allowed.",
                lambda: [Observation(self._pool.statistics().min, self._name)],
            ),
            DB_CONNECTION_PENDING_REQUESTS: (
                "up_down_counter",
                "{request}",
                "The number of current pending requests for an open connection.",
                lambda: [Observation(self._pool.statistics().queued, self._name)],
            ),
            DB_CONNECTION_TIMEOUTS: (
                "counter",
                "{timeout}",
                "The number of connection timeouts that have occurred trying to obtain a"
                " connection from the pool.",
                lambda: [Observation(self._pool.statistics().request_timeouts_total, self._name)],
            ),
        }

    def start(self) -> None:
        """Observe the pool and listen to its checkouts."""
        for name, (kind, unit, description, source) in self._observed.items():
            self._hub.add(name, kind, unit, description, source)
        self._pool.on("acquired", self._acquired)
        self._pool.on("released", self._released)

    def stop(self) -> None:
        """Undo :meth:`start`."""
        for name, (*_, source) in self._observed.items():
            self._hub.remove(name, source)
        self._pool.off("acquired", self._acquired)
        self._pool.off("released", self._released)

    def _count(self) -> Iterable[Observation]:
        stats = self._pool.statistics()
        return [
            Observation(stats.available, {**self._name, DB_STATE: "idle"}),
            Observation(stats.allocated - stats.available, {**self._name, DB_STATE: "used"}),
        ]

    def _acquired(self, wait: float) -> None:
        self._wait_time.record(wait, self._name)

    def _released(self, held: float) -> None:
        self._use_time.record(held, self._name)
