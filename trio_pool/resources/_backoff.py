"""The retry schedule for failed resource allocations."""

from __future__ import annotations

from collections.abc import Iterator
from typing import final

import attrs

from .._errors import InvalidArgumentError
from .._validate import check_positive

__all__ = ["Backoff"]


@final
@attrs.frozen
class Backoff:
    """Fibonacci backoff: delays of ``min``, ``min``, ``2·min``, ``3·min``, ``5·min``, …
    capped at ``max`` seconds.

    A pool waits ``delay(n)`` after its n-th consecutive failed allocation before trying
    again, so a dead backend is probed ever more gently instead of in a busy loop.

    Attributes:
        min: the first delay, in seconds (> 0).
        max: the cap on any delay, in seconds (>= ``min``).

    Raises:
        InvalidArgumentError: ``min`` is not > 0, or ``max`` is below ``min``.
    """

    min: float = 0.1
    max: float = 30.0

    def __attrs_post_init__(self) -> None:
        minimum = check_positive("backoff min", self.min)
        if check_positive("backoff max", self.max) < minimum:
            raise InvalidArgumentError(
                f"invalid backoff max: {self.max!r} is below min {self.min!r}"
            )

    def delay(self, attempt: int) -> float:
        """The delay after the ``attempt``-th consecutive failure (``attempt >= 1``)."""
        previous, current = 0, 1
        for _ in range(attempt - 1):
            previous, current = current, previous + current
            if self.min * current >= self.max:
                return self.max
        return min(self.min * current, self.max)

    def __iter__(self) -> Iterator[float]:
        """Yield ``delay(1)``, ``delay(2)``, … forever."""
        attempt = 1
        while True:
            yield self.delay(attempt)
            attempt += 1
