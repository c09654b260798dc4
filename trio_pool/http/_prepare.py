"""Turning ``RequestOptions`` into a :class:`~._request.Request`: validation and wire form.

Theory of operation
-------------------
:func:`prepare` validates everything a caller controls (method, path, query, headers, body,
content-length) and builds the wire form *before* the request enters any queue, so a bad
argument raises ``InvalidArgumentError`` at call time and nothing is ever half-written.
The rules are those of the wire, so no caller value can inject a line or address another
server: tokens (method, header names) are matched whole; header values, path and query
carry no control character (CR, LF, NUL...); the path is origin-form with one leading
``/`` (never ``//host/...``) and no fragment, or an absolute URL of the dispatcher's own
origin (reduced to origin-form); ``CONNECT`` is only ``connect()``'s, whose authority is
``host:port``. A caller's ``Host`` header may name another virtual host (the connection goes
to the dispatcher's origin regardless) but must be one well-formed authority. The body
becomes bytes or an async iterable of bytes (:mod:`._body`); ``json=`` becomes bytes.
Messages name the offending argument but never quote a header value (it may be a credential).

The commonest request — no headers, body or query, as ``request("GET", "/")`` — is
prepared once per ``(method, path, reset)`` by :class:`Prepared`: later ones copy the
validated wire form, h11 event and bytes included, so they skip validation and h11's own
checks, and a pipelined one is written without a side serialiser.

A header pair (name, value) checked once is remembered by its dispatcher (``Prepared.checked``,
bounded; never a credential's): a later request repeating it skips its checks.

Pure functions of their arguments: nothing here holds state but :class:`Prepared`'s caches,
which only their owner (one dispatcher) uses.
"""

from __future__ import annotations

import ipaddress
import json as _json
import numbers
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode, urlsplit

import h11

from .._errors import InvalidArgumentError, RequestContentLengthMismatchError
from ._body import BodyChunks, adapt_body
from ._models import RequestOptions, Response, StreamResponse
from ._origin import parse_origin
from ._request import Request

if TYPE_CHECKING:
    from ._options import ClientOptions
    from ._origin import Origin

__all__ = [
    "IDEMPOTENT_METHODS",
    "Prepared",
    "encode_query",
    "identified",
    "origin_form",
    "prepare",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_FORBIDDEN_HEADERS = frozenset({b"transfer-encoding", b"keep-alive", b"upgrade"})
# Matched with fullmatch(): a "$" anchor would also accept a token ending in "\n".
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Controls but HTAB (RFC 9110 5.5): CR and LF would end the field and inject a line.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Controls, space and "#": a fragment is never sent (RFC 9110 7.1).
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f#]")
_BAD_URL = re.compile(r"[\x00-\x20\x7f]")
# An absolute URL given in place of the path (any scheme: parse_origin says which it takes).
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_AUTHORITY_END = re.compile(r"[/?#]")
# The origins named by the "scheme://authority" of absolute URLs (parse_origin is a pure
# function of it): most requests name the origin of the one before. Bounded.
_NAMED: dict[str, Origin] = {}
_NAMED_MAX = 64
# host[:port]: a reg-name or IPv4 (RFC 3986 3.2.2, no percent-escapes) or [IPv6].
_AUTHORITY = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|[A-Za-z0-9\-._~!$&'()*+,;=]+)(?::(?P<port>[0-9]{1,5}))?"
)
# The header names prepare() asks about (in one pass over the caller's).
_NOTED = frozenset({b"host", b"content-length", b"connection", b"user-agent", b"content-type"})
_CHECKED_MAX = 256  # header pairs remembered per dispatcher (see _header_pairs)
_TEXT = (str, bytes)
_SECRET_HEADERS = frozenset({b"authorization", b"proxy-authorization", b"cookie"})
_R = TypeVar("_R", Response, StreamResponse)
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


def _pairs(items: Iterable[Any], what: str) -> Iterator[tuple[Any, Any]]:
    """``items`` as ``(name, value)`` pairs; anything else is refused, naming ``what``."""
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"invalid {what}: a {type(item).__name__} is not a (name, value) pair"
            ) from None
        yield name, value


