"""Whether a request body can be sent again, and how (``redirect()``, ``retry()``).

A body held in memory (``bytes``, ``bytearray``, ``memoryview``, ``str``, a list or tuple of
chunks, or none, as with ``json=``) is sent again as it is. A file object that can seek is
rewound to where it stood before the first send (``seek``/``tell``, awaited for a Trio async
file). Anything else (a generator, an iterator, a socket-like file) is *one-shot*: once it
was sent, nothing can send it again.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["Replay", "replay_of"]

_IN_MEMORY = (bytes, bytearray, memoryview, str, list, tuple)


class Replay:
    """How to send a body again: :meth:`rewind` before each new send."""

    __slots__ = ("_file", "_position")

    def __init__(self, file: Any = None, position: int = 0) -> None:
        self._file = file
        self._position = position

    async def rewind(self) -> None:
        """Put the body back where it was before the first send. A checkpoint only for a
        Trio async file."""
        if self._file is not None:
            await _maybe_await(self._file.seek(self._position))


_SAME = Replay()


async def replay_of(body: object) -> Replay | None:
    """How to send ``body`` again, or None if it is one-shot. Call it before the first send
    (it notes a file's position). A checkpoint only for a Trio async file."""
    if body is None or isinstance(body, _IN_MEMORY):
        return _SAME
    if callable(getattr(body, "read", None)) and callable(getattr(body, "seek", None)):
        seekable = getattr(body, "seekable", None)
        if seekable is not None and not await _maybe_await(seekable()):
            return None
        tell = getattr(body, "tell", None)
        if not callable(tell):
            return None
        return Replay(body, await _maybe_await(tell()))
    return None


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
