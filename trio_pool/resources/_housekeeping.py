"""The pool's periodic sweep: idle eviction, lifetimes and expiry of idle resources, leaks.

Theory of operation
-------------------
A :class:`Housekeeper` task runs in the pool's nursery when ``idle_timeout``, ``max_lifetime``
or ``leak_timeout`` is set. Every ``sync_interval`` (a sleep, so virtual clocks take no real
time) while the pool is open it:

* evicts the idle resources older than ``idle_timeout``, oldest first, never below ``min``;
* retires the idle resources that are past their ``max_lifetime`` or from before an
  ``expire_all()`` (the release path catches the checked-out ones when they come back);
* logs one WARNING per checkout held longer than ``leak_timeout``, naming where it was checked
  out, and counts it;

then asks the pool to refill to ``min``. Every change goes through the pool's own methods
(:class:`HousekeeperOwner`) or :class:`~._lending.Lending`'s; the sweep itself is synchronous.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import trio

from ._lending import Lending
from ._options import PoolOptions
from ._slot import Slot
from ._stats import Counters

__all__ = ["Housekeeper", "HousekeeperOwner"]

logger = logging.getLogger("trio_pool.resource")


class HousekeeperOwner(Protocol):
    """The pool, as its sweep sees it (private methods: they are not the pool's API)."""

    def _accepting(self) -> bool:
        """Whether the pool is open (the sweep runs only then)."""

    def _spare(self) -> int:
        """How many resources could go without falling below ``min``."""

    def _expired(self, slot: Slot, *, counted: bool = False) -> str | None:
        """Why a slot must be retired rather than reused, or None."""

    def _expire(self, slot: Slot, why: str) -> None:
        """Retire a slot on the pool's own initiative."""

    def _retire(self, slot: Slot, *, graceful: bool) -> None:
        """Dispose of an un-lent slot, and refill."""

    def _maybe_allocate(self, arriving: int = 0) -> None:
        """Refill to ``min`` (and serve waiters)."""


class Housekeeper:
    """Runs the periodic sweep (see the module docstring)."""

    __slots__ = ("_counters", "_lending", "_options", "_owner", "_scope")

    def __init__(
        self,
        owner: HousekeeperOwner,
        options: PoolOptions[Any],
        lending: Lending,
        counters: Counters,
    ) -> None:
        self._owner = owner
        self._options = options
        self._lending = lending
        self._counters = counters
        self._scope: trio.CancelScope | None = None

    @property
    def needed(self) -> bool:
        """Whether the options ask for a sweep at all."""
        options = self._options
        return (options.idle_timeout, options.max_lifetime, options.leak_timeout) != (None,) * 3

    def stop(self) -> None:
        """End the sweep task (the pool has ended)."""
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        """The sweep task: every ``sync_interval`` sweep, then refill. Runs until stopped."""
        with trio.CancelScope() as self._scope:
            while True:
                await trio.sleep(self._options.sync_interval)
                if self._owner._accepting():
                    self._sweep(trio.current_time())
                self._owner._maybe_allocate()

    def _sweep(self, now: float) -> None:
        owner, options, lending = self._owner, self._options, self._lending
        if options.idle_timeout is not None:
            for slot in lending.stale(now - options.idle_timeout, owner._spare()):
                logger.debug("%r: evicting idle %r", owner, slot.resource)
                owner._retire(slot, graceful=True)
        for slot in list(lending.idle):
            why = owner._expired(slot, counted=True)
            if why is not None:
                lending.drop_idle(slot)
                owner._expire(slot, why)
        if options.leak_timeout is not None:
            self._report_leaks(now - options.leak_timeout)

    def _report_leaks(self, cutoff: float) -> None:
        """One WARNING (and one count) per checkout held since before ``cutoff``."""
        for slot in self._lending.busy.values():
            if slot.leak_site is not None and slot.lent_at <= cutoff:
                logger.warning(
                    "%r: %r checked out at %s held over leak_timeout=%ss (a leak?)",
                    self._owner, slot.resource, slot.leak_site, self._options.leak_timeout,
                )  # fmt: skip
                slot.leak_site = None
                self._counters.leaks += 1
