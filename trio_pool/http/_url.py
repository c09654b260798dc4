"""Absolute URLs of requests to many origins: ``scheme://host[:port]/path?query``.

Pure functions, plus a small cache that remembers the split of URLs already seen (a program
talks to the same few URLs again and again; ``urlsplit`` is the dearest step of routing).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .._errors import InvalidArgumentError
from ._origin import Origin, parse_origin

__all__ = ["UrlSplitter", "split_url"]

_CACHE_MAX = 256  # URLs remembered per agent; a full cache starts over


def split_url(url: object, what: str = "url") -> tuple[Origin, str]:
    """The origin of an absolute http(s) URL and its target (path and query, fragment
    dropped); ``InvalidArgumentError`` naming ``what`` otherwise. The message never quotes
    a URL that carries credentials."""
    if not isinstance(url, str):
        raise InvalidArgumentError(f"invalid {what}: expected an absolute URL str")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidArgumentError(f"invalid {what}: not a URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        shown = url if len(url) < 200 and "@" not in url else "(not shown)"
        raise InvalidArgumentError(
            f"invalid {what} {shown!r}: an Agent needs an absolute http:// or https:// URL"
        )
    if "@" in parts.netloc:
        raise InvalidArgumentError(f"invalid {what}: credentials in the URL are not sent")
    origin = parse_origin(f"{parts.scheme}://{parts.netloc}")
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return origin, target


class UrlSplitter:
    """:func:`split_url` with a bounded cache (one per agent: no state is shared). The hot
    path reads :attr:`cache` itself and calls the splitter only on a miss."""

    __slots__ = ("cache",)

    def __init__(self) -> None:
        self.cache: dict[str, tuple[Origin, str]] = {}

    def __call__(self, url: object) -> tuple[Origin, str]:
        cache = self.cache
        hit = cache.get(url) if type(url) is str else None
        if hit is not None:
            return hit
        split = split_url(url)
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[url] = split  # type: ignore[index]
        return split
