"""The upstreams of a ``BalancedPool`` and its weighted round-robin (see ``_balanced``).

Theory of operation
-------------------
:class:`Upstream` is what the BalancedPool knows of one upstream; only the BalancedPool
changes it (weights from its Pools' events, counters as requests are routed and end).
:class:`Rotation` is one capability's cursor of undici's interleaved weighted round-robin;
only a pick moves it. :func:`capable` and :func:`choose` are the routing decisions, pure
functions of the upstreams' state: asking never changes anything, choosing moves only the
cursor of the capability asked for.
"""

from __future__ import annotations

import attrs
import trio

from .._errors import BalancedPoolMissingUpstreamError
from ._pool import Pool

__all__ = ["Rotation", "Upstream", "Waiter", "capable", "choose"]


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


@attrs.define
class Rotation:
    """The weighted round-robin cursor of one capability (None: every upstream)."""

    index: int = -1  # position of the last pick
    current: int = 0  # the current weight

    def pick(self, order: list[Upstream], eligible: list[bool], step: int) -> Upstream:
        """Advance to the next eligible upstream (one must exist). Not a checkpoint."""
        count = len(order)
        top = max(up.weight for up, ok in zip(order, eligible, strict=True) if ok)
        heaviest: Upstream | None = None
        for _ in range(count):
            self.index = (self.index + 1) % count
            if self.index == 0:
                self.current -= step
                if self.current <= 0:
                    self.current = top
            upstream = order[self.index]
            if not eligible[self.index]:
                continue
            if heaviest is None or upstream.weight > heaviest.weight:
                heaviest = upstream
            if upstream.weight >= self.current:
                return upstream
        # The current weight is above every eligible weight (weights fell since it was set):
        # restart from the heaviest, the first of them in turn after the cursor.
        assert heaviest is not None
        self.current = heaviest.weight
        self.index = order.index(heaviest)
        return heaviest


def capable(order: list[Upstream], capability: str | None) -> list[bool]:
    """Which of ``order`` are open and carry ``capability`` (every one for None). Not a
    checkpoint.

    Raises:
        BalancedPoolMissingUpstreamError: none does (or there are no upstreams).
    """
    mask = [
        not up.pool.closed and (capability is None or capability in up.capabilities) for up in order
    ]
    if not any(mask):
        if capability is None:
            raise BalancedPoolMissingUpstreamError("no upstream has been added to the BalancedPool")
        raise BalancedPoolMissingUpstreamError(
            f"no upstream with capability {capability!r} in the BalancedPool"
        )
    return mask


def can_start(upstream: Upstream) -> bool:
    """Whether ``upstream`` takes a request now: entered, nothing queued in its Pool and no
    waiter promised it. Not a checkpoint."""
    return upstream.entered and not upstream.promised and upstream.pool.statistics().queued == 0


def choose(
    rotations: dict[str | None, Rotation],
    order: list[Upstream],
    capability: str | None,
    step: int,
    tried: list[str] | None = None,
) -> Upstream | None:
    """Pick an upstream for a request carrying ``capability`` (moving that capability's
    cursor), or None when none can take it now (nothing moves). Not a checkpoint.

    ``tried`` (a failover): upstreams not to pick again; then one that can start the
    request now is preferred, but any other entered one is taken rather than none (it
    queues in that Pool), and None means no untried upstream is left.

    Raises:
        BalancedPoolMissingUpstreamError: no upstream carries ``capability``.
    """
    mask = capable(order, capability)
    eligible = [ok and can_start(up) for up, ok in zip(order, mask, strict=True)]
    if tried is not None:
        eligible = [ok and up.origin not in tried for up, ok in zip(order, eligible, strict=True)]
        if not any(eligible):
            eligible = [
                ok and up.entered and not up.removed and up.origin not in tried
                for up, ok in zip(order, mask, strict=True)
            ]
    if not any(eligible):
        return None
    rotation = rotations.get(capability)
    if rotation is None:
        rotation = rotations[capability] = Rotation()
    upstream = rotation.pick(order, eligible, step)
    upstream.active += 1
    return upstream