def _header_pair(item: object) -> tuple[bytes, bytes]:
    """One caller's header ``item``, checked: its lower-case name and stripped value."""
    ((name, value),) = _pairs((item,), "headers")
    raw_name = _bytes(name, "header name").lower()
    if not _TOKEN.fullmatch(raw_name):
        raise InvalidArgumentError(f"invalid header name {name!r}")
    raw_value = _bytes(value, f"value of header {name!r}")
    if _BAD_VALUE.search(raw_value):
        raise InvalidArgumentError(f"invalid value of header {name!r}: control characters")
    raw_value = raw_value.strip(b" \t")
    if raw_name in _FORBIDDEN_HEADERS:
        raise InvalidArgumentError(f"invalid header {name!r}: set by the client, not by you")
    return raw_name, raw_value


def _header_pairs(
    headers: object, checked: dict[object, tuple[bytes, bytes]] | None = None
) -> list[tuple[bytes, bytes]]:
    """``headers`` checked, as sent. ``checked`` (a dispatcher's) maps the pairs checked
    before to their wire form: most requests repeat the headers of the ones before them (a
    client's defaults: httpx's accept, user-agent...), so each is checked once. Only exact
    str/bytes pairs go in (an equal key is then the same text), never a credential's;
    cleared when full."""
    if headers is None:
        return []
    items: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers  # type: ignore[assignment]
    if isinstance(items, str | bytes):
        raise InvalidArgumentError("invalid headers: expected a mapping or (name, value) pairs")
    pairs = []
    for item in items:
        try:
            pair = checked.get(item) if checked is not None else None
        except TypeError:  # unhashable: not a pair of str or bytes, _header_pair says why
            pair = None
        if pair is None:
            pair = _header_pair(item)
            if (
                checked is not None
                and type(item) is tuple
                and type(item[0]) in _TEXT
                and type(item[1]) in _TEXT
                and pair[0] not in _SECRET_HEADERS
            ):
                if len(checked) >= _CHECKED_MAX:
                    checked.clear()
                checked[item] = pair
        pairs.append(pair)
    return pairs


def _json_body(value: object) -> bytes:
    try:
        text = _json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"invalid json: {exc}") from None
    return text.encode("utf-8")


def _query_value(key: object, value: object) -> str | bytes:
    # httpx's rules: None is an empty value, booleans are lower-case words, numbers str().
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, numbers.Number):
        return str(value)
    raise InvalidArgumentError(
        f"invalid query value for {key!r}: a {type(value).__name__}; "
        "expected str, bytes, a number, a bool, None or a sequence of these"
    )


def encode_query(query: object) -> str:
    """``query`` URL-encoded as httpx does (see ``RequestOptions.query``). Raises
    ``InvalidArgumentError``. Not a checkpoint."""
    if isinstance(query, str):
        return query.lstrip("?")
    if isinstance(query, Mapping):
        items: Iterable[Any] = query.items()
    elif isinstance(query, list | tuple):
        items = query
    else:
        raise InvalidArgumentError("invalid query: expected a mapping, pairs or a str")
    pairs: list[tuple[str | bytes, str | bytes]] = []
    for key, value in _pairs(items, "query"):
        if not isinstance(key, str | bytes):
            raise InvalidArgumentError(f"invalid query name {key!r}: expected str or bytes")
        if isinstance(value, list | tuple):  # a sequence: the key repeated
            pairs += [(key, _query_value(key, one)) for one in value]
        else:
            pairs.append((key, _query_value(key, value)))
    return urlencode(pairs)


