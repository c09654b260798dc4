"""``ClientOptions``: validation and undici's defaults for every per-connection option.

Options arrive as keyword arguments (``Client(origin, **options)``,
``Pool(origin, **options)``) and are validated once, at construction, into a frozen
:class:`ClientOptions`. Timeouts are seconds; ``0`` or ``None`` disables one (undici's
convention for ``0``, Trio's for ``None``), stored as ``None``.
"""

from __future__ import annotations

import math
import os
import ssl
from typing import Any

import attrs

from .._errors import InvalidArgumentError
from .._validate import check_count, check_timeout
from .._version import __version__

__all__ = ["ClientOptions"]

_TIMEOUTS = (
    "connect_timeout",
    "headers_timeout",
    "body_timeout",
    "keep_alive_timeout",
    "keep_alive_max_timeout",
)


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
    socket_path: str | None = None
    local_address: str | None = None
    happy_eyeballs_delay: float | None = 0.25
    user_agent: bytes | None = f"trio_pool/{__version__}".encode("ascii")
    # Internal (ProxyAgent), never a keyword argument: None = origin-form request targets;
    # a tuple = absolute-form targets for a forward proxy (RFC 9112 3.2.2), plus these
    # headers on every request (proxy-authorization: never in a repr).
    proxy_form: tuple[tuple[bytes, bytes], ...] | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> ClientOptions:
        """Validate keyword arguments; ``InvalidArgumentError`` names the bad one."""
        known = {field.name for field in attrs.fields(cls)} - {"proxy_form"}
        for name in kwargs:
            if name not in known and name != "_proxy_form":
                raise InvalidArgumentError(f"invalid option {name!r}: unknown option")
        values = dict(kwargs)
        if "_proxy_form" in values:  # internal: ProxyAgent's pools (see the field)
            values["proxy_form"] = values.pop("_proxy_form")
        for name in _TIMEOUTS:
            if name in values:
                values[name] = check_timeout(name, values[name])
        if "keep_alive_timeout_threshold" in values:
            threshold = check_timeout(
                "keep_alive_timeout_threshold", values["keep_alive_timeout_threshold"]
            )
            values["keep_alive_timeout_threshold"] = threshold or 0.0
        counts = (
            ("pipelining", 0, False),
            ("max_requests_per_client", 1, True),
            ("max_response_size", 0, True),
            ("max_header_size", 1, False),
        )
        for name, minimum, optional in counts:
            if name in values:
                values[name] = check_count(name, values[name], minimum=minimum, allow_none=optional)
        for name in ("strict_content_length", "retry_idempotent"):
            if name in values and not isinstance(values[name], bool):
                raise InvalidArgumentError(f"invalid {name}: expected a bool")
        context = values.get("ssl_context")
        if context is not None and not isinstance(context, ssl.SSLContext):
            raise InvalidArgumentError("invalid ssl_context: expected an ssl.SSLContext or None")
        path = values.get("socket_path")
        if path is not None:
            if not isinstance(path, str | os.PathLike) or not os.fspath(path):
                raise InvalidArgumentError("invalid socket_path: expected a path or None")
            values["socket_path"] = os.fsdecode(os.fspath(path))
        address = values.get("local_address")
        if address is not None and (not isinstance(address, str) or not address):
            raise InvalidArgumentError("invalid local_address: expected an IP address or None")
        if "happy_eyeballs_delay" in values:
            delay = values["happy_eyeballs_delay"]
            # None = one address at a time; 0 is a delay here (every attempt at once).
            if delay is not None and (
                not isinstance(delay, int | float)
                or isinstance(delay, bool)
                or not 0 <= delay < math.inf
            ):
                raise InvalidArgumentError(
                    f"invalid happy_eyeballs_delay: expected seconds >= 0 or None, got {delay!r}"
                )
            values["happy_eyeballs_delay"] = None if delay is None else float(delay)
        if "user_agent" in values:
            values["user_agent"] = _user_agent(values["user_agent"])
        return cls(**values)


def _user_agent(value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str) and value and value.isprintable() and value.isascii():
        return value.encode("ascii")
    raise InvalidArgumentError("invalid user_agent: expected a printable ASCII str or None")
