"""Argument checks shared by every public constructor.

Each returns the normalised value or raises :class:`InvalidArgumentError` naming the
argument, so a bad argument never gets as far as changing an object's state.
"""

from __future__ import annotations

import math

from ._errors import InvalidArgumentError

__all__ = ["check_count", "check_positive", "check_timeout"]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_timeout(name: str, value: object) -> float | None:
    """A duration in seconds where ``None`` or ``0`` mean "no limit"; returns None for those."""
    if value is None:
        return None
    if not _is_number(value) or math.isnan(value) or value < 0:  # type: ignore[arg-type,operator]
        raise InvalidArgumentError(f"invalid {name}: expected seconds >= 0 or None, got {value!r}")
    return None if value == 0 or math.isinf(value) else float(value)  # type: ignore[arg-type]


def check_positive(name: str, value: object) -> float:
    """A finite number of seconds > 0."""
    if not _is_number(value) or not math.isfinite(value) or value <= 0:  # type: ignore[arg-type,operator]
        raise InvalidArgumentError(f"invalid {name}: expected a number > 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_count(
    name: str, value: object, *, minimum: int = 0, allow_none: bool = False
) -> int | None:
    """An ``int`` (not a bool) ``>= minimum``, or None when ``allow_none``."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidArgumentError(
            f"invalid {name}: expected an integer >= {minimum}, got {value!r}"
        )
    return value
