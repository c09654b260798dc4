"""The ``reset`` option: a released resource is reset, in the pool's nursery, before reuse.

Theory of operation
-------------------
``release()`` is synchronous, so it cannot await the user's ``reset``: :meth:`Resetter.begin`
moves the slot from :class:`~._lending.Lending`'s ``busy`` map into its ``resetting`` map (still
counted in ``allocated``, never idle, never lent, so no waiter can get it half reset) and starts
one task in the pool's nursery that awaits ``reset(resource)`` under a deadline of
``ping_timeout``. When it ends, the task takes the slot out of ``resetting`` and gives it back
to its :class:`ResetOwner` (the pool): passed, the pool offers it as any released resource (the
head waiter gets it, else the idle stack); raised or timed out, the pool retires it (its
dispose runs) and ``reset_failures_total`` counts one.

Cancellation: while the pool ends, ``resetting`` counts as held, so ``end()`` waits for resets
to finish (each is bounded by ``ping_timeout``) and then disposes of the resources. A teardown
(the pool's block raised) destroys the resources in ``resetting`` with the rest and cancels the
tasks with the nursery; a cancelled task then only forgets its slot. A resource whose ``open=``
task ended during its reset (DEAD) is dropped, its place freed.

Only :meth:`Resetter.begin` and the reset task change ``resetting``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from .._supervisor import Supervisor
from ._lending import Lending
from ._options import PoolOptions
from ._slot import Slot, SlotState, deadline_after
from ._stats import Counters

__all__ = ["ResetOwner", "Resetter", "resetter"]

logger = logging.getLogger("trio_pool.resource")


class ResetOwner(Protocol):
    """The pool, as the reset tasks see it (private methods: they are not the pool's API)."""

    def _offer(self, slot: Slot) -> None:
        """A resource is free again: the head waiter gets it, else the idle stack."""

    def _retire(self, slot: Slot, *, graceful: bool) -> None:
        """Dispose of an un-lent slot, and refill."""

    def _settle(self) -> None:
        """A place was freed: refill, and see whether an ending pool is drained."""

    def _torn_down(self) -> bool:
        """Whether the pool was destroyed (its resources are already gone)."""


class Resetter:
    """Runs ``reset`` on released resources (see the module docstring)."""

    __slots__ = ("_counters", "_lending", "_owner", "_reset", "_supervisor", "_timeout")

    def __init__(
        self,
        owner: ResetOwner,
        reset: Callable[[Any], Awaitable[object]],
        timeout: float | None,
        lending: Lending,
        supervisor: Supervisor,
        counters: Counters,
    ) -> None:
        self._owner = owner
        self._reset = reset
        self._timeout = timeout
        self._lending = lending
        self._supervisor = supervisor
        self._counters = counters

    def begin(self, slot: Slot) -> None:
        """Start resetting a slot just taken back from its holder. Not a checkpoint."""
        slot.leak_site = None  # it is given back: no leak to report
        self._lending.resetting[id(slot.resource)] = slot
        self._supervisor.start_soon(self._run, slot, name=f"{self._owner!r} reset")

    async def _run(self, slot: Slot) -> None:
        failure: BaseException | None = None
        try:
            with trio.CancelScope(deadline=deadline_after(self._timeout)) as scope:
                await self._reset(slot.resource)
            # One that ignored its cancellation and came back late is as untrusted as one cut
            # off in time (as a ping is).
            if scope.cancelled_caught or trio.current_time() >= scope.deadline:
                failure = trio.TooSlowError(f"reset took over ping_timeout={self._timeout}s")
        except Exception as exc:
            failure = exc
        finally:
            # Cancelled only by a teardown, which destroyed the resource already.
            del self._lending.resetting[id(slot.resource)]
        owner = self._owner
        if owner._torn_down():
            return
        if slot.state is not SlotState.BUSY:  # its open= task ended under the reset
            owner._settle()
        elif failure is None:
            owner._offer(slot)
        else:
            self._counters.reset_failures += 1
            logger.debug("%r: reset of %r failed (%r); removing it", owner, slot.resource, failure)
            owner._retire(slot, graceful=True)


def resetter(
    owner: ResetOwner,
    options: PoolOptions[Any],
    lending: Lending,
    supervisor: Supervisor,
    counters: Counters,
) -> Resetter | None:
    """The pool's :class:`Resetter`, or None without a ``reset`` option."""
    if options.reset is None:
        return None
    return Resetter(owner, options.reset, options.ping_timeout, lending, supervisor, counters)
