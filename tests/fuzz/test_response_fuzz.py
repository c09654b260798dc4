"""Response fuzzing: whatever bytes a server sends, a request ends in a ``Response`` or a
``TrioPoolError`` — never another exception, never a hang — and the pool is left sound.

Hypothesis builds valid HTTP/1.1 responses (1xx interim responses, status lines of both
versions, assorted and duplicated headers, content-length, chunked (with extensions and
trailers) and read-until-close bodies, keep-alive hints, ``connection: close``), then mutates
them (byte flips, truncations, insertions, deletions, hostile headers, bad chunk sizes, huge
lengths, trailing garbage) or replaces them with arbitrary bytes. A scripted raw server sends
them whole, split at arbitrary points, or one byte at a time; each piece is read by the
client before the next is sent. The request is a GET or a HEAD, read with ``request()`` or
``stream()`` (to the end, one chunk, or not at all), sometimes under small size limits, and
sometimes with a second request pipelined behind it (``pipelining=2``).

The transport is a kernel socket pair (no network, and unlike in-memory streams it lets the
pool peek at an idle connection, as it does on TCP), on the autojump clock, so a truncated
response costs a virtual ``headers_timeout``, not a real one.

After each example: the first request gave a ``Response`` (exactly the one sent, when the
bytes were not mutated) or a ``TrioPoolError``; ``statistics()`` is idle; then a second, valid
request on the same pool succeeds — the connection was either reused cleanly or discarded,
never handed out in an unknown state — and the pool closes cleanly. A request pipelined
behind an unmutated response always succeeds (re-sent if the connection closed).

``FUZZ_EXAMPLES=N`` (environment) runs N examples per test instead of 150, for a deeper search.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import attrs
import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from _helpers import assert_idle
from hypothesis import HealthCheck, given, settings

import trio_pool
from trio_pool import Pool

TIMEOUT = 5.0  # headers_timeout and body_timeout, virtual seconds
HANG_GUARD = 100.0  # virtual seconds: a request still running by then hangs
SECOND = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond"

FUZZED: Counter[str] = Counter()  # inputs fuzzed, by test


@pytest.fixture(autouse=True, scope="module")
def _report_figures() -> Iterator[None]:
    yield
    print(f"\nresponse fuzz: inputs fuzzed {dict(FUZZED)}")  # shown with pytest -s


@attrs.frozen
class Expected:
    """What the client must make of an unmutated response."""

    status: int
    body: bytes
    trailers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Wire:
    """Bytes to send for the first request, and how."""

    data: bytes
    pieces: tuple[int, ...]  # split points; () = whole
    close_after: bool  # the server closes the connection once it has sent them
    method: str = "GET"
    read: str = "request"  # or: "stream-all", "stream-some" (one chunk), "stream-none"
    limits: bool = False  # small max_header_size and max_response_size
    pipelined: bool = False  # a second request is written behind the first (pipelining=2)
    expected: Expected | None = None  # None: mutated, any outcome but a crash or hang


# ----------------------------------------------------------------------------- generating

TOKENS = st.sampled_from(["x-a", "x-b", "content-type", "server", "date", "etag", "vary"])
VALUES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 ;=/,-", max_size=20).map(str.strip)
HEADERS = st.lists(st.tuples(TOKENS, VALUES), max_size=4)
REASONS = st.sampled_from(["OK", "", "Not Found", "Created", "Whatever It Is"])


def head(version: str, status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/{version} {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """``body`` chunked at drawn points, with optional extensions and trailers."""
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    out = b""
    for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
        if end > start:
            ext = draw(st.sampled_from([b"", b";ext=1", b";a"]))
            out += b"%x%s\r\n%s\r\n" % (end - start, ext, body[start:end])
    trailers = tuple(draw(st.lists(st.tuples(st.sampled_from(["x-t", "x-u"]), VALUES), max_size=2)))
    out += b"0\r\n" + b"".join(f"{n}: {v}\r\n".encode() for n, v in trailers) + b"\r\n"
    return out, trailers


METHODS = st.sampled_from(["GET", "GET", "HEAD"])
READS = st.sampled_from(["request", "request", "stream-all", "stream-some", "stream-none"])


@st.composite
def valid_responses(draw: st.DrawFn, method: str) -> tuple[bytes, bool, Expected]:
    """A well-formed response to ``method``: (bytes, whether the server closes after it,
    what it means)."""
    interim = b"".join(
        head("1.1", status, "", draw(HEADERS))
        for status in draw(st.lists(st.sampled_from([100, 102, 103]), max_size=2))
    )
    version = draw(st.sampled_from(["1.1", "1.1", "1.0"]))
    status = draw(st.sampled_from([200, 201, 204, 206, 304, 404, 500]))
    headers = draw(HEADERS)
    body = b"" if status in (204, 304) else draw(st.binary(max_size=64))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    if status in (204, 304):
        framing = "none"
    if framing == "chunked" and version == "1.0":
        framing = "length"  # chunked is HTTP/1.1 only
    close = draw(st.booleans()) or framing == "close"
    trailers: tuple[tuple[str, str], ...] = ()
    if framing == "length":
        headers.append(("content-length", str(len(body))))
        payload = body
    elif framing == "chunked":
        headers.append(("transfer-encoding", "chunked"))
        payload, trailers = draw(chunked(body))
    else:
        payload = body
    if close and version == "1.1" and draw(st.booleans()):
        headers.append(("connection", "close"))
    if version == "1.0" and not close:
        headers.append(("connection", "keep-alive"))
    if draw(st.booleans()):
        headers.append(("keep-alive", f"timeout={draw(st.integers(0, 100))}"))
    reason = draw(REASONS)
    if method == "HEAD":  # framed as if for GET, but no body follows
        payload, body, trailers = b"", b"", ()
    data = interim + head(version, status, reason, headers) + payload
    return data, close, Expected(status, body, trailers)


HOSTILE_HEADERS = [
    b"content-length: 99999999999999999999999999\r\n",
    b"content-length: -1\r\n",
    b"content-length: 5, 6\r\n",
    b"content-length: 0x10\r\n",
    b"content-length: 3\r\ncontent-length: 4\r\n",
    b"transfer-encoding: chunked\r\n",
    b"transfer-encoding: gzip, chunked\r\n",
    b"transfer-encoding: identity\r\n",
    b" folded continuation\r\n",
    b"no colon here\r\n",
    b"x-nul: a\x00b\r\n",
    b"x-bin: \xff\xfe\r\n",
    b"x-long: " + b"a" * 20000 + b"\r\n",
    b"keep-alive: timeout=abc\r\n",
    b"keep-alive: timeout=-5, max=2\r\n",
    b"keep-alive: timeout=1e400\r\n",
    b"connection: upgrade\r\nupgrade: websocket\r\n",
]
BAD_STATUS_LINES = [b"HTTP/1.1 99", b"HTTP/2 200", b"HTTP/1.1 1000", b"HTTP/1.1 101",
                    b"HTTP/1.1 2OO", b"HTTP/1.1", b"HTTP/1.1 200 \xff"]  # fmt: skip
BAD_CHUNKS = [b"zz\r\n", b"ffffffffffffffffffffffff\r\n", b"-1\r\n", b"\r\n", b"5\r\nabc\r\n"]


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with one to three mutations."""
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(
                ["flip", "truncate", "insert", "delete", "header", "chunk", "append", "status"]
            )
        )
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and data:
            at = min(at, len(data) - 1)
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        elif kind == "truncate":
            data = data[:at]
        elif kind == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 8)) :]
        elif kind == "header" and b"\r\n" in data:
            line_end = data.index(b"\r\n") + 2  # right after the status line
            data = data[:line_end] + draw(st.sampled_from(HOSTILE_HEADERS)) + data[line_end:]
        elif kind == "chunk" and b"\r\n\r\n" in data:
            body_at = data.index(b"\r\n\r\n") + 4
            data = data[:body_at] + draw(st.sampled_from(BAD_CHUNKS)) + data[body_at:]
        elif kind == "append":
            data += draw(st.sampled_from([SECOND, b"garbage", b"\r\n", b"0\r\n\r\n"]))
        elif kind == "status":
            status = draw(st.sampled_from(BAD_STATUS_LINES))
            line_end = data.find(b"\r\n")
            data = status + data[line_end:] if line_end >= 0 else status
    return data


