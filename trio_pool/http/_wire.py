"""A request's bytes without h11, for the requests whose bytes h11 would write unchanged.

Theory of operation
-------------------
:func:`request_bytes` serialises a request whose body is absent or bytes exactly as h11's
client writer would (request line, ``Host`` first, the other fields in order with their
names as given, the body), but only when every part is in a strict subset of what h11
accepts: a token method, a target of visible ASCII, token names, values of visible ASCII
with inner spaces or tabs (no obs-text), one ``Host``, no ``transfer-encoding``, and a
``content-length`` of digits that is the body's length (or neither, without a body).
Anything else returns None and the caller writes through h11, which then validates or
refuses it with its own error. ``tests/fuzz/test_fastparse_differential.py`` compares the
bytes with h11's. A pure function: no state.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._request import Request

__all__ = ["request_bytes"]

_TOKEN: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_TARGET: Final = re.compile(rb"[\x21-\x7e]+")
_VALUE: Final = re.compile(rb"(?:[\x21-\x7e](?:[ \t\x21-\x7e]*[\x21-\x7e])?)?")
_MAX_LENGTH_DIGITS: Final = 18


def request_bytes(request: Request) -> bytes | None:
    """The request's bytes as h11 writes them, or None (h11 must write it). Not a
    checkpoint."""
    body = request.body
    if body is not None and type(body) is not bytes:
        return None
    method = request.method
    target = request.target
    if _TOKEN.fullmatch(method) is None or _TARGET.fullmatch(target) is None:
        return None
    host = None
    length = None
    parts = [method, b" ", target, b" HTTP/1.1\r\n", b""]  # the host field goes to [4]
    token = _TOKEN.fullmatch
    valid = _VALUE.fullmatch
    for name, value in request.headers:
        if token(name) is None or valid(value) is None:
            return None
        size = len(name)
        if size == 4 and name.lower() == b"host":
            if host is not None:
                return None  # h11 refuses two
            host = parts[4] = b"%s: %s\r\n" % (name, value)
            continue
        if size == 14 and name.lower() == b"content-length":
            if length is not None or not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                return None
            length = int(value)
        elif size == 17 and name.lower() == b"transfer-encoding":
            return None
        parts.append(b"%s: %s\r\n" % (name, value))
    if host is None or (length or 0) != (len(body) if body else 0):
        return None
    parts.append(b"\r\n")
    if body:
        parts.append(body)
    return b"".join(parts)
