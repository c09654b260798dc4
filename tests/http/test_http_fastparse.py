"""The strict fast response reader through a ``Pool``, against a raw server on 127.0.0.1.

The common shapes (content-length, chunked, keep-alive, pipelined responses in one segment)
are read by the fast reader and the connection is kept; every shape it does not fully
recognise is handed to h11 (one case per category, counted through the parser seam) and
comes out exactly as h11 reads it, after which the next request on the pool succeeds.
With ``TRIO_POOL_H11_ONLY=1`` the same tests run with every response read by h11.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
from _helpers import assert_idle

import trio_pool
from trio_pool import Pool
from trio_pool.http import _parser

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@attrs.define(eq=False)
class RawServer:
    """Answers each request (a head without body) with ``answer(path)``'s bytes, sent in
    ``pieces`` (each piece after a short pause), and counts connections and requests."""

    answer: Callable[[bytes], bytes]
    pieces: int = 1
    close_after: bytes | None = None  # the server closes the connection after this path
    connections: int = 0
    requests: list[bytes] = attrs.Factory(list)

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                batch = b""
                closing = False
                while b"\r\n\r\n" in buffer:  # answer what arrived together in one send
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    path = head.split(b" ")[1]
                    self.requests.append(path)
                    closing = closing or path == self.close_after
                    batch += self.answer(path)
                step = max(1, len(batch) // self.pieces)
                for at in range(0, len(batch), step):
                    await stream.send_all(batch[at : at + step])
                    if self.pieces > 1:
                        await trio.sleep(0.001)
                if closing or b"connection: close" in batch.lower():
                    return
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()


@asynccontextmanager
async def raw_pool(server: RawServer, **options: object) -> AsyncIterator[Pool]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, server.handle, 0)
        port = listeners[0].socket.getsockname()[1]
        async with Pool(f"http://127.0.0.1:{port}", **options) as pool:  # type: ignore[arg-type]
            yield pool
        nursery.cancel_scope.cancel()


@pytest.fixture
def deferrals(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per response handed to h11 (whether it was handed over mid-way)."""
    seen: list[bool] = []
    original = _parser.Parser._to_h11

    def counting(self: _parser.Parser, data: bytes, *, skip: bool) -> None:
        seen.append(skip)
        original(self, data, skip=skip)

    monkeypatch.setattr(_parser.Parser, "_to_h11", counting)
    return seen


def fast_expected() -> bool:
    return not _parser.H11_ONLY


@pytest.mark.parametrize("pieces", [1, 7])
async def test_content_length_responses_keep_the_connection(
    deferrals: list[bool], pieces: int
) -> None:
    server = RawServer(lambda path: OK, pieces=pieces)
    async with raw_pool(server) as pool:
        for _ in range(3):
            response = await pool.request("GET", "/")
            assert (response.status, response.body) == (200, b"ok")
            assert response.headers["content-length"] == "2"
        assert server.connections == 1
        assert_idle(pool)
    assert (deferrals == []) is fast_expected()


@pytest.mark.parametrize("pieces", [1, 5, 40])
async def test_chunked_responses_keep_the_connection(deferrals: list[bool], pieces: int) -> None:
    body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"
    body += b"5\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n"
    server = RawServer(lambda path: body, pieces=pieces)
    async with raw_pool(server) as pool:
        for _ in range(2):
            response = await pool.request("GET", "/")
            assert response.body == b"hello 0123456789"
            assert list(response.headers) == [("transfer-encoding", "chunked"), ("x-a", "b")]
        async with pool.stream("GET", "/") as streamed:
            assert b"".join([chunk async for chunk in streamed.body]) == b"hello 0123456789"
        assert server.connections == 1
        assert_idle(pool)
    assert (deferrals == []) is fast_expected()


async def test_pipelined_responses_in_one_segment(deferrals: list[bool]) -> None:
    def answer(path: bytes) -> bytes:
        body = path[1:]
        return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)

    server = RawServer(answer)
    async with raw_pool(server, connections=1, pipelining=4) as pool:
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            results[i] = (await pool.request("GET", f"/r{i}")).body

        for _ in range(2):
            async with trio.open_nursery() as nursery:
                for i in range(6):
                    nursery.start_soon(one, i)
            assert results == {i: f"r{i}".encode() for i in range(6)}
        assert server.connections == 1
        assert_idle(pool)
    assert (deferrals == []) is fast_expected()


