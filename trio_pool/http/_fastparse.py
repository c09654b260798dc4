"""A strict reader of the common HTTP/1.1 response: ``bytes.find`` and two regexes.

Theory of operation
-------------------
:class:`FastReader` parses one response at a time from a buffer of received bytes, and only
the shape almost every server sends: ``HTTP/1.1``, a status of 200-599 (not 204 or 304 with
framing headers), header fields ``name: value`` with at most one space after the colon and
printable ASCII values without leading or trailing whitespace, CRLF line ends, and exactly one
of ``content-length`` (digits) or ``transfer-encoding: chunked`` (or neither, for 204/304),
and chunks as ``HEX\\r\\n`` with no extension, ending in ``0\\r\\n\\r\\n`` (no trailers).

Anything else is *deferred*: :meth:`FastReader.next_event` returns :data:`DEFER` and
:meth:`FastReader.deferral` gives the bytes that let h11 decide the rest exactly as it would
have from the response's first byte. Before the head was returned those are the buffered
bytes themselves. After it (a chunk header with an extension, trailers, a bad chunk end, an
early EOF) they are a *synthetic head* with the same framing and persistence, followed by the
unread bytes: h11's body readers keep no state across a chunk boundary, so h11 parses the
remainder as it would have. The caller skips the synthetic head's event.

The reader never accepts what h11 rejects: every field it accepts matches h11's grammar and
normalises to the same values (``tests/fuzz/test_fastparse_differential.py`` checks this
against h11, bytes delivered whole and one at a time).

State: only this class's methods change it; one instance serves one connection, and
:meth:`FastReader.reset` starts the next response.
"""

from __future__ import annotations

import re
from typing import Final

import h11

__all__ = ["DEFER", "END", "NEED_DATA", "End", "FastHead", "FastReader"]

# The status line this reader accepts (h11 accepts a superset: any version, 000-999, and a
# reason with tabs or obs-text).
_STATUS: Final = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9])(?: ([\x20-\x7e]*))?")
# One header line: a token, a colon, at most one space, then a value of printable ASCII
# that neither starts nor ends with whitespace (h11 strips OWS; this reader defers it). A
# match starts right behind an LF only: see _read_head for why that and a count of the LFs
# make the matches tile the header block exactly (one pass instead of a check and a parse).
_FIELD: Final = re.compile(
    rb"(?<=\n)([-!#$%&'*+.^_`|~0-9a-zA-Z]+): ?((?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?)\r\n"
)
_CHUNK: Final = re.compile(rb"[0-9A-Fa-f]{1,15}")
_MAX_LENGTH_DIGITS: Final = 18  # h11 allows 20; longer ones go to h11
_MAX_CHUNK_LINE: Final = 17  # 15 hex digits and CRLF; a longer line goes to h11

# Parser states.
_HEAD: Final = 0
_LENGTH: Final = 1  # a content-length body: _remaining bytes to go
_CHUNK_SIZE: Final = 2  # a chunk header (or the last chunk's CRLF) is due
_CHUNK_DATA: Final = 3  # _remaining bytes of the current chunk
_CHUNK_END: Final = 4  # the CRLF behind a chunk's data
_DONE: Final = 5
_DEFERRED: Final = 6


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA: Final = _Sentinel("NEED_DATA")
"""More bytes are needed before the next event."""
DEFER: Final = _Sentinel("DEFER")
"""Hand the response to h11 (see :meth:`FastReader.deferral`)."""


class End:
    """The end of a response, with its trailer fields (raw names)."""

    __slots__ = ("trailers",)

    def __init__(self, trailers: list[tuple[bytes, bytes]]) -> None:
        self.trailers = trailers


END: Final = End([])
"""The end of a response without trailers (this reader defers one with trailers)."""


class FastHead:
    """A response head as h11 would report it: raw names, values as h11 normalises them.
    The parser seam (``_parser.py``) builds one from h11's events too."""

    __slots__ = (
        "chunked",
        "conflicting",
        "hint",
        "http_version",
        "informational",
        "keep_alive",
        "length",
        "raw",
        "reason",
        "status",
    )

    def __init__(
        self,
        status: int,
        reason: bytes,
        raw: list[tuple[bytes, bytes]],
        length: int | None,
        *,
        chunked: bool,
        keep_alive: bool,
        hint: bytes | None,
        http_version: bytes = b"1.1",
        informational: bool = False,
        conflicting: bool = False,
    ) -> None:
        self.status = status
        self.reason = reason
        self.raw = raw
        self.length = length  # the content-length, or None
        self.chunked = chunked
        self.keep_alive = keep_alive  # no ``connection: close``
        self.hint = hint  # the first keep-alive field's value
        self.http_version = http_version
        self.informational = informational  # 1xx (only from h11)
        # Both content-length and transfer-encoding (only from h11, which lets the latter
        # win; RFC 9112 6.3 makes it an error).
        self.conflicting = conflicting


