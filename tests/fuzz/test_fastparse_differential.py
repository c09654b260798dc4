"""Differential fuzzing of the response parser seam (``_parser.py``) against h11.

For every input (the valid, mutated and arbitrary responses of ``test_response_fuzz.py``, plus
a corpus of the shapes the fast reader must defer), delivered whole, one byte at a time and
split at drawn points, the seam in its fast mode must report exactly what a plain h11 client
connection reports: the status, reason, version and raw headers of every head, the body
bytes, the trailers, the end, whether the server keeps the connection, the bytes left over —
or fail where h11 fails. It never accepts what h11 rejects. The fast reader alone, on the same
input, either defers or produces the same head and body (so the figures at the end say how
often the fast path, not h11, did the work).

Requests: the bytes ``_wire.request_bytes`` writes without h11 are exactly h11's, and it
writes none that h11 would refuse.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import h11
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, example, given, settings
from test_response_fuzz import METHODS, deliveries, mutated, valid_responses

from trio_pool.http._fastparse import DEFER, NEED_DATA, FastHead, FastReader
from trio_pool.http._parser import End, Parser
from trio_pool.http._wire import request_bytes

MAX_HEAD = 4096
FIGURES: Counter[str] = Counter()


@pytest.fixture(autouse=True, scope="module")
def _report_figures() -> Iterator[None]:
    yield
    print(f"\nfastparse differential: {dict(FIGURES)}")  # shown with pytest -s


class _Request:
    """What the parser seam reads of a request."""

    def __init__(self, method: bytes) -> None:
        self.method = method
        self.target = b"/"
        self.headers = [(b"host", b"example.com")]
        self.upgrade = False


def _pieces(data: bytes, cuts: tuple[int, ...]) -> list[bytes]:
    return [data[a:b] for a, b in zip((0, *cuts), (*cuts, len(data)), strict=True)]


def _h11_reference(method: bytes, pieces: list[bytes], eof: bool) -> list[Any]:
    """What a plain h11 client connection makes of the bytes."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    conn.send(h11.Request(method=method, target=b"/", headers=[(b"host", b"example.com")]))
    conn.send(h11.EndOfMessage())
    out: list[Any] = []
    feeds = [*pieces, b""] if eof else pieces
    body = b""
    try:
        for piece in feeds:
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    break
                if type(event) is h11.Data:
                    body += bytes(event.data)
                    continue
                if type(event) in (h11.Response, h11.InformationalResponse):
                    out.append(_h11_head(event))  # type: ignore[arg-type]
                    if conn.their_state is h11.SWITCHED_PROTOCOL:
                        out.append(("switched", bytes(conn.trailing_data[0])))
                        return out
                    continue
                if type(event) is h11.EndOfMessage:
                    out.append(("body", body))
                    out.append(("end", list(event.headers.raw_items())))
                    leftover, closed = conn.trailing_data
                    out.append(("persistent", conn.their_state is h11.DONE))
                    out.append(("after", bytes(leftover), closed))
                    return out
                out.append(("other", type(event).__name__))
                return out
    except h11.RemoteProtocolError:
        out.append(("error",))
        return out
    out.append(("body", body))
    out.append(("incomplete",))
    return out


def _h11_head(event: h11.Response | h11.InformationalResponse) -> tuple[Any, ...]:
    return (
        "head",
        event.status_code,
        bytes(event.reason),
        bytes(event.http_version),
        list(event.headers.raw_items()),
    )


