"""The embedded benchmark server: correct HTTP/1.1 framing, pipelining, and its lifetime.

Responses are parsed with h11 (a parser nobody here wrote), so a framing mistake in the
hand-rolled responder shows up as a protocol error rather than being judged by itself.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import h11
import pytest
import trio
import trustme

import trio_pool
from trio_pool._cli._target import embedded_server
from trio_pool._server import (
    LARGE_BODY,
    MAX_HEAD_SIZE,
    RESPONSE_BODY,
    RequestParser,
    main,
    serve,
)

# The directory holding the trio_pool package under test, for child processes' PYTHONPATH.
PACKAGE_PARENT = str(Path(trio_pool.__file__).resolve().parent.parent)


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """The port of the embedded server's responder, run in-process for protocol tests."""
    async with trio.open_nursery() as nursery:
        yield await nursery.start(serve)
        nursery.cancel_scope.cancel()


def _port(origin: str) -> int:
    return int(origin.rsplit(":", 1)[1])


async def _read_responses(
    stream: trio.SocketStream, methods: list[bytes]
) -> list[tuple[h11.Response, bytes]]:
    """Parse one response per method, in order, from everything ``stream`` delivers."""
    conn = h11.Connection(h11.CLIENT)
    results = []
    for method in methods:
        # Put h11 in the state of having sent this request; the bytes went out raw already.
        conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        response: h11.Response | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # pragma: no cover - a failure path: show what came instead
                raise AssertionError(f"unexpected event {event!r}")
        assert response is not None
        results.append((response, body))
        if conn.our_state is h11.MUST_CLOSE:
            break
        conn.start_next_cycle()
    return results


async def _read_to_eof(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


async def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n"
            b"HEAD /b HTTP/1.1\r\nhost: x\r\n\r\n"
            b"POST /c HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello"
            b"PUT /d?q=1 HTTP/1.1\r\nhost: x\r\nContent-Length: 0\r\n\r\n"
        )
        with trio.fail_after(5):
            results = await _read_responses(stream, [b"GET", b"HEAD", b"POST", b"PUT"])
    assert [response.status_code for response, _ in results] == [200, 200, 200, 200]
    assert [body for _, body in results] == [RESPONSE_BODY, b"", RESPONSE_BODY, RESPONSE_BODY]
    head_headers = dict(results[1][0].headers)
    assert head_headers[b"content-length"] == str(len(RESPONSE_BODY)).encode()


async def test_large_body_split_across_writes_then_keep_alive(port: int) -> None:
    body = b"x" * 3_000_000
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        head = f"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n"
        with trio.fail_after(10):
            await stream.send_all(head.encode())
            for start in range(0, len(body), 100_000):
                await stream.send_all(body[start : start + 100_000])
            await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            results = await _read_responses(stream, [b"POST", b"GET"])
    assert [(response.status_code, data) for response, data in results] == [
        (200, RESPONSE_BODY),
        (200, RESPONSE_BODY),
    ]


async def test_the_large_target_gets_64_kib(port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"GET /64k HTTP/1.1\r\nhost: x\r\n\r\nHEAD /64k HTTP/1.1\r\nhost: x\r\n\r\n"
        )
        with trio.fail_after(5):
            (get, body), (head, no_body) = await _read_responses(stream, [b"GET", b"HEAD"])
    assert len(LARGE_BODY) == 65536
    assert (get.status_code, body) == (200, LARGE_BODY)
    assert (dict(head.headers)[b"content-length"], no_body) == (b"65536", b"")