class FastReader:
    """The strict response reader of one connection (see the module docstring)."""

    __slots__ = ("_buf", "_eof", "_head", "_max_head", "_remaining", "_state")

    def __init__(self, max_head: int) -> None:
        self._buf = b""
        self._eof = False
        self._max_head = max_head  # as h11's max_incomplete_event_size
        self._state = _HEAD
        self._remaining = 0
        self._head: FastHead | None = None

    @property
    def buffered(self) -> bytes:
        """The bytes received and not parsed yet."""
        return self._buf

    @property
    def eof(self) -> bool:
        """The peer closed its side."""
        return self._eof

    def take_buffer(self) -> bytes:
        """Remove and return the unparsed bytes (they go to h11, or to a new owner)."""
        data = self._buf
        self._buf = b""
        return data

    def receive_data(self, data: bytes) -> None:
        """Add received bytes; ``b""`` is the peer's EOF."""
        if data:
            self._buf = self._buf + data if self._buf else data
        else:
            self._eof = True

    def reset(self) -> None:
        """Start reading the next response (the bytes behind the last one are kept)."""
        self._state = _HEAD
        self._head = None

    def deferral(self) -> tuple[bytes, bool]:
        """After :data:`DEFER`: the bytes to feed h11 (the buffer is emptied) and whether
        they start with a synthetic head whose event the caller must skip."""
        head = self._head
        data = self.take_buffer()
        if head is None:
            return data, False
        if head.chunked:
            framing = b"transfer-encoding: chunked\r\n"
        else:
            framing = b"content-length: %d\r\n" % self._remaining
        close = b"" if head.keep_alive else b"connection: close\r\n"
        return b"HTTP/1.1 200 OK\r\n" + framing + close + b"\r\n" + data, True

    def next_event(self) -> FastHead | bytes | End | _Sentinel:
        """The next event: a :class:`FastHead`, body bytes (never empty), :data:`END`,
        :data:`NEED_DATA` or :data:`DEFER` (then this reader is done with the response).

        Raises:
            h11.RemoteProtocolError: the bytes behind a chunk are not CRLF (h11 fails there
                too, and its state could not be rebuilt mid-chunk).
        """
        state = self._state
        if state == _LENGTH:
            return self._length_data()
        if state == _HEAD:
            return self._read_head()
        if state in (_DONE, _DEFERRED):
            return NEED_DATA if state == _DONE else DEFER
        return self._chunked()

    def _defer(self) -> _Sentinel:
        self._state = _DEFERRED
        return DEFER

    def _read_head(self) -> FastHead | _Sentinel:
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if self._eof or len(buf) > self._max_head or b"\n\n" in buf or b"\n\r\n" in buf:
                return self._defer()
            if buf[:9] != b"HTTP/1.1 "[: len(buf)]:
                return self._defer()
            return NEED_DATA
        line_end = buf.find(b"\r\n")
        match = _STATUS.fullmatch(buf, 0, line_end)
        if match is None:
            return self._defer()
        start = line_end + 2
        block_end = end + 2
        # The block must be field lines and nothing else: every LF ends a CRLF (h11 also
        # takes a bare LF as a line end) and no CR stands alone. A match holds no LF but the
        # one that ends it, and starts right behind an LF (the first one: the status line's).
        # So if there are as many matches as LFs in the block, each LF ends a match, each
        # match starts where the one before ended, and together they are the block.
        raw: list[tuple[bytes, bytes]] = _FIELD.findall(buf, start, block_end)
        if len(raw) != buf.count(b"\n", start, block_end):
            return self._defer()
        status = int(match[1])
        framing = response_framing(status, raw)
        if framing is None:
            return self._defer()
        return self._start_body(end + 4, status, match[2] or b"", raw, framing)

    def _start_body(
        self,
        body_start: int,
        status: int,
        reason: bytes,
        raw: list[tuple[bytes, bytes]],
        framing: tuple[int | None, bool, bool, bytes | None],
    ) -> FastHead:
        """Take the head that ends before ``body_start`` and get ready for its body."""
        length, chunked, keep_alive, hint = framing
        self._buf = self._buf[body_start:]
        head = self._head = FastHead(
            status, reason, raw, length, chunked=chunked, keep_alive=keep_alive, hint=hint
        )
        if chunked:
            self._state = _CHUNK_SIZE
        else:
            self._state = _LENGTH
            self._remaining = length  # type: ignore[assignment]
        return head

    def _length_data(self) -> bytes | End | _Sentinel:
        remaining = self._remaining
        if not remaining:
            self._state = _DONE
            return END
        buf = self._buf
        if not buf:
            return self._defer() if self._eof else NEED_DATA
        if len(buf) <= remaining:
            self._buf = b""
            self._remaining = remaining - len(buf)
            return buf
        self._buf = buf[remaining:]
        self._remaining = 0
        return buf[:remaining]

    def _chunked(self) -> bytes | End | _Sentinel:
        while True:
            state = self._state
            buf = self._buf
            if state == _CHUNK_DATA:
                if not buf:
                    return self._defer() if self._eof else NEED_DATA
                remaining = self._remaining
                if len(buf) < remaining:
                    self._buf = b""
                    self._remaining = remaining - len(buf)
                    return buf
                self._buf = buf[remaining:]
                self._state = _CHUNK_END
                return buf[:remaining]
            if state == _CHUNK_END:
                # h11 requires exactly CRLF here and fails otherwise: so does this (a
                # synthetic head could not put h11 back in the middle of a chunk).
                if len(buf) < 2:
                    if self._eof or buf[:1] not in (b"", b"\r"):
                        raise h11.RemoteProtocolError(f"malformed chunk footer: {buf!r}")
                    return NEED_DATA
                if buf[:2] != b"\r\n":
                    raise h11.RemoteProtocolError(f"malformed chunk footer: {buf[:2]!r}")
                self._buf = buf[2:]
                self._state = _CHUNK_SIZE
                continue
            # _CHUNK_SIZE
            line_end = buf.find(b"\r\n", 0, _MAX_CHUNK_LINE)
            if line_end < 0:
                if self._eof or len(buf) >= _MAX_CHUNK_LINE or not _hex_prefix(buf):
                    return self._defer()
                return NEED_DATA
            if _CHUNK.fullmatch(buf, 0, line_end) is None:
                return self._defer()
            size = int(buf[:line_end], 16)
            if size:
                self._buf = buf[line_end + 2 :]
                self._remaining = size
                self._state = _CHUNK_DATA
                continue
            # The last chunk: no trailers (else h11 reads them).
            if len(buf) < line_end + 4:
                rest = buf[line_end + 2 :]
                if self._eof or rest not in (b"", b"\r"):
                    return self._defer()
                return NEED_DATA
            if buf[line_end + 2 : line_end + 4] != b"\r\n":
                return self._defer()
            self._buf = buf[line_end + 4 :]
            self._state = _DONE
            return END