def _seam(method: bytes, pieces: list[bytes], eof: bool) -> list[Any]:
    """What the parser seam (fast mode) makes of the same bytes, fed the same way."""
    parser = Parser(MAX_HEAD, h11_only=False)
    parser.expect(_Request(method))  # type: ignore[arg-type]
    out: list[Any] = []
    feeds = [*pieces, b""] if eof else pieces
    body = b""
    head: FastHead | None = None
    try:
        for piece in feeds:
            parser.receive_data(piece)
            while True:
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                if type(event) is bytes:
                    assert event, "an empty data event"
                    body += event
                    continue
                if type(event) is FastHead:
                    head = event
                    out.append(("head", event.status, event.reason, event.http_version, event.raw))
                    if parser.switched():
                        out.append(("switched", parser.leftover()))
                        return out
                    continue
                if type(event) is End:
                    assert head is not None
                    out.append(("body", body))
                    out.append(("end", event.trailers))
                    persistent, _, closed = parser.finish(head)
                    out.append(("persistent", persistent))
                    out.append(("after", parser.leftover(), closed))
                    return out
                out.append(("other", type(event).__name__))
                return out
    except h11.RemoteProtocolError:
        out.append(("error",))
        return out
    out.append(("body", body))
    out.append(("incomplete",))
    return out


def _fast_alone(pieces: list[bytes], eof: bool) -> tuple[str, list[Any]]:
    """The fast reader by itself: ("deferred"|"error"|"done"|"incomplete", events)."""
    reader = FastReader(MAX_HEAD)
    out: list[Any] = []
    body = b""
    feeds = [*pieces, b""] if eof else pieces
    try:
        for piece in feeds:
            reader.receive_data(piece)
            while True:
                event = reader.next_event()
                if event is NEED_DATA:
                    break
                if event is DEFER:
                    return "deferred", out
                if type(event) is bytes:
                    body += event
                elif type(event) is FastHead:
                    out.append(("head", event.status, event.reason, b"1.1", event.raw))
                else:
                    assert type(event) is End
                    out.append(("body", body))
                    return "done", out
    except h11.RemoteProtocolError:
        return "error", out
    return "incomplete", out


def check(method: str, data: bytes, cuts: tuple[int, ...], eof: bool) -> None:
    pieces = _pieces(data, cuts)
    reference = _h11_reference(method.encode(), pieces, eof)
    assert _seam(method.encode(), pieces, eof) == reference
    # Fed whole: same answer.
    assert _seam(method.encode(), [data], eof) == _h11_reference(method.encode(), [data], eof)
    if method == "GET":
        how, events = _fast_alone(pieces, eof)
        FIGURES[how] += 1
        if how == "done":
            assert events == [e for e in reference if e[0] in ("head", "body")]
            assert reference[-3][0] == "end"
        elif how == "error":
            assert reference[-1] == ("error",)
        elif how == "incomplete":
            assert events == [e for e in reference if e[0] == "head"]


FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

# The shapes the fast reader defers (h11 decides them) and the strict ones it takes.
CORPUS = [
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXY0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length:  5 \r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\nx-a: 1\ncontent-length: 2\n\nhi",
    b"HTTP/1.1 200 OK\r\nx-a: 1\ncontent-length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nx-a:\t1\r\ncontent-length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nx-a: \xff\r\ncontent-length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 \xffOK\r\ncontent-length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nconnection: clo se\r\ncontent-length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\n\r\nread until close",
    b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nhi",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi",
    b"HTTP/1.1 101 Switching\r\nupgrade: x\r\n\r\nrest",
    b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 123456789012345678901\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 12345678901234567890\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-long: " + b"a" * 5000 + b"\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 \r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 099 x\r\n\r\n",
    b"HTTP/1.1 600 x\r\ncontent-length: 0\r\n\r\n",
    b"\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a: a\rb\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n: empty\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n00000000000000001\r\na\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r",
    # Field lines must tile the block: no byte before a name, between lines, or a line that
    # is not a field (a valid field behind any of them must not be taken alone).
    b"HTTP/1.1 200 OK\r\n\x01x-a: 1\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a: 1\x01content-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a: 1\rcontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno-colon\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-a: 1\r\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a: 1\r\n\ncontent-length: 0\r\n\r\n",
]


@pytest.mark.parametrize("data", CORPUS)
@pytest.mark.parametrize("eof", [False, True])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_corpus_matches_h11_whole_and_bytewise(data: bytes, eof: bool, method: str) -> None:
    check(method, data, (), eof)
    check(method, data, tuple(range(1, len(data))), eof)


