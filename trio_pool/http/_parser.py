"""The one seam between a connection and the response parsers: the strict fast reader
(``_fastparse.py``) first, h11 for everything it does not fully recognise.

Theory of operation
-------------------
A :class:`Parser` holds the bytes a connection received and turns them into events:
:class:`~._fastparse.FastHead` (a head, from either parser), body ``bytes``,
:class:`~._fastparse.End`, or :data:`NEED_DATA`; an h11 event it has no form for (such as
``ConnectionClosed``) is passed through as it is.

Requests are not written through this parser's h11: before each response the connection
calls :meth:`Parser.expect` with the request it answers. For a request whose response the
fast reader never handles (HEAD, CONNECT, an upgrade), or with ``TRIO_POOL_H11_ONLY=1`` in
the environment at import, a fresh h11 state machine is *primed* with a request of the same
method, target and upgrade fields (its bytes discarded) and gets every byte of the response;
otherwise the fast reader parses it, and if it defers (see ``_fastparse.py``) h11 is primed
the same way and fed the bytes the fast reader hands over, so h11 decides the response as it
would have from its first byte. Whatever parsed it, :meth:`Parser.finish` ends the
response and hands the bytes behind it back to the fast reader (h11 is dropped).

State: changed only by this class's methods, called by the one connection that owns it;
``_h11`` is set only while h11 parses the current response.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import h11

from ._fastparse import DEFER, END, NEED_DATA, End, FastHead, FastReader

if TYPE_CHECKING:
    from ._request import Request

__all__ = ["H11_ONLY", "NEED_DATA", "End", "FastHead", "Parser"]

H11_ONLY: Final = os.environ.get("TRIO_POOL_H11_ONLY", "") == "1"
"""``TRIO_POOL_H11_ONLY=1``: every response goes through h11 (the off-switch)."""

_PRIME_END: Final = h11.EndOfMessage()
_H11_METHODS: Final = frozenset((b"HEAD", b"CONNECT"))

Event = FastHead | bytes | End | object


class Parser:
    """The response parser of one connection (see the module docstring)."""

    __slots__ = ("_fast", "_h11", "_h11_only", "_max_head", "_request", "_skip")

    def __init__(self, max_head: int, *, h11_only: bool = H11_ONLY) -> None:
        self._fast = FastReader(max_head)
        self._max_head = max_head
        self._h11_only = h11_only
        self._h11: h11.Connection | None = None
        self._request: Request | None = None
        self._skip = False  # the next h11 event is a synthetic head's: drop it

    def expect(self, request: Request) -> None:
        """The next response answers ``request``: choose who parses it."""
        self._request = request
        if self._h11_only or request.method in _H11_METHODS or request.upgrade:
            self._to_h11(self._fast.take_buffer(), skip=False)

    def forget(self) -> None:
        """Drop the request being answered (the connection closes; the request refers to
        the connection, so keeping it would be a reference cycle). Not a checkpoint."""
        self._request = None

    def receive_data(self, data: bytes) -> None:
        """Bytes received (``b""``: the peer's EOF)."""
        h = self._h11
        if h is None:
            self._fast.receive_data(data)
        else:
            h.receive_data(data)

    def next_event(self) -> Event:
        """The next event of the response, or :data:`NEED_DATA`. Not a checkpoint.

        Raises:
            h11.RemoteProtocolError: the bytes are not a valid response (as h11 says).
        """
        if self._h11 is None:
            event = self._fast.next_event()
            if event is not DEFER:
                return event
            data, skip = self._fast.deferral()
            self._to_h11(data, skip=skip)
        return self._h11_event()

    def _to_h11(self, data: bytes, *, skip: bool) -> None:
        """Hand the response to a fresh h11 primed with its request, fed ``data``."""
        request = self._request
        if request is None:  # forgotten: the connection was closed under its reader
            raise h11.RemoteProtocolError("the connection was closed")
        h = self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=self._max_head)
        fields = [(b"host", b"_")]
        fields += [(n, v) for n, v in request.headers if n.lower() == b"upgrade"]
        h.send(h11.Request(method=request.method, target=request.target, headers=fields))
        h.send(_PRIME_END)
        self._skip = skip
        if data:
            h.receive_data(data)
        if self._fast.eof:
            h.receive_data(b"")

    def _h11_event(self) -> Event:
        h = self._h11
        assert h is not None
        event = h.next_event()
        if self._skip and type(event) is h11.Response:
            self._skip = False
            event = h.next_event()
        if event is h11.NEED_DATA:
            return NEED_DATA
        kind = type(event)
        if kind is h11.Data:
            return bytes(event.data)  # type: ignore[union-attr]
        if kind is h11.EndOfMessage:
            trailers = event.headers.raw_items()  # type: ignore[union-attr]
            return End(list(trailers)) if trailers else END
        if kind is h11.Response or kind is h11.InformationalResponse:
            return _head(event)  # type: ignore[arg-type]
        return event

    def switched(self) -> bool:
        """The server switched protocols (101 to an upgrade, 2xx to a CONNECT)."""
        h = self._h11
        return h is not None and h.their_state is h11.SWITCHED_PROTOCOL

    def leftover(self) -> bytes:
        """The bytes received behind the response (the transport is handed over)."""
        h = self._h11
        return self._fast.buffered if h is None else bytes(h.trailing_data[0])

    def finish(self, head: FastHead) -> tuple[bool, bool, bool]:
        """The response with ``head`` ended: start reading the next one. Returns whether
        the server keeps the connection open, whether bytes arrived behind the response,
        and whether the peer closed its side."""
        fast = self._fast
        h = self._h11
        if h is not None:
            self._h11 = None
            persistent = h.their_state is h11.DONE
            leftover, closed = h.trailing_data
            if leftover:
                fast.receive_data(bytes(leftover))
            if closed:
                fast.receive_data(b"")
        else:
            persistent = head.keep_alive
        fast.reset()
        return persistent, bool(fast.buffered), fast.eof


def _head(event: h11.Response | h11.InformationalResponse) -> FastHead:
    """h11's head event as the fast reader reports one."""
    raw = list(event.headers.raw_items())
    length: int | None = None
    chunked = False
    keep_alive = True
    hint = None
    for name, value in event.headers:  # lower-cased names
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"connection":
            keep_alive = keep_alive and b"close" not in _tokens(value)
        elif name == b"keep-alive" and hint is None:
            hint = value
    return FastHead(
        event.status_code,
        event.reason,
        raw,
        length,
        chunked=chunked,
        keep_alive=keep_alive and event.http_version == b"1.1",
        hint=hint,
        http_version=event.http_version,
        informational=type(event) is h11.InformationalResponse,
        conflicting=chunked and length is not None,
    )


def _tokens(value: bytes) -> Sequence[bytes]:
    return [token.strip() for token in value.lower().split(b",")]
