"""Request bodies: every accepted ``body=`` turned into bytes or an async iterable of bytes.

Theory of operation
-------------------
:func:`adapt_body` runs in ``prepare`` (call time, before anything is queued or sent) and
decides from the value's type alone, so a body of the wrong kind — a mapping, a text-mode
file, a list holding a ``str``, an ``int`` — raises ``InvalidArgumentError`` before a byte
leaves. What it returns is what the connection writes, and the connection only iterates it:

* ``None`` and bytes-likes (``bytes``, ``bytearray``, ``memoryview``, ``str`` as UTF-8) become
  ``bytes`` (sent with a ``content-length``);
* everything streamed becomes a :class:`BodyChunks`, an async iterable of ``bytes``: a binary
  file object is read in 64 KiB blocks (a plain file in a worker thread, so a slow disk never
  blocks the event loop; a Trio async file with ``await f.read(n)``; an in-memory
  ``io.BytesIO`` directly), with a ``content-length`` when its size is known (a regular
  file), and an iterable or async iterable is passed through, each chunk
  checked as it comes. A chunk that is not bytes-like raises ``InvalidArgumentError``; the
  head is written by then, so the connection is closed (h11 is told the write failed), never
  reused half-written.

A file is checked before it is read: a ``read`` attribute is what makes a file (an
``io.BytesIO`` is also iterable, by lines, which is how files used to be sent: line by line).
Each iteration of a :class:`BodyChunks` starts from its source again, so a list body can be
re-sent (API.md 1.6); a generator or a file is consumed once. Nothing here holds state
between requests.
"""

from __future__ import annotations

import inspect
import io
import os
import stat
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import trio

from .._errors import InvalidArgumentError

__all__ = ["BLOCK_SIZE", "BodyChunks", "adapt_body", "replayable"]

BLOCK_SIZE = 65536  # bytes per read of a file body (one TCP-friendly write each)
_BYTES_LIKE = (bytes, bytearray, memoryview)
_ACCEPTED = (
    "bytes, bytearray, memoryview, str, an (async) iterable of bytes, a binary file object or None"
)


def adapt_body(body: object) -> bytes | BodyChunks | None:
    """``body`` as the connection writes it; raises ``InvalidArgumentError`` for a type that
    is not accepted (see the module docstring). Not a checkpoint."""
    if body is None or type(body) is bytes:
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, _BYTES_LIKE):
        return bytes(body)
    if isinstance(body, Mapping):
        raise InvalidArgumentError(
            f"invalid body: a {type(body).__name__} is not a body; "
            f"send JSON with json=, or encode it yourself (expected {_ACCEPTED})"
        )
    read = getattr(body, "read", None)
    if callable(read):
        _check_file(body)
        return BodyChunks(_FileChunks, body, _remaining(body))
    if isinstance(body, list | tuple):
        # A sequence is checked whole now: it costs nothing and fails before the head.
        for chunk in body:
            _check_chunk(chunk)
        return BodyChunks(_SyncChunks, body)
    if isinstance(body, AsyncIterable):
        return BodyChunks(_iterate_async, body)
    if isinstance(body, Iterable):
        return BodyChunks(_SyncChunks, body)
    raise InvalidArgumentError(f"invalid body: a {type(body).__name__}; expected {_ACCEPTED}")


def _check_file(file: object) -> None:
    """Refuse, before anything is sent, a file that cannot give bytes: text mode, closed, or
    not open for reading (a Trio async file is judged by the file it wraps)."""
    raw = getattr(file, "wrapped", file)
    if isinstance(raw, io.TextIOBase) or getattr(raw, "encoding", None):
        raise InvalidArgumentError("invalid body: a text-mode file; open it in binary mode")
    readable = getattr(raw, "readable", None)
    try:
        can_read = readable() if callable(readable) else True
    except ValueError:  # "I/O operation on closed file"
        raise InvalidArgumentError("invalid body: a closed file") from None
    if not can_read:
        raise InvalidArgumentError("invalid body: a file not open for reading")


def replayable(body: object) -> bool:
    """Can a request with this (adapted) body be written again, the same (a re-send after a
    stale keep-alive connection failed)? Not a generator's, a file's: consumed once."""
    return body is None or type(body) is bytes or (isinstance(body, BodyChunks) and body.again)