@st.composite
def inputs(draw: st.DrawFn) -> tuple[str, bytes, tuple[int, ...], bool]:
    method = draw(METHODS)
    kind = draw(st.sampled_from(["valid", "mutated", "arbitrary", "corpus"]))
    if kind == "corpus":
        data = draw(st.sampled_from(CORPUS))
        if draw(st.booleans()):
            data = draw(mutated(data))
    elif kind == "arbitrary":
        prefix = draw(st.sampled_from([b"", b"HTTP/1.1 ", b"HTTP/1.1 200 OK\r\n"]))
        data = prefix + draw(st.binary(max_size=200))
    else:
        data, _, _ = draw(valid_responses(method))
        if kind == "mutated":
            data = draw(mutated(data))
    return method, data, draw(deliveries(data)), draw(st.booleans())


@FUZZ
@given(inputs())
@example(("GET", CORPUS[2], (40, 41), True))
def test_seam_reports_exactly_what_h11_does(case: tuple[str, bytes, tuple[int, ...], bool]) -> None:
    check(*case)


# ----------------------------------------------------------------------------- requests


def _h11_request_bytes(request: _WireRequest) -> bytes | None:
    """What h11's client writer sends for ``request``, or None if it refuses it."""
    writer = h11.Connection(h11.CLIENT)
    try:
        data = writer.send(
            h11.Request(method=request.method, target=request.target, headers=request.headers)
        )
        assert data is not None
        if request.body:
            data += writer.send(h11.Data(data=request.body)) or b""
        data += writer.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError:
        return None
    return data


class _WireRequest:
    def __init__(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body


VALID_NAMES = st.sampled_from([b"x-a", b"X-B", b"connection", b"Accept"])
NAMES = st.one_of(
    VALID_NAMES,
    VALID_NAMES,
    st.sampled_from(
        [b"host", b"Content-Length", b"transfer-encoding", b"bad name", b"x:y", b"X-\xff"]
    ),
)
VALID_VALUES = st.sampled_from([b"", b"a", b"a b", b"a\tb", b"5", b"keep-alive, close"])
FIELD_VALUES = st.one_of(
    VALID_VALUES,
    VALID_VALUES,
    VALID_VALUES,
    st.sampled_from([b" a", b"a ", b"a\r\nb", b"\xe9", b"chunked", b"a\x00"]),
    st.binary(max_size=6),
)


@st.composite
def wire_requests(draw: st.DrawFn) -> _WireRequest:
    method = draw(st.sampled_from([b"GET", b"GET", b"POST", b"G T", b"", b"PATCH"]))
    target = draw(st.sampled_from([b"/", b"/", b"/a?b=c", b"/a b", b"*", b"/\x7f", b""]))
    headers = draw(st.lists(st.tuples(NAMES, FIELD_VALUES), max_size=4))
    if draw(st.integers(0, 4)):
        headers.insert(draw(st.integers(0, len(headers))), (b"host", b"example.com"))
    body = draw(st.one_of(st.none(), st.binary(max_size=8)))
    if body is not None and draw(st.booleans()):
        length = len(body) + draw(st.sampled_from([0, 0, 0, 1]))
        headers.append((b"content-length", str(length).encode()))
    return _WireRequest(method, target, headers, body)


@FUZZ
@given(wire_requests())
@example(_WireRequest(b"GET", b"/", [(b"x-a", b"1"), (b"Host", b"h")], None))
@example(_WireRequest(b"PUT", b"/", [(b"host", b"h"), (b"content-length", b"2")], b"ok"))
def test_request_bytes_are_h11s_or_left_to_h11(request: _WireRequest) -> None:
    ours = request_bytes(request)  # type: ignore[arg-type]
    FIGURES["request written without h11" if ours is not None else "request left to h11"] += 1
    if ours is not None:
        assert ours == _h11_request_bytes(request)