async def test_connection_close_ends_the_connection(deferrals: list[bool]) -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\ncontent-length: 2\r\n\r\nok"
    server = RawServer(lambda path: closing if path == b"/close" else OK)
    async with raw_pool(server) as pool:
        assert (await pool.request("GET", "/close")).body == b"ok"
        assert (await pool.request("GET", "/")).body == b"ok"
        assert (await pool.request("GET", "/")).body == b"ok"
        assert server.connections == 2
        assert_idle(pool)
    assert (deferrals == []) is fast_expected()


HEAD_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"
DEFERRED = {
    "informational": (b"HTTP/1.1 103 Early\r\nlink: x\r\n\r\n" + OK, 200, b"ok", True),
    "obs-fold": (
        b"HTTP/1.1 200 OK\r\nx-a: 1\r\n  2\r\ncontent-length: 2\r\n\r\nok", 200, b"ok", True
    ),
    "odd whitespace": (b"HTTP/1.1 200 OK\r\ncontent-length:\t2  \r\n\r\nok", 200, b"ok", True),
    "bare LF": (b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok", 200, b"ok", True),
    "duplicate length": (
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok", 200, b"ok", True
    ),
    "chunk extension": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;x=1\r\nok\r\n0\r\n\r\n",
        200, b"ok", True,
    ),
    "trailers": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-t: 1\r\n\r\n",
        200, b"ok", True,
    ),
    "obs-text": (b"HTTP/1.1 200 \xe9t\xe9\r\ncontent-length: 2\r\n\r\nok", 200, b"ok", True),
    "HTTP/1.0": (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", 200, b"ok", False),
    "read to close": (b"HTTP/1.1 200 OK\r\n\r\nuntil close", 200, b"until close", False),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(DEFERRED))
async def test_deferred_shapes_are_read_as_h11_reads_them(deferrals: list[bool], case: str) -> None:
    data, status, body, keeps = DEFERRED[case]
    server = RawServer(
        lambda path: data if path == b"/odd" else OK, close_after=None if keeps else b"/odd"
    )
    async with raw_pool(server) as pool:
        response = await pool.request("GET", "/odd")
        assert (response.status, response.body) == (status, body)
        if case == "trailers":
            assert response.trailers["x-t"] == "1"
        assert deferrals, "the response was not handed to h11"
        assert (await pool.request("GET", "/")).body == b"ok"
        assert server.connections == (1 if keeps else 2)
        assert_idle(pool)


async def test_head_responses_are_h11s(deferrals: list[bool]) -> None:
    server = RawServer(lambda path: HEAD_OK)
    async with raw_pool(server) as pool:
        response = await pool.request("HEAD", "/")
        assert (response.status, response.body) == (200, b"")
        assert response.headers["content-length"] == "1000"
        assert deferrals == [False]
        assert server.connections == 1
        assert_idle(pool)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            trio_pool.HTTPParserError,
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok", trio_pool.HTTPParserError),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nok", trio_pool.HTTPParserError),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
            trio_pool.HTTPParserError,
        ),
        (b"HTTP/1.1 200 OK\r\nx: " + b"a" * 20000, trio_pool.HeadersOverflowError),
    ],
)
async def test_what_h11_refuses_fails_and_the_pool_recovers(
    data: bytes, error: type[Exception]
) -> None:
    server = RawServer(lambda path: data if path == b"/bad" else OK)
    async with raw_pool(server, max_header_size=4096) as pool:
        with pytest.raises(error):
            await pool.request("GET", "/bad")
        assert (await pool.request("GET", "/")).body == b"ok"
        assert server.connections == 2
        assert_idle(pool)


async def test_an_early_eof_in_a_fast_body_is_a_length_mismatch() -> None:
    server = RawServer(
        lambda path: b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nok"
    )
    async with raw_pool(server) as pool:
        with pytest.raises(trio_pool.ResponseContentLengthMismatchError):
            await pool.request("GET", "/")
        assert_idle(pool)
