"""The upstreams of a ``BalancedPool`` and its weighted round-robin (see ``_balanced``).

Theory of operation
-------------------
:class:`Upstream` is what the BalancedPool knows of one upstream; only the BalancedPool
changes it (weights from its Pools' events, counters as requests are routed and end).

:class:`Router` picks. Each capability (None: every upstream) has its *members* (the
upstreams carrying it, in insertion order, and their highest weight), cached until the
BalancedPool reports a change (:meth:`Router.changed`, :meth:`Router.rose`), and its own
:class:`Rotation`: undici's interleaved weighted round-robin cursor over the members. A
pick walks the cursor and probes only the upstreams it passes (each probe O(1)), so with
comparable weights a pick costs O(1) whatever the number of upstreams:

1. *Ready first*: the walk takes the first upstream in turn that can start the request
   now (an idle or spare connection, or room for a new one, and nothing queued), looking
   at most :data:`LOOKAHEAD` positions ahead — a request is not queued behind a busy
   upstream while one of the next ones is free.
2. Otherwise the walk (from the same place) takes the first *eligible* one (nothing queued
   in its Pool, no waiter promised it), over at most one pass.
3. A pass that finds nobody at or above the current weight (weights fell since it was
   set) takes the heaviest eligible member, first in turn after the cursor (O(members),
   rare).

Only a pick that returns an upstream moves the cursor; one that finds none puts it back,
so asking never changes the rotation (undici#4839). The GCD step is recomputed when a
weight falls or the upstreams change, not when one rises (undici's sequences rely on it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import trio

from .._errors import BalancedPoolMissingUpstreamError
from ._pool import Pool

if TYPE_CHECKING:
    from .._handoff import HandoffQueue

__all__ = ["LOOKAHEAD", "Router", "Upstream", "Waiter", "can_start"]

LOOKAHEAD = 8
"""Positions a pick looks ahead for an upstream that can start the request now."""


@attrs.define(eq=False)
class Upstream:
    """One upstream origin: its Pool and what the scheduler knows about it."""

    origin: str
    pool: Pool
    capabilities: frozenset[str]
    weight: int
    entered: bool = False  # the holder task is inside the Pool's async with block
    started: trio.Event = attrs.Factory(trio.Event)  # entered, or entering failed
    active: int = 0  # requests routed here that have not ended
    promised: int = 0  # waiters handed this upstream that have not used it yet
    removed: bool = False  # no new requests; the holder leaves once ``active`` is 0
    leave: trio.Event = attrs.Factory(trio.Event)  # tells the holder to leave the block

    def retire_when_idle(self) -> None:
        self.removed = True
        if self.active == 0:
            self.leave.set()


class Waiter:
    """The key of a request waiting in the BalancedPool's queue for an eligible upstream."""

    __slots__ = ("capability",)

    def __init__(self, capability: str | None) -> None:
        self.capability = capability


def can_start(upstream: Upstream) -> bool:
    """Whether ``upstream`` is *eligible*: open, entered, nothing queued in its Pool, no
    waiter promised it. O(1), not a checkpoint."""
    return (
        upstream.entered
        and not upstream.promised
        and not upstream.pool.closed
        and not upstream.pool._scheduler.queueing()
    )


def _ready(upstream: Upstream) -> bool:
    """Eligible, and its Pool starts a request at once (a free connection or a free slot)."""
    return (
        upstream.entered
        and not upstream.promised
        and not upstream.pool.closed
        and upstream.pool._scheduler.takes_now()
    )


@attrs.define
class Rotation:
    """The weighted round-robin cursor of one capability, over its members."""

    index: int = -1  # position of the last pick
    current: int = 0  # the current weight

    def walk(
        self,
        members: list[Upstream],
        top: int,
        step: int,
        accept: Callable[[Upstream], bool],
        limit: int,
    ) -> Upstream | None:
        """Advance up to ``limit`` positions to the next member at or above the current
        weight that ``accept`` takes; None if none (the cursor is then wherever the walk
        stopped: the caller restores it). Not a checkpoint."""
        count = len(members)
        for _ in range(limit):
            self.index = (self.index + 1) % count
            if self.index == 0:
                self.current -= step
                if self.current <= 0:
                    self.current = top
            upstream = members[self.index]
            # The weight first: it costs nothing, a probe of the Pool a little.
            if upstream.weight >= self.current and accept(upstream):
                return upstream
        return None


