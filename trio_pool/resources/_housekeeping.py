"""What the pool keeps: its sizes, the expiry of resources, and the periodic sweep.

Theory of operation
-------------------
The :class:`Housekeeper` owns the pool's sizing and expiry policy:

* ``min`` and ``max`` (the constructor's, then :meth:`Housekeeper.resize`'s);
* when a free resource must be retired instead of reused (:meth:`Housekeeper.expired`): it is
  from before the last ``expire_all()`` (the allocator's generation), past its own
  ``max_lifetime`` (the clock is read for it on release, only when ``max_lifetime`` is set), or
  the pool is over ``max`` after a resize down. ``may_expire`` stays False until one of these
  can happen, so the release path pays nothing for them until then;
* the periodic sweep, a task in the pool's nursery when ``idle_timeout``, ``max_lifetime`` or
  ``leak_timeout`` is set. Every ``sync_interval`` (a sleep, so virtual clocks take no real
  time) while the pool is open it evicts the idle resources older than ``idle_timeout``
  (oldest first, never below ``min``), retires the expired idle ones, logs one WARNING per
  checkout held longer than ``leak_timeout`` (naming where it was checked out) and counts it;
  then it asks the pool to refill.

A checkout is timed for ``leak_timeout`` from the first sweep that sees it (``Slot.leak_lease``),
which is after it began: it has been held at least ``leak_timeout`` when reported, and is
reported at most about ``sync_interval`` later than a clock read at checkout would allow. So
the checkout path reads no clock for it, and only notes its ``file:line``.

A retirement made on the pool's own initiative is logged (``retiring %r (why)``): like after
``remove()``, the slot is free at once and a replacement may open before the dispose begins.
Every change to a container goes through :class:`~._lending.Lending` or the pool's methods
(:class:`HousekeeperOwner`); all of it is synchronous but the sweep task's sleep.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

import trio

from ._allocator import Allocator
from ._lending import Lending
from ._options import PoolOptions, check_sizes
from ._slot import Slot
from ._stats import Counters

__all__ = ["Housekeeper", "HousekeeperOwner"]

logger = logging.getLogger("trio_pool.resource")


class HousekeeperOwner(Protocol):
    """The pool, as its housekeeping sees it (private methods: they are not the pool's API)."""

    def _accepting(self) -> bool:
        """Whether the pool is open (the sweep runs only then)."""

    def _allocated(self) -> int:
        """Idle + lent + being created."""

    def _retire(self, slot: Slot, *, graceful: bool) -> None:
        """Dispose of an un-lent slot, and refill."""

    def _maybe_allocate(self, arriving: int = 0) -> None:
        """Refill to ``min`` (and serve waiters)."""


class Housekeeper:
    """Sizes, expiry and the periodic sweep (see the module docstring)."""

    __slots__ = (
        "_allocator",
        "_counters",
        "_lending",
        "_options",
        "_owner",
        "_scope",
        "max",
        "may_expire",
        "min",
        "shrunk",
    )

    def __init__(
        self,
        owner: HousekeeperOwner,
        options: PoolOptions[Any],
        lending: Lending,
        allocator: Allocator,
        counters: Counters,
    ) -> None:
        self._owner = owner
        self._options = options
        self._lending = lending
        self._allocator = allocator
        self._counters = counters
        self._scope: trio.CancelScope | None = None
        self.min, self.max = options.min, options.max
        self.may_expire = options.max_lifetime is not None  # else until expire_all()/resize()
        self.shrunk = False  # resize() lowered max: "over max" becomes possible

    # ------------------------------------------------------------------ expiry

    def expired(self, slot: Slot, *, now: float | None = None, counted: bool = False) -> str | None:
        """Why a free slot must be retired instead of reused, or None. ``now``: the clock, if
        the caller read it (else it is read only for a slot with a lifetime); ``counted``: it
        is idle, so part of ``allocated``. Check ``may_expire`` first on a hot path."""
        if slot.generation != self._allocator.generation:
            return "expire_all()"
        expires = slot.expires_at
        if expires != math.inf:
            if now is None:
                clock = self._lending.clock
                now = trio.current_time() if clock is None else clock.current_time()
            if expires <= now:
                return "max_lifetime"
        if self.shrunk and self._owner._allocated() - counted >= self.max:
            return "over max"
        return None

    def expire(self, slot: Slot, why: str) -> None:
        """Retire an un-lent slot on the pool's own initiative (logged)."""
        logger.debug("%r: retiring %r (%s)", self._owner, slot.resource, why)
        self._owner._retire(slot, graceful=True)

    def expire_all(self) -> None:
        """A new generation: idle slots are retired now, the others when they come back."""
        self._allocator.generation += 1
        self.may_expire = True
        for slot in self._lending.take_all_idle():
            self.expire(slot, "expire_all()")

    def resize(self, minimum: object, maximum: object) -> None:
        """New sizes; surplus idle slots are retired now, lent ones when they come back.

        Raises:
            InvalidArgumentError: a size is out of its domain (nothing is changed).
        """
        self.min, self.max = check_sizes(minimum, maximum)
        self.may_expire = self.shrunk = True
        for slot in self._lending.stale(math.inf, self._owner._allocated() - self.max):
            self.expire(slot, "over max")

    # ------------------------------------------------------------------ the sweep

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
            spare = owner._allocated() - self.min
            for slot in lending.stale(now - options.idle_timeout, spare):
                logger.debug("%r: evicting idle %r", owner, slot.resource)
                owner._retire(slot, graceful=True)
        if self.may_expire or options.max_lifetime is not None:
            for slot in list(lending.idle):
                why = self.expired(slot, now=now, counted=True)
                if why is not None:
                    lending.drop_idle(slot)
                    self.expire(slot, why)
        if options.leak_timeout is not None:
            self._report_leaks(now, options.leak_timeout)

    def _report_leaks(self, now: float, leak_timeout: float) -> None:
        """One WARNING (and one count) per checkout held ``leak_timeout`` since this sweep
        first saw it."""
        for slot in self._lending.busy.values():
            site = slot.leak_site
            if site is None:
                continue  # reported already (or taken before leak_timeout applied)
            if slot.leak_lease != slot.lease:  # a checkout this sweep sees first
                slot.leak_lease, slot.lent_at = slot.lease, now
            elif slot.lent_at <= now - leak_timeout:
                code, line = site
                logger.warning(
                    "%r: %r checked out at %s:%s held over leak_timeout=%ss (a leak?)",
                    self._owner, slot.resource, code.co_filename, line, leak_timeout,
                )  # fmt: skip
                slot.leak_site = None
                self._counters.leaks += 1