def origin_form(path: object, origins: Sequence[Origin]) -> object:
    """``path``, or the origin-form target of an absolute URL naming one of ``origins`` (the
    fragment dropped: it is never sent); an absolute URL of another origin is an
    ``InvalidArgumentError`` naming both. Anything else is left for :func:`prepare` to
    judge. Not a checkpoint."""
    if not isinstance(path, str):
        return path
    absolute = _ABSOLUTE.match(path)
    if absolute is None:
        return path
    # urlsplit silently deletes tabs, CR and LF (bpo-43882): refuse them first.
    if not path.isascii() or _BAD_URL.search(path):
        raise InvalidArgumentError(f"invalid path {path!r}: ASCII, no spaces or controls")
    # The authority ends where urlsplit ends it: at the first "/", "?" or "#".
    after = _AUTHORITY_END.search(path, absolute.end())
    end = after.start() if after is not None else len(path)
    prefix = path[:end]
    named = _NAMED.get(prefix)
    if named is None:
        try:
            parts = urlsplit(prefix)
            named = parse_origin(f"{parts.scheme}://{parts.netloc}")
        except (ValueError, InvalidArgumentError):
            raise InvalidArgumentError(f"invalid path {path!r}: not a valid absolute URL") from None
        if len(_NAMED) >= _NAMED_MAX:
            _NAMED.clear()
        _NAMED[prefix] = named
    if named not in origins:
        own = ", ".join(origin.text for origin in origins) or "none"
        raise InvalidArgumentError(
            f"invalid path {path!r}: its origin {named.text} is not this dispatcher's ({own})"
        )
    # The rest as urlsplit reads it: the fragment from the first "#", the query from the
    # first "?" before it.
    rest, _, _ = path[end:].partition("#")
    target, _, query = rest.partition("?")
    return f"{target or '/'}?{query}" if query else target or "/"


def _target(path: object, query: object, origin: Origin) -> bytes:
    path = origin_form(path, (origin,))
    if (
        not isinstance(path, str)
        or not path.startswith("/")
        or path.startswith("//")  # a network-path reference names another host
        or not path.isascii()
        or _BAD_TARGET.search(path)
    ):
        raise InvalidArgumentError(
            f"invalid path {path!r}: must start with one '/' (or be an absolute URL of this "
            "origin); ASCII, no spaces, controls or '#'"
        )
    if not query:
        return path.encode("ascii")
    encoded = encode_query(query)
    if not encoded.isascii() or _BAD_TARGET.search(encoded):
        raise InvalidArgumentError(f"invalid query {query!r}: spaces, controls, '#' or non-ASCII")
    if not encoded:
        return path.encode("ascii")
    separator = "&" if "?" in path else "?"
    return f"{path}{separator}{encoded}".encode("ascii")


