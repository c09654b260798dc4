"""Whether a request body can be sent again, and how (``redirect()``, ``retry()``).

A body held in memory (``bytes``, ``bytearray``, ``memoryview``, ``str``, a list or tuple of
chunks, or none, as with ``json=``) is sent again as it is. A file object that can seek is
rewound to where it stood before the first send (``seek``/``tell``, awaited for a Trio async
file). Anything else (a generator, an iterator, a socket-like file) is *one-shot*: once it
was sent, nothing can send it again.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ..http._models import RequestOptions

__all__ = ["Replay", "readable_again", "replay_of"]

_IN_MEMORY = (bytes, bytearray, memoryview, str, list, tuple)


def readable_again(options: RequestOptions) -> RequestOptions:
    """``options`` with headers that can be read more than once: a one-shot iterable of
    pairs (a generator) is read into a list. Not a checkpoint."""
    headers = options.headers
    if headers is None or isinstance(headers, Mapping | list | tuple):
        return options
    return attrs.evolve(options, headers=list(headers))


class Replay:
    """How to send a body again: :meth:`mark` before the first send (a file notes where it
    stands), :meth:`rewind` before each new one."""

    __slots__ = ("_file", "_position")

    def __init__(self, file: Any = None) -> None:
        self._file = file
        self._position = 0

    @property
    def marks(self) -> bool:
        """Whether :meth:`mark` has anything to do (a file), so it is not awaited in vain."""
        return self._file is not None

    async def mark(self) -> None:
        """Note the file's position. A checkpoint only for a Trio async file."""
        self._position = await _maybe_await(self._file.tell())

    async def rewind(self) -> None:
        """Put the body back where it was before the first send. A checkpoint only for a
        Trio async file."""
        if self._file is not None:
            await _maybe_await(self._file.seek(self._position))


_SAME = Replay()


def replay_of(body: object) -> Replay | None:
    """How to send ``body`` again, or None if it is one-shot. Not a checkpoint; for a file,
    await :meth:`Replay.mark` before the first send."""
    if body is None or isinstance(body, _IN_MEMORY):
        return _SAME
    if (
        callable(getattr(body, "read", None))
        and callable(getattr(body, "seek", None))
        and callable(getattr(body, "tell", None))
    ):
        seekable = getattr(body, "seekable", None)
        # A Trio async file's seekable() is a coroutine function: its seek decides later.
        if seekable is not None and not inspect.iscoroutinefunction(seekable) and not seekable():
            return None
        return Replay(body)
    return None


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