async def test_expect_100_continue_gets_an_interim_response(port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nexpect: 100-continue\r\n\r\n"
        )
        with trio.fail_after(5):
            interim = await stream.receive_some(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        await stream.send_all(b"abc")
        with trio.fail_after(5):
            results = await _read_responses(stream, [b"POST"])
    assert results[0][0].status_code == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", b"200"),
        (b"GET / HTTP/1.1\r\nhost: x\r\nConnection: Keep-Alive, Close\r\n\r\n", b"200"),
        (b"GET / HTTP/1.0\r\n\r\n", b"200"),
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\ncontent-length: -1\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab", b"400"),
        (b"GET / HTTP/2.0\r\n\r\n", b"505"),
        (b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", b"501"),
        (b"GET /" + b"a" * (MAX_HEAD_SIZE + 10), b"431"),
    ],
)
async def test_one_response_then_the_server_closes(
    port: int, request_bytes: bytes, status: bytes
) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        # A request pipelined after the closing one must be ignored, not answered.
        await stream.send_all(request_bytes + b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        data = await _read_to_eof(stream)
    assert data.startswith(b"HTTP/1.1 " + status + b" ")
    assert data.count(b"HTTP/1.1 ") == 1
    assert b"\r\nconnection: close\r\n" in data


def test_parser_output_does_not_depend_on_how_bytes_are_split() -> None:
    stream = (
        b"\r\nGET / HTTP/1.1\r\nhost: x\r\n\r\n"
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nbody"
        b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n"
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        b"GET /ignored HTTP/1.1\r\n\r\n"
    )
    whole = RequestParser()
    expected = whole.feed(stream)
    assert whole.closed
    assert expected.count(b"HTTP/1.1 200 OK\r\n") == 4
    bytewise = RequestParser()
    assert b"".join(bytewise.feed(stream[i : i + 1]) for i in range(len(stream))) == expected
    assert bytewise.closed


async def test_leaving_the_block_stops_the_server() -> None:
    async with embedded_server() as server:
        origin = server.origin
        (await trio.open_tcp_stream("127.0.0.1", _port(origin))).socket.close()
    with pytest.raises(OSError, match="all attempts to connect"):
        await trio.open_tcp_stream("127.0.0.1", _port(origin))


async def test_cancelling_the_block_stops_the_server() -> None:
    # The scope is cancelled only once the server is up: a slow start on a busy machine must
    # not turn into a cancelled start-up (this test is about cancelling a running server).
    with trio.CancelScope() as scope:
        async with embedded_server() as server:
            origin = server.origin
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    with pytest.raises(OSError, match="all attempts to connect"):
        await trio.open_tcp_stream("127.0.0.1", _port(origin))


@asynccontextmanager
async def _server_process(*args: str) -> AsyncIterator[tuple[trio.Process, bytes]]:
    """``python -m trio_pool._server ARGS`` for the block; yield it and its first line."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_pool._server", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": PACKAGE_PARENT},
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        with trio.fail_after(10):
            line = await process.stdout.receive_some(256)
        yield process, bytes(line)
    finally:
        await process.stdin.aclose()
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:  # pragma: no cover - only when the test fails
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        await process.stdout.aclose()


async def test_the_server_process_exits_when_its_stdin_closes() -> None:
    async with _server_process() as (process, line):
        assert line.startswith(b"listening 127.0.0.1 ")
        assert process.stdin is not None
        await process.stdin.aclose()
        with trio.fail_after(10):
            assert await process.wait() == 0


async def test_https_on_several_ports(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    args = ["--port", "0", "--port", "0"]
    args += ["--certfile", str(tmp_path / "cert.pem"), "--keyfile", str(tmp_path / "key.pem")]
    async with _server_process(*args) as (_, line):
        fields = line.split()
        assert fields[:2] == [b"listening", b"127.0.0.1"]
        assert len(fields) == 4
        assert fields[2] != fields[3]
        for port in fields[2:]:
            origin = f"https://127.0.0.1:{int(port)}"
            async with trio_pool.Client(origin, ssl_context=client_context) as client:
                with trio.fail_after(10):
                    response = await client.request("GET", "/64k")
            assert (response.status, response.body) == (200, LARGE_BODY)


def test_a_certificate_needs_its_key() -> None:
    with pytest.raises(SystemExit) as raised:
        main(["--certfile", "cert.pem"])
    assert raised.value.code == 2