class BodyChunks:
    """A streamed request body: an async iterable of ``bytes``, each iteration a new pass
    over its source (see the module docstring).

    Attributes:
        source: what the caller gave.
        again: a new pass yields the same chunks (a list or tuple of chunks).
        length: the bytes it will yield, if known in advance (a regular file or an
            ``io.BytesIO``: sent with a ``content-length``, as servers that refuse chunked
            uploads need), else None (chunked).
    """

    __slots__ = ("_produce", "again", "length", "source")

    def __init__(
        self,
        produce: Callable[[Any], AsyncIterator[bytes]],
        source: object,
        length: int | None = None,
    ) -> None:
        self._produce = produce
        self.source = source
        self.again = isinstance(source, list | tuple)
        self.length = length

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._produce(self.source)

    def __repr__(self) -> str:
        return f"<body from {self.source!r}>"


def _remaining(file: Any) -> int | None:
    """The bytes left from the position of a regular file or ``io.BytesIO`` (a Trio async
    file: of the file it wraps), else None. Not a checkpoint: ``fstat`` and ``tell`` do not
    wait for the disk."""
    raw = getattr(file, "wrapped", file)
    try:
        if isinstance(raw, io.BytesIO):
            return int(raw.getbuffer().nbytes - raw.tell())
        status = os.fstat(raw.fileno())
        if not stat.S_ISREG(status.st_mode):
            return None  # a pipe, a socket, a device: read until it ends
        return max(status.st_size - int(raw.tell()), 0)
    except (AttributeError, OSError, ValueError, TypeError):
        return None  # not a real file (or closed): streamed chunked


def _check_chunk(chunk: object) -> bytes:
    if type(chunk) is bytes:
        return chunk
    if isinstance(chunk, _BYTES_LIKE):
        return bytes(chunk)
    raise InvalidArgumentError(
        f"invalid body: the body iterable yielded a {type(chunk).__name__}, expected bytes"
    )


async def _iterate_async(source: AsyncIterable[object]) -> AsyncIterator[bytes]:
    """An async iterable's chunks, checked one by one. An async generator: the duplex
    writer closes it (and so the caller's generator) when the write stops early."""
    chunks = aiter(source)
    try:
        async for chunk in chunks:
            yield _check_chunk(chunk)
    finally:
        if inspect.isasyncgen(chunks):
            await chunks.aclose()


class _SyncChunks:
    """A sync iterable's chunks, checked one by one (a class, not an async generator:
    abandoned half-way, it needs no finalisation)."""

    __slots__ = ("_chunks",)

    def __init__(self, source: Iterable[object]) -> None:
        self._chunks = iter(source)

    def __aiter__(self) -> _SyncChunks:
        return self

    async def __anext__(self) -> bytes:
        for chunk in self._chunks:
            return _check_chunk(chunk)
        raise StopAsyncIteration


class _FileChunks:
    """A binary file's blocks from its current position: awaited for an async file, in a
    worker thread for a real one (``to_thread.run_sync`` is a checkpoint and, cancelled,
    waits for the read in progress: a 64 KiB read is short), directly for ``io.BytesIO``.
    A class, like :class:`_SyncChunks`."""

    __slots__ = ("_file", "_mode")

    def __init__(self, file: Any) -> None:
        self._file = file
        read = file.read
        self._mode = (
            "async"
            if inspect.iscoroutinefunction(read)
            else "memory"
            if isinstance(file, io.BytesIO)
            else "thread"
        )

    def __aiter__(self) -> _FileChunks:
        return self

    async def __anext__(self) -> bytes:
        read = self._file.read
        if self._mode == "async":
            block = await read(BLOCK_SIZE)
        elif self._mode == "memory":
            block = read(BLOCK_SIZE)
        else:
            block = await trio.to_thread.run_sync(read, BLOCK_SIZE)
        if isinstance(block, str):
            raise InvalidArgumentError(
                "invalid body: the file's read() returned str; open it binary"
            )
        if not block:  # b"", or None from a non-blocking raw file with nothing ready: the end
            raise StopAsyncIteration
        return _check_chunk(block)