@st.composite
def deliveries(draw: st.DrawFn, data: bytes) -> tuple[int, ...]:
    """Split points: whole, one byte at a time, or arbitrary."""
    how = draw(st.sampled_from(["whole", "bytewise", "split"]))
    if how == "whole" or not data:
        return ()
    if how == "bytewise":
        return tuple(range(1, len(data)))
    return tuple(sorted(set(draw(st.lists(st.integers(1, len(data) - 1 or 1), max_size=6)))))


@st.composite
def valid_wires(draw: st.DrawFn) -> Wire:
    method = draw(METHODS)
    data, close, expected = draw(valid_responses(method))
    return Wire(
        data, draw(deliveries(data)), close, method, draw(READS),
        pipelined=draw(st.booleans()), expected=expected,
    )  # fmt: skip


@st.composite
def mutated_wires(draw: st.DrawFn) -> Wire:
    method = draw(METHODS)
    data, close, _ = draw(valid_responses(method))
    data = draw(mutated(data))
    close = close or draw(st.booleans())
    return Wire(
        data, draw(deliveries(data)), close, method, draw(READS), draw(st.booleans()),
        draw(st.booleans()),
    )  # fmt: skip


@st.composite
def arbitrary_wires(draw: st.DrawFn) -> Wire:
    prefix = draw(st.sampled_from([b"", b"HTTP/1.1 ", b"HTTP/1.1 200 OK\r\n"]))
    data = prefix + draw(st.binary(max_size=200))
    return Wire(
        data, draw(deliveries(data)), draw(st.booleans()), draw(METHODS), draw(READS),
        draw(st.booleans()), draw(st.booleans()),
    )  # fmt: skip