def _check_authority(text: object, what: str, *, port_required: bool) -> str:
    """``text`` if it is an authority ``host[:port]`` (IPv6 in brackets, port 1-65535, no
    user info); else ``InvalidArgumentError`` naming ``what``."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    match = _AUTHORITY.fullmatch(text) if isinstance(text, str) else None
    port = match.group("port") if match else None
    valid = match is not None and (port is not None or not port_required)
    if valid and match is not None and match.group("v6") is not None:
        try:
            ipaddress.IPv6Address(match.group("v6"))
        except ValueError:
            valid = False
    if valid and port is not None:
        valid = 1 <= int(port) <= 65535
    if not valid:
        shape = "host:port" if port_required else "host[:port]"
        # A header's value is never quoted in a message (see the module docstring).
        shown = f"{what} {text!r}" if what == "authority" else what
        raise InvalidArgumentError(
            f"invalid {shown}: expected {shape} (port 1-65535, IPv6 in brackets)"
        )
    assert isinstance(text, str)
    return text


def prepare(
    options: RequestOptions,
    origin: Origin,
    client_options: ClientOptions,
    *,
    protocol: str | None = None,
    authority: str | None = None,
    checked: dict[object, tuple[bytes, bytes]] | None = None,
) -> Request:
    """Validate ``options`` and build the :class:`Request`. Raises ``InvalidArgumentError``.

    ``protocol`` makes it an upgrade request (``upgrade: protocol``); ``authority`` a
    ``CONNECT authority`` request. Either way the connection is handed over afterwards.
    ``checked``: the header pairs a dispatcher checked before (see :func:`_header_pairs`).
    """
    method = options.method
    if not _is_token(method):
        raise InvalidArgumentError(f"invalid method {method!r}")
    attempt = options.attempt
    if type(attempt) is not int or attempt < 1:
        raise InvalidArgumentError(f"invalid attempt {attempt!r}: expected an int >= 1")
    headers = _header_pairs(options.headers, checked)
    # One pass over the caller's headers for what the rules below ask of them.
    hosts: list[bytes] = []
    lengths: list[bytes] = []
    given: set[bytes] = set()
    closing = False
    for name, value in headers:
        if name in _NOTED:
            given.add(name)
            if name == b"host":
                hosts.append(value)
            elif name == b"content-length":
                lengths.append(value)
            elif name == b"connection" and value.lower() == b"close":
                closing = True
    if options.json is not None:
        if options.body is not None:
            raise InvalidArgumentError("invalid json: give json= or body=, not both")
        body: bytes | BodyChunks | None = _json_body(options.json)
        if b"content-type" not in given:
            headers.append((b"content-type", b"application/json"))
    else:
        body = adapt_body(options.body)
    if authority is None:
        if method.upper() == "CONNECT":
            raise InvalidArgumentError(
                f"invalid method {method!r}: a tunnel is opened with connect(authority) only"
            )
        target = _target(options.path, options.query, origin)
    else:
        target = _check_authority(authority, "authority", port_required=True).encode("ascii")
    # A caller's Host names a virtual host of the same server (the connection still goes to
    # this dispatcher's origin): one, and a well-formed authority, so it frames no request.
    if not hosts:
        headers.insert(0, (b"host", origin.authority.encode("ascii")))
    elif len(hosts) > 1:
        raise InvalidArgumentError("invalid host header: at most one")
    else:
        _check_authority(hosts[0], "host header", port_required=False)
    if client_options.user_agent is not None and b"user-agent" not in given:
        headers.append((b"user-agent", client_options.user_agent))
    proxy_form = client_options.proxy_form
    if proxy_form is not None and authority is None:
        # Through a forward proxy (ProxyAgent, http targets): the absolute URL, and the
        # proxy's own headers unless the caller set them.
        target = origin.text.encode("ascii") + target
        names = {name for name, _ in headers}
        added = [(name, value) for name, value in proxy_form if name not in names]
        headers += added
        lengths += [value for name, value in added if name == b"content-length"]
        closing = closing or any(n == b"connection" and v.lower() == b"close" for n, v in added)
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
    elif declared is None and body.length is not None:  # a file of known size
        headers.append((b"content-length", str(body.length).encode("ascii")))
    elif declared is None:
        headers.append((b"transfer-encoding", b"chunked"))
    if protocol is not None:
        if not _is_token(protocol):
            raise InvalidArgumentError(f"invalid protocol {protocol!r}")
        headers += [(b"connection", b"upgrade"), (b"upgrade", protocol.encode("ascii"))]
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


def identified(response: _R, origin: Origin, request: Request) -> _R:
    """``response`` to ``request``, told what was requested of ``origin`` (its ``url`` and
    the method ``raise_for_status`` names). Not a checkpoint."""
    response.url = origin.text + request.target.decode("ascii")
    response._method = request.method.decode("ascii")
    return response


class Prepared:
    """Requests without headers, body or query, prepared once per ``(method, path,
    reset)`` of one dispatcher: :func:`prepare` is a pure function of those and of the
    dispatcher's origin and options, so a copy of the first is the same request."""

    __slots__ = ("_cache", "_client_options", "_origin", "checked")

    def __init__(self, origin: Origin, client_options: ClientOptions) -> None:
        self._origin = origin
        self._client_options = client_options
        self._cache: dict[tuple[str, str, bool, tuple[tuple[str, str], ...]], Request] = {}
        # The header pairs this dispatcher checked before (prepare's ``checked``).
        self.checked: dict[object, tuple[bytes, bytes]] = {}

    def request(
        self, method: str, path: str, reset: bool, headers: tuple[tuple[str, str], ...] = ()
    ) -> Request:
        """A new request (with ``headers``: the constant ones of a request level, see
        ``_chain.ConstantHeaders``); raises like :func:`prepare`."""
        key = (method, path, reset, headers)
        template = self._cache.get(key)
        if template is None:
            template = prepare(
                RequestOptions(method, path, reset=reset, headers=headers or None),
                self._origin,
                self._client_options,
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
