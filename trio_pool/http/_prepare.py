"""Turning ``RequestOptions`` into a :class:`~._request.Request`: validation and wire form.

Theory of operation
-------------------
:func:`prepare` validates everything a caller controls (method, path, query, headers, body,
content-length) and builds the wire form *before* the request enters any queue, so a bad
argument raises ``InvalidArgumentError`` at call time and nothing is ever half-written.
The rules are those of the wire, so no caller value can inject a line or address another
server: tokens (method, header names) are matched whole; header values, path and query
carry no control character (CR, LF, NUL...); the path is origin-form with one leading
``/`` (never ``//host/...`` or an absolute URL) and no fragment; a caller's ``Host`` header
must name the dispatcher's own origin (or, for ``connect()``, the tunnel's target), since
a server routing on ``Host`` would otherwise serve another site over this connection.
Messages name the offending argument but never quote a header value (it may be a credential).

The commonest request — no headers, body or query, as ``request("GET", "/")`` — is
prepared once per ``(method, path, reset)`` by :class:`Prepared`: later ones copy the
validated wire form, h11 event and bytes included, so they skip validation and h11's own
checks, and a pipelined one is written without a side serialiser.

Pure functions of their arguments: nothing here holds state but :class:`Prepared`'s cache,
which only its owner (one dispatcher) uses.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import h11

from .._errors import InvalidArgumentError, RequestContentLengthMismatchError
from ._models import RequestOptions
from ._request import Request

if TYPE_CHECKING:
    from ._options import ClientOptions
    from ._origin import Origin

__all__ = ["IDEMPOTENT_METHODS", "Prepared", "prepare"]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_FORBIDDEN_HEADERS = frozenset({b"transfer-encoding", b"keep-alive", b"upgrade"})
# Matched with fullmatch(): a "$" anchor would also accept a token ending in "\n".
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Controls but HTAB (RFC 9110 5.5): CR and LF would end the field and inject a line.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Controls, space and "#": a fragment is never sent (RFC 9110 7.1).
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f#]")
_PREPARED_MAX = 64  # shapes remembered per dispatcher; a full cache starts over


def _is_token(text: object) -> bool:
    return isinstance(text, str) and _TOKEN.fullmatch(text.encode("latin-1", "replace")) is not None


def _bytes(value: object, what: str) -> bytes:
    # The messages never quote the value: it may be a credential (authorization, cookie).
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            raise InvalidArgumentError(f"invalid {what}: not latin-1") from None
    raise InvalidArgumentError(f"invalid {what}: expected str or bytes, not {type(value).__name__}")


def _header_pairs(headers: object) -> list[tuple[bytes, bytes]]:
    if headers is None:
        return []
    items: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers  # type: ignore[assignment]
    if isinstance(items, str | bytes):
        raise InvalidArgumentError("invalid headers: expected a mapping or (name, value) pairs")
    pairs = []
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"invalid headers: a {type(item).__name__} is not a (name, value) pair"
            ) from None
        raw_name = _bytes(name, "header name").lower()
        if not _TOKEN.fullmatch(raw_name):
            raise InvalidArgumentError(f"invalid header name {name!r}")
        raw_value = _bytes(value, f"value of header {name!r}")
        if _BAD_VALUE.search(raw_value):
            raise InvalidArgumentError(f"invalid value of header {name!r}: control characters")
        raw_value = raw_value.strip(b" \t")
        if raw_name in _FORBIDDEN_HEADERS:
            raise InvalidArgumentError(f"invalid header {name!r}: set by the client, not by you")
        pairs.append((raw_name, raw_value))
    return pairs


def _body(body: object) -> bytes | Iterable[bytes] | AsyncIterable[bytes] | None:
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    if isinstance(body, AsyncIterable | Iterable):
        return body
    raise InvalidArgumentError(
        "invalid body: expected bytes, str, an (async) iterable of bytes or None"
    )


def _target(path: object, query: object) -> bytes:
    if (
        not isinstance(path, str)
        or not path.startswith("/")
        or path.startswith("//")  # a network-path reference names another host
        or not path.isascii()
        or _BAD_TARGET.search(path)
    ):
        raise InvalidArgumentError(
            f"invalid path {path!r}: must start with one '/'; ASCII, no spaces, controls or '#'"
        )
    if not query:
        return path.encode("ascii")
    if isinstance(query, str):
        encoded = query.lstrip("?")
    elif isinstance(query, Mapping | list | tuple):
        encoded = urlencode(query, doseq=True)
    else:
        raise InvalidArgumentError("invalid query: expected a mapping, pairs or a str")
    if not encoded.isascii() or _BAD_TARGET.search(encoded):
        raise InvalidArgumentError(f"invalid query {query!r}: spaces, controls, '#' or non-ASCII")
    separator = "&" if "?" in path else "?"
    return f"{path}{separator}{encoded}".encode("ascii")


def _same_authority(host: bytes, origin: Origin) -> bool:
    """Does a caller's ``Host`` value name ``origin`` (its default port may be explicit)?"""
    shown = f"[{origin.host}]" if ":" in origin.host else origin.host
    return host.decode("latin-1").lower() in (origin.authority, f"{shown}:{origin.port}")