# ----------------------------------------------------------------------------- the server


@attrs.define(eq=False)
class RawServer:
    """Answers the first request with ``wire``'s bytes, every later one with ``SECOND``.

    When ``wire.pipelined``, it holds the first answer back until a second request has
    arrived behind the first on the same connection."""

    wire: Wire
    nursery: trio.Nursery
    first_seen: trio.Event = attrs.field(factory=trio.Event)
    fuzz_started: bool = False  # (a new connection may ask while it is still being sent)
    fuzz_sent: trio.Event = attrs.field(factory=trio.Event)
    answered: int = 0
    connections: int = 0

    async def connector(self, origin: object) -> trio.abc.Stream:
        client, server = trio.socket.socketpair()
        self.connections += 1
        self.nursery.start_soon(self.serve, trio.SocketStream(server))
        return trio.SocketStream(client)

    async def serve(self, stream: trio.SocketStream) -> None:
        buffer = b""

        async def receive_head(count: int = 1) -> bool:
            """Read until ``count`` request heads are buffered (requests here are GETs and
            HEADs: a head only); False if the client hung up first."""
            nonlocal buffer
            while buffer.count(b"\r\n\r\n") < count:
                data = await stream.receive_some()
                if not data:
                    return False
                buffer += data
            return True

        try:
            while await receive_head():
                buffer = buffer[buffer.index(b"\r\n\r\n") + 4 :]
                self.answered += 1
                if not self.first_seen.is_set():
                    self.first_seen.set()
                    if self.wire.pipelined and not await receive_head():
                        return
                if self.fuzz_started:
                    await stream.send_all(SECOND)
                    continue
                self.fuzz_started = True
                try:
                    await self.send_fuzz(stream)
                finally:
                    self.fuzz_sent.set()
                if self.wire.close_after:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up
        finally:
            self.fuzz_sent.set()
            await trio.aclose_forcefully(stream)

    async def send_fuzz(self, stream: trio.SocketStream) -> None:
        data, points = self.wire.data, self.wire.pieces
        for start, end in zip((0, *points), (*points, len(data)), strict=True):
            await stream.send_all(data[start:end])
            # The client reads (and parses) this piece before the next one is sent.
            await trio.testing.wait_all_tasks_blocked()


