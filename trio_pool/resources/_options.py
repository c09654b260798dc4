"""ResourcePool's options: every constructor argument, validated once, then frozen.

Theory of operation
-------------------
:func:`pool_options` is the whole of the argument checking of :class:`ResourcePool`: it raises
:class:`InvalidArgumentError` naming the first bad argument, before the pool exists, and returns
a :class:`PoolOptions` whose fields are normalised (a timeout of ``0`` or infinity is ``None``:
no limit; ``bail_after=0`` stays ``0.0``: bail at the first failure). The record is frozen, so
every part of the pool (the façade, the allocator, the resource tasks) reads the same values and
none can change them.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

import attrs

from .._errors import InvalidArgumentError
from .._validate import check_count, check_positive, check_timeout
from ._backoff import Backoff

__all__ = ["PoolOptions", "check_sizes", "pool_options"]

T = TypeVar("T")

_numbers = itertools.count(1)  # the N of the default name "ResourcePool-N"


@attrs.frozen
class PoolOptions(Generic[T]):
    """The validated options of one pool (see :class:`ResourcePool` for their meaning)."""

    acquire: Callable[[], Awaitable[T]] | None
    dispose: Callable[[T], Awaitable[object]] | None
    open: Callable[[], AbstractAsyncContextManager[T]] | None
    destroy: Callable[[T], object] | None
    ping: Callable[[T], Awaitable[object]] | None
    reset: Callable[[T], Awaitable[object]] | None
    acquire_timeout: float | None
    dispose_timeout: float | None
    ping_timeout: float | None
    request_timeout: float | None
    idle_timeout: float | None
    sync_interval: float
    capabilities: tuple[str, ...]
    min: int
    max: int
    max_requests: int | None
    backoff: Backoff
    bail_after: float | None  # 0.0: at the first failure; None: never
    max_lifetime: float | None
    leak_timeout: float | None
    name: str


def pool_options(
    acquire: Any,
    dispose: Any,
    *,
    open: Any,
    destroy: Any,
    ping: Any,
    acquire_timeout: object,
    dispose_timeout: object,
    ping_timeout: object,
    capabilities: Any,
    min: object,
    max: object,
    max_requests: object,
    request_timeout: object,
    idle_timeout: object,
    sync_interval: object,
    backoff: object,
    bail_after: object,
    max_lifetime: object = None,
    leak_timeout: object = None,
    name: object = None,
    reset: Any = None,
) -> PoolOptions[Any]:
    """Check every argument of :class:`ResourcePool` and return them as one frozen record.

    Raises:
        InvalidArgumentError: an argument is out of its domain (the message names it).
    """
    if open is not None:
        if acquire is not None or dispose is not None:
            raise InvalidArgumentError(
                "invalid arguments: give either open or acquire and dispose, not both"
            )
        if not callable(open):
            raise InvalidArgumentError(f"invalid open: expected a callable, got {open!r}")
    elif acquire is None or dispose is None:
        missing = "dispose" if acquire is not None else "acquire"
        raise InvalidArgumentError(f"invalid {missing}: give acquire and dispose together, or open")
    for label, fn in (("acquire", acquire), ("dispose", dispose), ("destroy", destroy),
                      ("ping", ping), ("reset", reset)):  # fmt: skip
        if fn is not None and not callable(fn):
            raise InvalidArgumentError(f"invalid {label}: expected a callable, got {fn!r}")
    timeouts = {
        name: check_timeout(name, value)
        for name, value in (
            ("acquire_timeout", acquire_timeout),
            ("dispose_timeout", dispose_timeout),
            ("ping_timeout", ping_timeout),
            ("request_timeout", request_timeout),
            ("idle_timeout", idle_timeout),
            ("max_lifetime", max_lifetime),
            ("leak_timeout", leak_timeout),
        )
    }
    interval = check_positive("sync_interval", sync_interval)
    tags = () if isinstance(capabilities, str) else tuple(capabilities)
    if isinstance(capabilities, str) or not all(isinstance(tag, str) for tag in tags):
        raise InvalidArgumentError(
            f"invalid capabilities: expected a sequence of strings, got {capabilities!r}"
        )
    minimum, maximum = check_sizes(min, max)
    requests = check_count("max_requests", max_requests, allow_none=True)
    if backoff is None:
        backoff = Backoff()
    elif not isinstance(backoff, Backoff):
        raise InvalidArgumentError(f"invalid backoff: expected a Backoff, got {backoff!r}")
    # Here 0 is a real value (bail at the first failure), not "no limit" as elsewhere; None
    # and infinity mean never.
    bail = check_timeout("bail_after", bail_after)
    if bail_after == 0:
        bail = 0.0
    if name is None:
        name = f"ResourcePool-{next(_numbers)}"
    elif not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"invalid name: expected a non-empty string, got {name!r}")
    return PoolOptions(
        acquire=acquire,
        dispose=dispose,
        open=open,
        destroy=destroy,
        ping=ping,
        reset=reset,
        sync_interval=interval,
        capabilities=tags,
        min=minimum,
        max=maximum,
        max_requests=requests,
        backoff=backoff,
        bail_after=bail,
        name=name,
        **timeouts,
    )


def check_sizes(min: object, max: object) -> tuple[int, int]:
    """Check ``min`` and ``max`` (as the constructor and ``resize()`` take them).

    Raises:
        InvalidArgumentError: either is out of its domain, or ``max`` is below ``min``.
    """
    minimum = check_count("min", min)
    maximum = check_count("max", max, minimum=1)
    assert minimum is not None
    assert maximum is not None
    if maximum < minimum:
        raise InvalidArgumentError(f"invalid max: {max!r} is below min {min!r}")
    return minimum, maximum