def _hex_prefix(buf: bytes) -> bool:
    """``buf`` (no CRLF in it yet) may still become a plain chunk-size line."""
    digits = buf[:-1] if buf.endswith(b"\r") else buf
    return _CHUNK.fullmatch(digits) is not None if digits else not buf


def response_framing(
    status: int, raw: list[tuple[bytes, bytes]]
) -> tuple[int | None, bool, bool, bytes | None] | None:
    """How a response of ``status`` with the header fields ``raw`` is framed: its
    content-length (None: chunked), whether it is chunked, whether it keeps the connection
    alive and its ``keep-alive`` hint; None if the fast path defers it to h11 (repeated or
    conflicting framing, another transfer-encoding, a 204/304 with a body, read-to-close).
    """
    length: int | None = None
    chunked = False
    keep_alive = True
    hint = None
    for name, value in raw:
        size = len(name)  # compare lengths first: most fields are none of these
        if size == 14 and name.lower() == b"content-length":
            if length is not None or chunked:
                return None
            if not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                return None
            length = int(value)
        elif size == 17 and name.lower() == b"transfer-encoding":
            if chunked or length is not None or value != b"chunked":
                return None
            chunked = True
        elif size == 10:
            lower = name.lower()
            if lower == b"connection":
                # As h11's get_comma_header (the grammar allows no tab here); the usual
                # value needs no split.
                if value != b"keep-alive" and b"close" in [
                    token.strip() for token in value.lower().split(b",")
                ]:
                    keep_alive = False
            elif lower == b"keep-alive" and hint is None:
                hint = value
    if status == 204 or status == 304:
        if length is not None or chunked:
            return None
        length = 0
    elif length is None and not chunked:
        return None  # read until close: h11's
    return length, chunked, keep_alive, hint
