"""ResourcePoolStats: the snapshot :meth:`ResourcePool.statistics` returns."""

from __future__ import annotations

from typing import final

import attrs

__all__ = ["Counters", "ResourcePoolStats"]


@final
@attrs.frozen
class ResourcePoolStats:
    """A snapshot of a :class:`ResourcePool`, returned by :meth:`ResourcePool.statistics`."""

    min: int
    """Resources kept open (the ``min`` option)."""
    max: int
    """The cap on :attr:`allocated` (the ``max`` option)."""
    allocated: int
    """Resources checked out, idle or being created."""
    available: int
    """Idle resources, ready to be handed out at once."""
    queued: int
    """Acquirers waiting for a resource."""
    max_requests: int | None
    """The cap on :attr:`queued`, or None for no cap (the ``max_requests`` option)."""
    live: bool
    """Whether an allocation has ever succeeded."""
    acquires_total: int = 0
    """Checkouts that succeeded, since the pool was made (cumulative)."""
    request_timeouts_total: int = 0
    """Acquirers that gave up on ``request_timeout`` (cumulative)."""
    allocation_errors_total: int = 0
    """Creations that failed or timed out (cumulative)."""
    ping_failures_total: int = 0
    """Pings that failed or timed out (cumulative)."""
    leaks_total: int = 0
    """Checkouts held longer than ``leak_timeout`` (cumulative)."""
    reset_failures_total: int = 0
    """Resets (the ``reset`` option) that raised or timed out (cumulative)."""


@attrs.define(slots=True)
class Counters:
    """The cumulative counters, written by the part of the pool that sees each event."""

    acquires: int = 0
    request_timeouts: int = 0
    allocation_errors: int = 0
    ping_failures: int = 0
    leaks: int = 0
    reset_failures: int = 0

    def totals(self) -> dict[str, int]:
        """The counters as :class:`ResourcePoolStats`' ``*_total`` keyword arguments."""
        return {
            "acquires_total": self.acquires,
            "request_timeouts_total": self.request_timeouts,
            "allocation_errors_total": self.allocation_errors,
            "ping_failures_total": self.ping_failures,
            "leaks_total": self.leaks,
            "reset_failures_total": self.reset_failures,
        }
