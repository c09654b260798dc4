"""A prototype response reader whose head parser is httptools (llhttp), for
``parser_choice.py`` only: issue #16 admits an optional httptools path only if it beats the
pure-Python fast reader by more than 10 % at pool level, and this is what was measured.

Theory of operation
-------------------
:class:`HttptoolsReader` is :class:`~trio_pool.http._fastparse.FastReader` with one part
replaced: once a whole head is buffered (the same ``find`` of the blank line), a fresh
``httptools.HttpResponseParser`` is fed exactly the head's bytes and its callbacks collect
the reason and the raw fields; the status and version come from the parser. The body readers
(a content-length slice, the chunk loop) are the fast reader's, unchanged: a body is a slice
of the received bytes either way, and httptools' ``on_body`` would copy it instead.

The contract is the fast reader's (``_parser.py`` hands the response to h11 on
:data:`~trio_pool.http._fastparse.DEFER`): it defers whatever httptools rejects, any version
but 1.1, 1xx and 101 (so HEAD and upgrades stay h11's, as the seam already routes them),
204/304 with framing, no framing (read-to-close), both or repeated framing fields, a
transfer-encoding other than ``chunked``, a reason, name or value h11 would read differently
(obs-fold, obs-text, tabs, surrounding whitespace: the same character classes as the fast
reader), and everything the inherited body readers defer (chunk extensions, trailers).

State: as the fast reader's; the httptools parser lives only during one head's parse.
"""

from __future__ import annotations

import re
from typing import Final

import httptools

from trio_pool.http._fastparse import (
    FastHead,
    FastReader,
    _Sentinel,
    response_framing,
)

__all__ = ["HttptoolsReader"]

# The bytes of a head h11 and llhttp read alike: printable ASCII and CRLFs (no tab, no
# obs-text, no control character); one C scan of the head instead of a check per field.
_PLAIN: Final = re.compile(rb"[\x20-\x7e\r\n]*")


class _Collector:
    """The httptools callbacks of one head."""

    __slots__ = ("complete", "fields", "reason")

    def __init__(self) -> None:
        self.reason = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True


class HttptoolsReader(FastReader):
    """The fast reader with httptools parsing the head (see the module docstring)."""

    __slots__ = ()

    def _read_head(self) -> FastHead | _Sentinel:
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0 or buf[:9] != b"HTTP/1.1 ":
            return super()._read_head()  # the same NEED_DATA or DEFER decision
        found = _Collector()
        parser = httptools.HttpResponseParser(found)
        try:
            parser.feed_data(memoryview(buf)[: end + 4])
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return self._defer()  # (llhttp reports an upgrade as an error of its own)
        status = parser.get_status_code()
        raw = found.fields
        if not found.complete or not 200 <= status <= 599 or not self._plain(end, len(raw)):
            return self._defer()
        framing = response_framing(status, raw)  # the fast reader's own rules
        if framing is None:
            return self._defer()
        return self._start_body(end + 4, status, found.reason, raw, framing)

    def _plain(self, end: int, fields: int) -> bool:
        """The head (``end``: where its blank line starts; ``fields``: how many llhttp
        reported) has one CRLF-ended line per field, no obs-fold and no value with trailing
        whitespace (which h11 strips): llhttp then reports what h11 would."""
        buf = self._buf
        return (
            _PLAIN.fullmatch(buf, 0, end) is not None
            and buf.count(b"\n", 0, end) == fields
            and buf.count(b"\r", 0, end) == fields
            and b"\r\n " not in buf[:end]
            and b" \r\n" not in buf[: end + 2]
        )
