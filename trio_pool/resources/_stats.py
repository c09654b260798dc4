"""ResourcePoolStats: the snapshot :meth:`ResourcePool.statistics` returns."""

from __future__ import annotations

import attrs

__all__ = ["ResourcePoolStats"]


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
