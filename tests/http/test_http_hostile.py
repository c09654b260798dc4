"""Hostile servers: endless heads and bodies, slowloris, lying content-lengths, responses to
requests never sent. Each is bounded by an option (or by the caller's cancel scope), fails
with a clear error, and never leaves a poisoned connection in the pool.

Floods run over real sockets (the kernel's buffers give the server backpressure); anything
slow runs over in-memory streams on the autojump clock.
"""

from __future__ import annotations

import ssl
import tracemalloc

import pytest
import trio
import trio.testing
import trustme
from _helpers import assert_idle

import trio_pool
from trio_pool import Pool
from trio_pool.testing import (
    H11Server,
    Script,
    ServerConnection,
    ServerRequest,
    serve_h11,
    serve_memory,
)

MB = 1024 * 1024
FLOOD_LIMIT = 64 * MB  # a hostile server here stops by itself after this much, at worst


async def flood(conn: ServerConnection, first: bytes, piece: bytes) -> int:
    """Send ``first``, then ``piece`` again and again until the client hangs up (or
    :data:`FLOOD_LIMIT`). Returns the bytes sent."""
    sent = 0
    try:
        await conn.send_raw(first)
        while sent < FLOOD_LIMIT:
            await conn.send_raw(piece)
            sent += len(piece)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    return sent


def answering(special: str, hostile: Script) -> Script:
    """A script: ``hostile(request, conn)`` for the path ``special``; anything else gets a
    normal ``200 ok``, so each test can check that the pool recovers on a new connection."""

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        if request.target == special:
            await hostile(request, conn)
        else:
            await conn.respond(200, body=b"ok")

    return script


async def assert_recovers(pool: Pool, server: H11Server, connections: int) -> None:
    """The next request succeeds on a new connection: the hostile one was not reused."""
    assert (await pool.request("GET", "/")).body == b"ok"
    assert server.connections == connections
    assert_idle(pool)


# --------------------------------------------------------------------------- endless head


@pytest.mark.parametrize(
    ("first", "piece"),
    [
        (b"HTTP/1.1 200 OK\r\n", b"x-endless: " + b"y" * 100 + b"\r\n"),  # endless lines
        (b"HTTP/1.1 200 OK\r\nx-endless: ", b"y" * 4096),  # one endless value
        (b"HTTP/1.1 200 ", b"O" * 4096),  # an endless reason phrase
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n", b"x-t: y\r\n"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", b"0" * 4096),
    ],
    ids=["many-lines", "one-value", "reason", "trailers", "chunk-size"],
)
async def test_endless_heads_stop_at_max_header_size(first: bytes, piece: bytes) -> None:
    sent: list[int] = []

    async def endless(request: ServerRequest, conn: ServerConnection) -> None:
        sent.append(await flood(conn, first, piece))

    async with serve_h11(answering("/endless", endless)) as server:
        async with Pool(server.origin, max_header_size=8192) as pool:
            with pytest.raises(trio_pool.HeadersOverflowError, match="max_header_size"):
                await pool.request("GET", "/endless")
            await assert_recovers(pool, server, 2)
    # The client hung up soon after its limit (what the flood sent beyond it is, at most,
    # what the kernel's socket buffers held).
    assert sent
    assert sent[0] < 16 * MB


async def endless_continues(request: ServerRequest, conn: ServerConnection) -> None:
    while True:  # each 100 Continue is small; only their total time is bounded
        await conn.send_raw(b"HTTP/1.1 100 Continue\r\n\r\n")
        await trio.sleep(1)


async def head_byte_by_byte(request: ServerRequest, conn: ServerConnection) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nx-slow: " + b"s" * 100:
        await conn.send_raw(bytes([byte]))
        await trio.sleep(5)  # every gap is far below headers_timeout


@pytest.mark.parametrize("slow_head", [endless_continues, head_byte_by_byte])
async def test_slow_heads_are_bounded_by_headers_timeout_in_total(
    autojump_clock: trio.testing.MockClock, slow_head: Script
) -> None:
    async with serve_memory(answering("/slow", slow_head)) as server:
        async with Pool(server.origin, connector=server.connector, headers_timeout=30) as pool:
            start = trio.current_time()
            with pytest.raises(trio_pool.HeadersTimeoutError):
                await pool.request("GET", "/slow")
            assert trio.current_time() - start == pytest.approx(30)
            await assert_recovers(pool, server, 2)


# --------------------------------------------------------------------------- endless body

ENDLESS_CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
CHUNK = b"10000\r\n" + b"z" * 0x10000 + b"\r\n"  # 64 KiB per chunk


async def endless_body(request: ServerRequest, conn: ServerConnection) -> None:
    await flood(conn, ENDLESS_CHUNKED, CHUNK)


@pytest.mark.parametrize("use_stream", [False, True])
async def test_endless_body_stops_at_max_response_size(use_stream: bool) -> None:
    async with serve_h11(answering("/endless", endless_body)) as server:
        async with Pool(server.origin, max_response_size=MB) as pool:
            with pytest.raises(trio_pool.ResponseExceededMaxSizeError):
                if use_stream:
                    async with pool.stream("GET", "/endless") as response:
                        async for _ in response.body:
                            pass
                else:
                    await pool.request("GET", "/endless")
            await assert_recovers(pool, server, 2)


