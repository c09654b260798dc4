"""Parsing and normalising origins (``scheme://host[:port]``)."""

from __future__ import annotations

import functools
from typing import final
from urllib.parse import urlsplit

import attrs

from .._errors import InvalidArgumentError

__all__ = ["Origin", "parse_origin"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


@final
@attrs.frozen
class Origin:
    """A normalised origin: what a ``connector=`` function receives (frozen, hashable).

    Example: ``Origin`` of ``"HTTP://Example.com:80"`` has ``scheme="http"``,
    ``host="example.com"``, ``port=80``, ``text="http://example.com"`` and
    ``authority="example.com"``.

    Attributes:
        scheme: ``"http"`` or ``"https"``.
        host: lower-case host name or IP literal (without brackets).
        port: the TCP port, defaults filled in.
        text: the normalised origin string (default port omitted).
        authority: ``host[:port]`` as sent in the ``Host`` header.
    """

    scheme: str
    host: str
    port: int
    text: str
    authority: str

    @property
    def is_https(self) -> bool:
        """True for ``https`` origins."""
        return self.scheme == "https"


def parse_origin(origin: object) -> Origin:
    """Parse and normalise ``origin``; raise ``InvalidArgumentError("invalid origin ...")``."""
    if isinstance(origin, Origin):
        return origin
    if not isinstance(origin, str):
        raise InvalidArgumentError(f"invalid origin {origin!r}: expected a str")
    return _parse_text(origin)


@functools.lru_cache(maxsize=512)
def _parse_text(origin: str) -> Origin:
    """:func:`parse_origin` of a string, cached: an absolute URL passed as a path (what the
    httpx transport passes on every request) names its origin again and again, and an
    :class:`Origin` is frozen, so one may be shared. Errors are raised, never cached."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError as exc:
        raise InvalidArgumentError(f"invalid origin {origin!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidArgumentError(f"invalid origin {origin!r}: scheme must be http or https")
    host = (parts.hostname or "").lower()
    if not host or parts.username is not None or parts.password is not None:
        raise InvalidArgumentError(f"invalid origin {origin!r}: expected scheme://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "#" in origin:
        raise InvalidArgumentError(
            f"invalid origin {origin!r}: an origin has no path, query or fragment"
        )
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    shown_host = f"[{host}]" if ":" in host else host
    authority = shown_host if port == _DEFAULT_PORTS[scheme] else f"{shown_host}:{port}"
    return Origin(scheme, host, port, f"{scheme}://{authority}", authority)
