"""``Headers``: the response header (and trailer) multimap."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import final, overload

__all__ = ["Headers"]


@final
class Headers:
    """Response headers: case-insensitive lookup, wire order kept.

    ``h["Content-Type"]`` returns the first value (``KeyError`` if absent);
    :meth:`get_all` returns every value; iterating yields ``(name, value)`` pairs in the order
    they arrived, names lower-cased as h11 delivers them.
    """

    __slots__ = ("_items", "_raw")

    def __init__(self, items: Sequence[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] | None = list(items)
        self._raw: Sequence[tuple[bytes, bytes]] = ()

    @classmethod
    def _from_raw(cls, raw: Sequence[tuple[bytes, bytes]]) -> Headers:
        """Headers as h11 parsed them (``raw_items()``: names as sent), decoded on first
        use: most responses are never looked at beyond their framing."""
        headers = cls.__new__(cls)
        headers._items = None
        headers._raw = raw
        return headers

    def _pairs(self) -> list[tuple[str, str]]:
        items = self._items
        if items is None:
            # Names are tokens (ASCII, checked by h11): lower-casing bytes is exact. latin-1
            # maps every byte, so nothing can fail here.
            items = self._items = [
                (name.lower().decode("latin-1"), value.decode("latin-1"))
                for name, value in self._raw
            ]
        return items

    def _raw_pairs(self) -> list[tuple[bytes, bytes]]:
        """The pairs as bytes, names as sent when they were received (the httpx transport
        hands them on without decoding them); else encoded, names lower-case."""
        raw = self._raw
        if raw or self._items is None:
            return list(raw)
        return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in self._items]

    def _raw_get(self, name: bytes) -> bytes | None:
        """The first value of ``name`` (lower-case), looked up without decoding."""
        if self._items is not None:
            found = self.get(name.decode("latin-1"))
            return None if found is None else found.encode("latin-1")
        for raw_name, value in self._raw:
            if len(raw_name) == len(name) and raw_name.lower() == name:
                return value
        return None

    def __getitem__(self, name: str) -> str:
        key = name.lower()
        for item_name, value in self._pairs():
            if item_name == key:
                return value
        raise KeyError(name)

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        try:
            return self[name]
        except KeyError:
            return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in wire order (an empty list if absent)."""
        key = name.lower()
        return [value for item_name, value in self._pairs() if item_name == key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs())

    def __len__(self) -> int:
        return len(self._raw) if self._items is None else len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._pairs() == other._pairs()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({redacted(self._pairs())!r})"


# Never shown in reprs or logs.
_SECRET = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def redacted(pairs: Iterable[tuple[object, object]]) -> list[tuple[object, object]]:
    """``(name, value)`` pairs with the values of credential headers replaced, for reprs."""
    shown: list[tuple[object, object]] = []
    for name, value in pairs:
        text = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        shown.append((name, "<redacted>" if text.lower() in _SECRET else value))
    return shown