# ----------------------------------------------------------------------------- the check


async def first_request(pool: Pool, wire: Wire) -> Expected:
    """Make the fuzzed request as ``wire.read`` says; what came of it (body and trailers
    only when read to the end)."""
    if wire.read == "request":
        response = await pool.request(wire.method, "/fuzz")
        return Expected(response.status, response.body, tuple(response.trailers))
    async with pool.stream(wire.method, "/fuzz") as streamed:
        if wire.read == "stream-all":
            body = await streamed.read()
            return Expected(streamed.status, body, tuple(streamed.trailers))
        if wire.read == "stream-some":
            async for _ in streamed.body:
                break
    return Expected(streamed.status, b"")


async def exchange(wire: Wire, figures: Counter[str]) -> None:
    limits: dict[str, Any] = (
        {"max_header_size": 512, "max_response_size": 32} if wire.limits else {}
    )
    async with trio.open_nursery() as nursery:
        server = RawServer(wire, nursery)
        async with Pool(
            "http://fuzz",
            connections=1,
            pipelining=2 if wire.pipelined else 1,
            connector=server.connector,
            headers_timeout=TIMEOUT,
            body_timeout=TIMEOUT,
            **limits,
        ) as pool:
            outcome: Expected | trio_pool.TrioPoolError | None = None
            behind: trio_pool.Response | trio_pool.TrioPoolError | None = None

            async def first() -> None:
                nonlocal outcome
                try:
                    outcome = await first_request(pool, wire)
                except trio_pool.TrioPoolError as exc:
                    outcome = exc

            async def pipelined() -> None:
                nonlocal behind
                try:
                    behind = await pool.request("GET", "/behind")
                except trio_pool.TrioPoolError as exc:
                    behind = exc

            with trio.move_on_after(HANG_GUARD):
                async with trio.open_nursery() as requests:
                    requests.start_soon(first)
                    if wire.pipelined:
                        await server.first_seen.wait()
                        requests.start_soon(pipelined)
            assert outcome is not None, f"the request hung on {wire!r}"
            assert behind is not None or not wire.pipelined, f"pipelined request hung: {wire!r}"
            if wire.expected is not None:
                assert isinstance(outcome, Expected), f"{outcome!r} for {wire!r}"
                if wire.read in ("request", "stream-all"):
                    assert outcome == wire.expected
                else:
                    assert outcome.status == wire.expected.status
                if wire.pipelined:  # re-sent on a new connection if this one closed
                    assert isinstance(behind, trio_pool.Response), f"{behind!r} for {wire!r}"
                    assert (behind.status, behind.body) == (200, b"second")
            assert_idle(pool)
            with trio.fail_after(HANG_GUARD):
                await server.fuzz_sent.wait()
            await trio.testing.wait_all_tasks_blocked()
            pool._check_invariants()
            # Whatever state the first response left the connection in, the pool either
            # reuses it cleanly or replaces it.
            with trio.fail_after(HANG_GUARD):
                second = await pool.request("GET", "/second")
            assert (second.status, second.body) == (200, b"second"), f"for {wire!r}"
            assert_idle(pool)
            await trio.testing.wait_all_tasks_blocked()
            pool._check_invariants()
        figures["Response" if isinstance(outcome, Expected) else type(outcome).__name__] += 1
        figures["connection reused" if server.connections == 1 else "connection replaced"] += 1
        nursery.cancel_scope.cancel()


def check(name: str, wire: Wire) -> None:
    FUZZED[name] += 1
    trio.run(exchange, wire, FUZZED, clock=trio.testing.MockClock(autojump_threshold=0))


FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 150)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(valid_wires())
def test_valid_responses_parse_the_same_however_split(wire: Wire) -> None:
    check("valid", wire)


@FUZZ
@given(mutated_wires())
def test_mutated_responses_give_a_response_or_a_pool_error(wire: Wire) -> None:
    check("mutated", wire)


@FUZZ
@given(arbitrary_wires())
def test_arbitrary_bytes_give_a_response_or_a_pool_error(wire: Wire) -> None:
    check("arbitrary", wire)
