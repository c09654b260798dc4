"""``ClientOptions``: validation and undici's defaults for every per-connection option.

Options arrive as keyword arguments (``Client(origin, **options)``,
``Pool(origin, **options)``) and are validated once, at construction, into a frozen
:class:`ClientOptions`. Timeouts are seconds; ``0`` or ``None`` disables one (undici's
convention for ``0``, Trio's for ``None``), stored as ``None``.
"""

from __future__ import annotations

import math
import ssl
from typing import Any

import attrs

from .._errors import InvalidArgumentError

__all__ = ["ClientOptions", "timeout_option"]

_TIMEOUTS = (
    "connect_timeout",
    "headers_timeout",
    "body_timeout",
    "keep_alive_timeout",
    "keep_alive_max_timeout",
)


def timeout_option(value: object, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidArgumentError(f"invalid {name}: expected seconds as a number or None")
    if value < 0:
        raise InvalidArgumentError(f"invalid {name}: must not be negative")
    return float(value) if value else None


def _count(value: object, name: str, *, minimum: int, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgumentError(f"invalid {name}: expected an int >= {minimum}")
    return value


@attrs.frozen(kw_only=True)
class ClientOptions:
    """The validated options of one ``Client`` (see API.md 1.2 for their meaning)."""

    connect_timeout: float | None = 10.0
    headers_timeout: float | None = 300.0
    body_timeout: float | None = 300.0
    keep_alive_timeout: float | None = 4.0
    keep_alive_max_timeout: float | None = 600.0
    keep_alive_timeout_threshold: float = 2.0
    pipelining: int = 1
    max_requests_per_client: int | None = None
    max_header_size: int = 16384
    max_response_size: int | None = None
    strict_content_length: bool = True
    ssl_context: ssl.SSLContext | None = None
    retry_idempotent: bool = True

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> ClientOptions:
        """Validate keyword arguments; ``InvalidArgumentError`` names the bad one."""
        known = {field.name for field in attrs.fields(cls)}
        for name in kwargs:
            if name not in known:
                raise InvalidArgumentError(f"invalid option {name!r}: unknown option")
        values = dict(kwargs)
        for name in _TIMEOUTS:
            if name in values:
                values[name] = timeout_option(values[name], name)
        if "keep_alive_timeout_threshold" in values:
            threshold = timeout_option(
                values["keep_alive_timeout_threshold"], "keep_alive_timeout_threshold"
            )
            values["keep_alive_timeout_threshold"] = threshold or 0.0
        if "pipelining" in values:
            values["pipelining"] = _count(
                values["pipelining"], "pipelining", minimum=0, optional=False
            )
        for name, minimum in (("max_requests_per_client", 1), ("max_response_size", 0)):
            if name in values:
                values[name] = _count(values[name], name, minimum=minimum, optional=True)
        if "max_header_size" in values:
            values["max_header_size"] = _count(
                values["max_header_size"], "max_header_size", minimum=1, optional=False
            )
        for name in ("strict_content_length", "retry_idempotent"):
            if name in values and not isinstance(values[name], bool):
                raise InvalidArgumentError(f"invalid {name}: expected a bool")
        context = values.get("ssl_context")
        if context is not None and not isinstance(context, ssl.SSLContext):
            raise InvalidArgumentError("invalid ssl_context: expected an ssl.SSLContext or None")
        return cls(**values)

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments again (what ``Pool`` passes to ``factory``)."""
        return attrs.asdict(self, recurse=False)