async def test_endless_body_is_streamed_in_bounded_memory() -> None:
    """Without ``max_response_size`` a stream reads on for as long as its reader wants, and
    memory stays flat: nothing is buffered beyond a read or two."""
    streamed = 0
    async with serve_h11(answering("/endless", endless_body)) as server:
        async with Pool(server.origin) as pool:
            tracemalloc.start()
            try:
                async with pool.stream("GET", "/endless") as response:
                    async for chunk in response.body:
                        streamed += len(chunk)
                        if streamed >= 32 * MB:
                            break
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            await assert_recovers(pool, server, 2)  # the unread rest closed the connection
    assert streamed >= 32 * MB
    # Both sides of the connection are traced (the server runs in this process too).
    assert peak < 2 * MB, f"peak {peak / MB:.1f} MiB while streaming {streamed / MB:.0f} MiB"


# --------------------------------------------------------------------------- slowloris


async def one_byte_every_5s(request: ServerRequest, conn: ServerConnection) -> None:
    # Chunked: a size announced over max_response_size would be refused at the head.
    await conn.send_head(200, [("transfer-encoding", "chunked")])
    while True:
        await trio.sleep(5)
        await conn.send_data(b"s")


async def test_slowloris_body_is_bounded_by_the_callers_cancel_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``body_timeout`` bounds each gap, not the total: a server dripping one byte per gap
    keeps a request alive. What bounds it is the caller's cancel scope (Trio's total
    timeout) or ``max_response_size``; either way the connection is closed."""
    script = answering("/drip", one_byte_every_5s)
    async with serve_memory(script) as server:
        async with Pool(server.origin, connector=server.connector, body_timeout=7) as pool:
            received = 0
            with trio.move_on_after(100) as scope:
                async with pool.stream("GET", "/drip") as response:
                    async for chunk in response.body:
                        received += len(chunk)
            assert scope.cancelled_caught
            assert received == 19  # one byte per 5 s; none came within 7 s of the last
            await assert_recovers(pool, server, 2)
        async with Pool(
            server.origin, connector=server.connector, body_timeout=7, max_response_size=10
        ) as pool:
            start = trio.current_time()
            with pytest.raises(trio_pool.ResponseExceededMaxSizeError):
                await pool.request("GET", "/drip")
            assert trio.current_time() - start == pytest.approx(55)  # the 11th byte


# --------------------------------------------------------------------------- lying lengths


@pytest.mark.parametrize("use_stream", [False, True])
async def test_huge_content_length_then_close_is_a_clear_error(use_stream: bool) -> None:
    async def liar(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_raw(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000000\r\n\r\nabc")
        await conn.close()

    async with serve_memory(answering("/liar", liar)) as server:
        async with Pool(server.origin, connector=server.connector) as pool:
            error = trio_pool.ResponseContentLengthMismatchError
            with pytest.raises(error, match="closed the connection before the whole body"):
                if use_stream:
                    async with pool.stream("GET", "/liar") as response:
                        assert response.headers["content-length"] == "1000000000000"
                        await response.read()
                else:
                    await pool.request("GET", "/liar")
            await assert_recovers(pool, server, 2)


async def test_huge_content_length_then_silence_is_a_body_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def stalls(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_raw(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000000\r\n\r\nabc")
        await trio.sleep_forever()

    async with serve_memory(answering("/stall", stalls)) as server:
        async with Pool(server.origin, connector=server.connector, body_timeout=10) as pool:
            with pytest.raises(trio_pool.BodyTimeoutError):
                await pool.request("GET", "/stall")
            await assert_recovers(pool, server, 2)


async def test_content_length_with_transfer_encoding_is_a_parser_error() -> None:
    """Both framings at once (a response-splitting vector): h11 would let chunked win and
    keep the connection; like undici's parser, the client refuses it and closes."""

    async def both(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_raw(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        await trio.sleep_forever()

    async with serve_memory(answering("/both", both)) as server:
        async with Pool(server.origin, connector=server.connector) as pool:
            with pytest.raises(trio_pool.HTTPParserError, match="transfer-encoding"):
                await pool.request("GET", "/both")
            await assert_recovers(pool, server, 2)


# --------------------------------------------------------------------------- unsolicited


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for 127.0.0.1 from a fresh trustme CA."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


EXTRA_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged"


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("extra", [EXTRA_RESPONSE, b"garbage"], ids=["response", "garbage"])
async def test_bytes_after_the_response_discard_the_connection(
    tls: bool, extra: bytes, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """A response followed by more (a second response nobody asked for, or garbage), in
    the same write: the next request must get its own response on a new connection,
    whether the extra bytes were read with the response or still wait in the socket."""

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        if request.connection == 0:
            # One write, so both are on their way before the client can send again.
            await conn.send_raw(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst" + extra)
            await trio.sleep_forever()  # no FIN: only the extra bytes give it away
        await conn.respond(200, body=b"real %d" % request.connection)

    server_context, client_context = tls_contexts
    async with serve_h11(script, ssl_context=server_context if tls else None) as server:
        async with Pool(server.origin, ssl_context=client_context if tls else None) as pool:
            assert (await pool.request("GET", "/")).body == b"first"
            # A POST is never retried: it succeeds only if it went to a fresh connection.
            for _ in range(3):
                assert (await pool.request("POST", "/")).body == b"real 1"
            assert [r.connection for r in server.requests] == [0, 1, 1, 1]
            assert pool.statistics().connected == 1
            assert_idle(pool)