def prepare(
    options: RequestOptions,
    origin: Origin,
    client_options: ClientOptions,
    *,
    protocol: str | None = None,
    authority: str | None = None,
) -> Request:
    """Validate ``options`` and build the :class:`Request`. Raises ``InvalidArgumentError``.

    ``protocol`` makes it an upgrade request (``upgrade: protocol``); ``authority`` a
    ``CONNECT authority`` request. Either way the connection is handed over afterwards.
    """
    method = options.method
    if not _is_token(method):
        raise InvalidArgumentError(f"invalid method {method!r}")
    headers = _header_pairs(options.headers)
    body = _body(options.body)
    if authority is None:
        target = _target(options.path, options.query)
    elif isinstance(authority, str) and _is_token(re.sub(r"[:\[\]]", "", authority)):
        target = authority.encode("ascii")
    else:
        raise InvalidArgumentError(f"invalid authority {authority!r}: expected host:port")
    hosts = [value for name, value in headers if name == b"host"]
    if not hosts:
        headers.insert(0, (b"host", origin.authority.encode("ascii")))
    elif len(hosts) > 1 or not (
        _same_authority(hosts[0], origin)
        # RFC 9110 9.3.6: a CONNECT's Host may name the tunnel's target instead.
        or (authority is not None and hosts[0].decode("latin-1").lower() == authority.lower())
    ):
        raise InvalidArgumentError(
            f"invalid host header: a request of this dispatcher goes to {origin.text} only"
        )
    if client_options.user_agent is not None and not any(n == b"user-agent" for n, _ in headers):
        headers.append((b"user-agent", client_options.user_agent))
    proxy_form = client_options.proxy_form
    if proxy_form is not None and authority is None:
        # Through a forward proxy (ProxyAgent, http targets): the absolute URL, and the
        # proxy's own headers unless the caller set them.
        target = origin.text.encode("ascii") + target
        given = {name for name, _ in headers}
        headers += [(name, value) for name, value in proxy_form if name not in given]
    lengths = [value for name, value in headers if name == b"content-length"]
    if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
        raise InvalidArgumentError("invalid content-length header")
    declared = int(lengths[0]) if lengths else None
    if isinstance(body, bytes) or body is None:
        actual = len(body) if body is not None else 0
        if declared is not None and declared != actual:
            if client_options.strict_content_length:
                raise RequestContentLengthMismatchError(
                    f"request body is {actual} bytes, content-length says {declared}"
                )
            headers = [(n, v) for n, v in headers if n != b"content-length"]
            declared = None
        if declared is None and (actual or method in ("POST", "PUT", "PATCH")):
            headers.append((b"content-length", str(actual).encode("ascii")))
    elif declared is None:
        headers.append((b"transfer-encoding", b"chunked"))
    if protocol is not None:
        if not _is_token(protocol):
            raise InvalidArgumentError(f"invalid protocol {protocol!r}")
        headers += [(b"connection", b"upgrade"), (b"upgrade", protocol.encode("ascii"))]
    closing = any(n == b"connection" and v.lower() == b"close" for n, v in headers)
    if (client_options.pipelining == 0 or options.reset) and not closing:
        headers.append((b"connection", b"close"))
    idempotent = (
        options.idempotent if options.idempotent is not None else method in IDEMPOTENT_METHODS
    )
    return Request(
        method.encode("ascii"),
        target,
        headers,
        body,
        idempotent=bool(idempotent),
        upgrade=protocol is not None or authority is not None,
    )


class Prepared:
    """Requests without headers, body or query, prepared once per ``(method, path,
    reset)`` of one dispatcher: :func:`prepare` is a pure function of those and of the
    dispatcher's origin and options, so a copy of the first is the same request."""

    __slots__ = ("_cache", "_client_options", "_origin")

    def __init__(self, origin: Origin, client_options: ClientOptions) -> None:
        self._origin = origin
        self._client_options = client_options
        self._cache: dict[tuple[str, str, bool], Request] = {}

    def request(self, method: str, path: str, reset: bool) -> Request:
        """A new request; raises like :func:`prepare`."""
        key = (method, path, reset)
        template = self._cache.get(key)
        if template is None:
            template = prepare(
                RequestOptions(method, path, reset=reset), self._origin, self._client_options
            )
            # A host, a length, a close: nothing h11 could refuse. Its bytes let a pipelined
            # copy skip the side serialiser (the first request of a connection writes through
            # the connection's own h11, which keeps its state).
            writer = h11.Connection(h11.CLIENT)
            wire = writer.send(template.h11_event())
            end = writer.send(h11.EndOfMessage())
            assert wire is not None
            assert end is not None
            template.wire = wire + end
            if len(self._cache) >= _PREPARED_MAX:
                self._cache.clear()
            self._cache[key] = template
        return template.copy()