class Router:
    """Picks upstreams (see the module docstring); only the BalancedPool calls it."""

    __slots__ = ("_members", "_rotations", "step")

    def __init__(self) -> None:
        self._rotations: dict[str | None, Rotation] = {}
        self._members: dict[str | None, tuple[list[Upstream], int]] = {}
        self.step = 0  # the GCD of the weights

    def changed(self, order: list[Upstream]) -> None:
        """The upstreams changed or a weight fell: new step, members recomputed."""
        self.step = math.gcd(*(up.weight for up in order))
        self._members.clear()

    def rose(self) -> None:
        """A weight rose: the highest weights are recomputed (not the step)."""
        self._members.clear()

    def _of(self, order: list[Upstream], capability: str | None) -> tuple[list[Upstream], int]:
        entry = self._members.get(capability)
        if entry is None:
            members = [up for up in order if capability is None or capability in up.capabilities]
            top = max((up.weight for up in members), default=0)
            entry = self._members[capability] = (members, top)
        return entry

    def choose(
        self, order: list[Upstream], capability: str | None, tried: list[str] | None = None
    ) -> Upstream | None:
        """Pick an upstream for a request carrying ``capability`` (moving that capability's
        cursor), or None when none is eligible now (nothing moves). Not a checkpoint.

        ``tried`` (a failover): upstreams not to pick again; then any other entered one is
        taken rather than none (it queues in that Pool), and None means none is left.

        Raises:
            BalancedPoolMissingUpstreamError: no open upstream carries ``capability``.
        """
        members, top = self._of(order, capability)
        if len(members) == 1 and tried is None:
            # One upstream: no rotation to walk (its cursor would only ever name it).
            only = members[0]
            if can_start(only):
                only.active += 1
                return only
            _check_capable(members, capability)
            return None
        if not members:
            _check_capable(members, capability)
        rotation = self._rotations.get(capability)
        if rotation is None:
            rotation = self._rotations[capability] = Rotation()
        index, current = rotation.index, rotation.current
        count = len(members)
        if tried is None:
            upstream = rotation.walk(members, top, self.step, _ready, min(LOOKAHEAD, count))
            if upstream is None:
                rotation.index, rotation.current = index, current
                upstream = rotation.walk(members, top, self.step, can_start, count)
            if upstream is None:
                upstream = self._heaviest(rotation, members, can_start)
        else:

            def untried(up: Upstream) -> bool:
                return up.origin not in tried and can_start(up)

            def entered(up: Upstream) -> bool:
                return up.origin not in tried and up.entered and not up.pool.closed

            upstream = self._heaviest(rotation, members, untried) or self._heaviest(
                rotation, members, entered
            )
        if upstream is None:
            rotation.index, rotation.current = index, current
            _check_capable(members, capability)
            return None
        upstream.active += 1
        return upstream

    def hand_out(self, queue: HandoffQueue[Waiter, Upstream], order: list[Upstream]) -> None:
        """Give eligible upstreams to the waiters in ``queue``, in queue order; fail those
        no upstream can ever serve. Not a checkpoint."""
        while queue:
            # The head first, with no copy of the queue: usually it is served, or nothing
            # is eligible at all.
            waiter = queue.head()
            if self._serve(queue, order, waiter):
                continue
            if waiter.capability is not None:
                # Waiters behind it may want other upstreams (a snapshot: serving changes
                # the queue).
                exhausted = {waiter.capability}  # capabilities with nothing eligible left
                for later in queue:
                    if later.capability in exhausted or self._serve(queue, order, later):
                        continue
                    if later.capability is None:
                        break  # nothing is eligible at all
                    exhausted.add(later.capability)
            break

    def _serve(
        self, queue: HandoffQueue[Waiter, Upstream], order: list[Upstream], waiter: Waiter
    ) -> bool:
        """Hand ``waiter`` an eligible upstream, or fail it if none can ever serve it: True
        if it left the queue."""
        try:
            upstream = self.choose(order, waiter.capability)
        except BalancedPoolMissingUpstreamError as exc:  # its upstreams were removed
            queue.fail(exc, waiter)
            return True
        if upstream is None:
            return False
        upstream.promised += 1
        queue.hand(upstream, waiter)
        return True

    @staticmethod
    def _heaviest(
        rotation: Rotation, members: list[Upstream], accept: Callable[[Upstream], bool]
    ) -> Upstream | None:
        """The heaviest member ``accept`` takes, first in turn after the cursor; the cursor
        moves to it. O(members)."""
        count = len(members)
        best: Upstream | None = None
        best_index = -1
        for step in range(1, count + 1):
            index = (rotation.index + step) % count
            upstream = members[index]
            if (best is None or upstream.weight > best.weight) and accept(upstream):
                best, best_index = upstream, index
        if best is not None:
            rotation.index, rotation.current = best_index, best.weight
        return best


def _check_capable(members: list[Upstream], capability: str | None) -> None:
    """Raise ``BalancedPoolMissingUpstreamError`` if no open upstream carries
    ``capability``. O(members)."""
    if any(not up.pool.closed for up in members):
        return
    if capability is None:
        raise BalancedPoolMissingUpstreamError("no upstream has been added to the BalancedPool")
    raise BalancedPoolMissingUpstreamError(
        f"no upstream with capability {capability!r} in the BalancedPool"
    )
