"""Interoperability with a server nobody here wrote: hypercorn's trio worker, in-process.

An ASGI app defined below is served by ``hypercorn.trio.serve`` on 127.0.0.1, port 0, inside
the test's own Trio run; TLS certificates come from ``trustme``. Every exchange goes through
``trio_pool.Pool`` or ``trio_pool.Client`` exactly as API.md describes, and every test ends
by checking that the dispatcher's statistics are back to idle.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import trio
import trustme
from _helpers import asgi_lifespan, assert_idle
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Scope,
)

import trio_pool

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

# The directory holding the trio_pool package under test, for a child process's PYTHONPATH.
PACKAGE_PARENT = str(Path(trio_pool.__file__).resolve().parent.parent)
# Big enough to take many socket reads and writes (and hypercorn flow control) both ways.
LARGE = 5 * 1024 * 1024
CHUNKS = [b"chunk-%d;" % i * 100 for i in range(20)]


def _pattern(size: int) -> bytes:
    """``size`` deterministic bytes that are not all alike (a shifted slice shows up)."""
    block = bytes(range(256))
    return (block * (size // 256 + 1))[:size]


# --------------------------------------------------------------------------- the ASGI app


async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Routes: /inspect, /echo, /headers, /big?size=N, /chunked, /status/<code>."""
    if scope["type"] == "lifespan":
        await asgi_lifespan(receive, send)
        return
    assert scope["type"] == "http"
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # http.disconnect: nothing more will arrive
        body += message["body"]
        if not message["more_body"]:
            break
    path: str = scope["path"]
    query = dict(parse_qsl(scope["query_string"].decode()))

    async def respond(status: int, content: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        await send(
            HTTPResponseStartEvent(
                type="http.response.start", status=status, headers=headers, trailers=False
            )
        )
        await send(HTTPResponseBodyEvent(type="http.response.body", body=content, more_body=False))

    if path == "/inspect":
        report = {
            "method": scope["method"],
            "path": path,
            "query_string": scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        content = json.dumps(report).encode()
        await respond(
            200,
            content,
            [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))],
        )
    elif path == "/echo":
        await respond(200, bytes(body), [(b"content-length", b"%d" % len(body))])
    elif path == "/headers":
        await respond(
            200,
            b"ok",
            [
                (b"content-length", b"2"),
                (b"set-cookie", b"a=1"),
                (b"x-multi", b"one"),
                (b"set-cookie", b"b=2"),
                (b"x-multi", b"two"),
                (b"X-Mixed-Case", b"Value"),
            ],
        )
    elif path == "/big":
        content = _pattern(int(query["size"]))
        await respond(200, content, [(b"content-length", b"%d" % len(content))])
    elif path == "/chunked":
        # No content-length and several body messages: hypercorn sends it chunked.
        await send(
            HTTPResponseStartEvent(
                type="http.response.start", status=200, headers=[], trailers=False
            )
        )
        for chunk in CHUNKS:
            await send(HTTPResponseBodyEvent(type="http.response.body", body=chunk, more_body=True))
            await trio.lowlevel.checkpoint()
        await send(HTTPResponseBodyEvent(type="http.response.body", body=b"", more_body=False))
    elif path.startswith("/status/"):
        status = int(path.removeprefix("/status/"))
        content = b"" if status in (204, 304) else b"status %d" % status
        headers = [] if status in (204, 304) else [(b"content-length", b"%d" % len(content))]
        await respond(status, content, headers)
    else:
        await respond(404, b"no such route", [(b"content-length", b"13")])


# --------------------------------------------------------------------------- fixtures


async def _serve(
    nursery: trio.Nursery, *, certfile: Path | None = None, keep_alive_timeout: float = 5.0
) -> tuple[str, Callable[[], None]]:
    """Start hypercorn's trio worker on 127.0.0.1:0; return its origin and a stop function."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = keep_alive_timeout
    if certfile is not None:
        config.certfile = config.keyfile = str(certfile)
    stop = trio.Event()
    binds: list[str] = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
    return binds[0], stop.set


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        url, stop = await _serve(nursery)
        yield url
        stop()


@pytest.fixture
async def pool(origin: str) -> AsyncIterator[trio_pool.Pool]:
    async with trio_pool.Pool(origin, connections=4) as pool:
        yield pool
        assert_idle(pool)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trusted_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def _inspect(dispatcher: trio_pool.Pool | trio_pool.Client, *args: Any, **kw: Any) -> Any:
    response = await dispatcher.request(*args, **kw)
    assert response.status == 200
    return response.json()


# --------------------------------------------------------------------------- methods


async def test_get_post_put_head(pool: trio_pool.Pool) -> None:
    get = await pool.request("GET", "/inspect")
    assert (get.status, get.http_version) == (200, "1.1")
    assert get.headers["Content-Type"] == "application/json"
    assert get.json()["method"] == "GET"
    assert json.loads(get.text())["body_length"] == 0

    post = await _inspect(pool, "POST", "/inspect", body=b"posted bytes")
    assert (post["method"], post["body_length"]) == ("POST", 12)
    assert post["body_sha256"] == hashlib.sha256(b"posted bytes").hexdigest()

    put = await _inspect(pool, "PUT", "/inspect", body="put \N{SNOWMAN}")
    assert (put["method"], put["body_length"]) == ("PUT", len("put \N{SNOWMAN}".encode()))

    head = await pool.request("HEAD", "/inspect")
    assert head.status == 200
    assert head.body == b""
    assert int(head.headers["content-length"]) > 0


async def test_many_concurrent_requests_share_the_connections(pool: trio_pool.Pool) -> None:
    statuses: list[int] = []

    async def one(i: int) -> None:
        response = await pool.request("POST", "/echo", body=b"%d" % i)
        assert response.body == b"%d" % i
        statuses.append(response.status)

    async with trio.open_nursery() as nursery:
        for i in range(60):
            nursery.start_soon(one, i)
    assert statuses == [200] * 60
    assert pool.statistics().connected <= 4


async def test_pipelined_requests(origin: str) -> None:
    # hypercorn answers pipelined requests one at a time, in order.
    bodies: list[bytes] = []
    pool: trio_pool.Pool  # bound below; declared here so one() does not see the fixture

    async def one(i: int) -> None:
        response = await pool.request("GET", "/inspect", query={"i": str(i)})
        bodies.append(response.body)
        assert response.json()["query_string"] == f"i={i}"

    async with trio_pool.Pool(origin, connections=2, pipelining=4) as pool:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(400):
                    nursery.start_soon(one, i)
        assert len(bodies) == 400
        assert_idle(pool)


async def test_reason_phrase_and_http_version(pool: trio_pool.Pool) -> None:
    response = await pool.request("GET", "/status/404")
    assert (response.status, response.http_version) == (404, "1.1")
    assert isinstance(response.reason, str)


# --------------------------------------------------------------------------- query strings


async def test_query_from_a_mapping(pool: trio_pool.Pool) -> None:
    report = await _inspect(pool, "GET", "/inspect", query={"a": "1", "b": "x y/&="})
    assert parse_qsl(report["query_string"]) == [("a", "1"), ("b", "x y/&=")]
    assert report["path"] == "/inspect"


async def test_query_from_pairs_keeps_repeats_and_order(pool: trio_pool.Pool) -> None:
    pairs = [("k", "2"), ("k", "1"), ("z", "\N{SNOWMAN}")]
    report = await _inspect(pool, "GET", "/inspect", query=pairs)
    assert parse_qsl(report["query_string"]) == pairs


async def test_pre_encoded_query_is_sent_verbatim(pool: trio_pool.Pool) -> None:
    report = await _inspect(pool, "GET", "/inspect", query="x=%2F&flag&y=a+b")
    assert report["query_string"] == "x=%2F&flag&y=a+b"


# --------------------------------------------------------------------------- headers


async def test_request_headers_arrive(pool: trio_pool.Pool) -> None:
    from_mapping = await _inspect(pool, "GET", "/inspect", headers={"X-Custom": "v1"})
    assert ["x-custom", "v1"] in from_mapping["headers"]

    pairs = [("x-rep", "a"), (b"x-rep", b"b"), ("X-Other", "c")]
    from_pairs = await _inspect(pool, "GET", "/inspect", headers=pairs)
    received = [tuple(h) for h in from_pairs["headers"]]
    assert [h for h in received if h[0] == "x-rep"] == [("x-rep", "a"), ("x-rep", "b")]
    assert ("x-other", "c") in received
    assert any(name == "host" for name, _ in received)


async def test_response_headers_repeated_and_case_insensitive(pool: trio_pool.Pool) -> None:
    response = await pool.request("GET", "/headers")
    headers = response.headers
    assert headers.get_all("set-cookie") == ["a=1", "b=2"]
    assert headers.get_all("X-MULTI") == ["one", "two"]
    assert headers.get_all("x-absent") == []
    assert headers["x-mixed-case"] == "Value"
    assert headers.get("x-absent", "default") == "default"
    pairs = [(name.lower(), value) for name, value in headers]
    ours = [p for p in pairs if p[0] in ("set-cookie", "x-multi")]
    assert ours == [
        ("set-cookie", "a=1"),
        ("x-multi", "one"),
        ("set-cookie", "b=2"),
        ("x-multi", "two"),
    ]
    assert len(headers) == len(pairs)


# --------------------------------------------------------------------------- bodies


async def test_large_bodies_both_ways(pool: trio_pool.Pool) -> None:
    payload = _pattern(LARGE)
    echoed = await pool.request("POST", "/echo", body=payload)
    assert len(echoed.body) == LARGE
    assert echoed.body == payload

    big = await pool.request("GET", "/big", query={"size": str(LARGE)})
    assert big.body == payload


async def test_streamed_request_body_from_an_async_iterable(pool: trio_pool.Pool) -> None:
    chunks = [_pattern(100_000)[i:] + b"%d" % i for i in range(40)]

    async def produce() -> AsyncIterator[bytes]:
        for chunk in chunks:
            await trio.lowlevel.checkpoint()
            yield chunk

    report = await _inspect(pool, "PUT", "/inspect", body=produce())
    expected = b"".join(chunks)
    assert report["body_length"] == len(expected)
    assert report["body_sha256"] == hashlib.sha256(expected).hexdigest()


async def test_streamed_request_body_from_a_plain_iterable(pool: trio_pool.Pool) -> None:
    def produce() -> Iterator[bytes]:
        yield b"first,"
        yield b"second"

    report = await _inspect(pool, "POST", "/inspect", body=produce())
    assert report["body_sha256"] == hashlib.sha256(b"first,second").hexdigest()


async def test_streamed_response_read_in_chunks(pool: trio_pool.Pool) -> None:
    digest = hashlib.sha256()
    total = chunks = 0
    async with pool.stream("GET", "/big", query={"size": str(LARGE)}) as response:
        assert response.status == 200
        assert int(response.headers["content-length"]) == LARGE
        async for chunk in response.body:
            assert isinstance(chunk, bytes)
            digest.update(chunk)
            total += len(chunk)
            chunks += 1
    assert total == LARGE
    assert chunks > 1
    assert digest.digest() == hashlib.sha256(_pattern(LARGE)).digest()


async def test_streamed_response_read_whole(pool: trio_pool.Pool) -> None:
    async with pool.stream("POST", "/echo", body=b"x" * 70_000) as response:
        assert await response.read() == b"x" * 70_000


async def test_streamed_response_left_unread_frees_the_connection(pool: trio_pool.Pool) -> None:
    async with pool.stream("GET", "/big", query={"size": str(LARGE)}) as response:
        assert response.status == 200
    # The slot is free again: a following request is served (and the fixture checks idle).
    assert (await pool.request("GET", "/status/200")).body == b"status 200"


async def test_chunked_response(pool: trio_pool.Pool) -> None:
    response = await pool.request("GET", "/chunked")
    assert response.headers.get("transfer-encoding", "").lower() == "chunked"
    assert "content-length" not in [name.lower() for name, _ in response.headers]
    assert response.body == b"".join(CHUNKS)

    async with pool.stream("GET", "/chunked") as streamed:
        received = [chunk async for chunk in streamed.body]
    assert b"".join(received) == b"".join(CHUNKS)


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses(pool: trio_pool.Pool, status: int) -> None:
    response = await pool.request("GET", f"/status/{status}")
    assert (response.status, response.body) == (status, b"")
    # The connection is still usable afterwards: the framing was understood.
    assert (await pool.request("GET", "/status/200")).body == b"status 200"


# --------------------------------------------------------------------------- connection reuse


async def test_cancelled_mid_response_leaves_the_pool_usable(pool: trio_pool.Pool) -> None:
    with trio.CancelScope() as scope:
        async with pool.stream("GET", "/big", query={"size": str(LARGE)}) as response:
            async for _ in response.body:
                scope.cancel()
                await trio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    # The half-read connection was not handed out again: the next exchanges are clean.
    for _ in range(3):
        assert (await pool.request("GET", "/status/200")).body == b"status 200"


async def test_connections_the_server_closed_while_idle_are_not_reused() -> None:
    # hypercorn closes idle connections after 0.3 s, well before the pool's own 4 s.
    async with trio.open_nursery() as nursery:
        url, stop = await _serve(nursery, keep_alive_timeout=0.3)
        async with trio_pool.Pool(url, connections=2) as pool:
            async with trio.open_nursery() as requests:
                for _ in range(2):
                    requests.start_soon(partial(pool.request, "GET", "/status/200"))
            assert pool.statistics().connected == 2
            await trio.sleep(0.8)  # real sockets: the server's FINs arrive meanwhile
            # POST is not idempotent: it must not be sent on a connection the server closed.
            for _ in range(3):
                report = await _inspect(pool, "POST", "/inspect", body=b"after idle")
                assert report["body_length"] == 10
            assert_idle(pool)
        stop()


# --------------------------------------------------------------------------- status errors


@pytest.mark.parametrize("status", [404, 500, 503])
async def test_raise_for_status_on_errors(pool: trio_pool.Pool, status: int) -> None:
    response = await pool.request("GET", f"/status/{status}")
    assert response.status == status  # not an error by itself
    with pytest.raises(trio_pool.ResponseStatusError) as caught:
        response.raise_for_status()
    assert caught.value.status == status
    assert caught.value.response is response


@pytest.mark.parametrize("status", [200, 204, 304])
async def test_raise_for_status_passes_other_statuses(pool: trio_pool.Pool, status: int) -> None:
    (await pool.request("GET", f"/status/{status}")).raise_for_status()


# --------------------------------------------------------------------------- Client


async def test_client_one_connection(origin: str) -> None:
    async with trio_pool.Client(origin) as client:
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(partial(client.request, "POST", "/echo", body=b"%d" % i))
        report = await _inspect(client, "GET", "/inspect", query={"q": "1"})
        assert report["query_string"] == "q=1"
        assert client.statistics().connected <= 1
        assert_idle(client)


# --------------------------------------------------------------------------- TLS


@pytest.fixture
async def tls_origin(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[str]:
    """hypercorn over TLS with a certificate for 127.0.0.1 issued by ``ca``."""
    certfile = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(certfile))
    async with trio.open_nursery() as nursery:
        url, stop = await _serve(nursery, certfile=certfile)
        yield url
        stop()


async def test_tls_with_a_trusted_ca(tls_origin: str, trusted_context: ssl.SSLContext) -> None:
    assert tls_origin.startswith("https://127.0.0.1:")
    async with trio_pool.Pool(tls_origin, ssl_context=trusted_context) as pool:
        report = await _inspect(pool, "POST", "/inspect", body=b"secret")
        assert report["body_length"] == 6
        big = await pool.request("GET", "/big", query={"size": str(LARGE)})
        assert big.body == _pattern(LARGE)
        assert_idle(pool)


async def test_tls_with_an_untrusted_ca(tls_origin: str) -> None:
    other = ssl.create_default_context()
    trustme.CA().configure_trust(other)
    async with trio_pool.Pool(tls_origin, ssl_context=other) as pool:
        with pytest.raises(trio_pool.ConnectError) as caught:
            await pool.request("GET", "/inspect")
        assert isinstance(caught.value.__cause__, ssl.SSLError)
        assert_idle(pool)


async def test_tls_with_the_wrong_host_name(
    ca: trustme.CA, tmp_path: Path, trusted_context: ssl.SSLContext
) -> None:
    # Trusted CA, but the certificate names another host than the one connected to.
    certfile = tmp_path / "other.pem"
    ca.issue_cert("other.example").private_key_and_cert_chain_pem.write_to_path(str(certfile))
    async with trio.open_nursery() as nursery:
        url, stop = await _serve(nursery, certfile=certfile)
        async with trio_pool.Pool(url, ssl_context=trusted_context) as pool:
            with pytest.raises(trio_pool.ConnectError) as caught:
                await pool.request("GET", "/inspect")
            assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
            assert_idle(pool)
        stop()


# --------------------------------------------------------------------------- interruption


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def test_keyboard_interrupt_in_a_connection_task_stops_the_pool(origin: str) -> None:
    # A streamed body is iterated by the pool's connection task, which is also where a real
    # Ctrl-C lands when that task happens to be running. The interrupt must end the pool's
    # block promptly, not be absorbed while the pool respawns connection tasks forever.
    async def body() -> AsyncIterator[bytes]:
        yield b"x"
        raise KeyboardInterrupt

    started = trio.current_time()
    caught: BaseException | None = None
    with trio.move_on_after(5):
        try:
            async with trio_pool.Pool(origin) as pool:
                await pool.request("POST", "/echo", body=body())
        except BaseException as exc:  # KeyboardInterrupt, bare or in a group
            caught = exc
    elapsed = trio.current_time() - started
    assert caught is not None
    leaves = _leaves(caught)
    kinds = sorted({type(leaf).__name__ for leaf in leaves})
    assert elapsed < 5, f"still running after 5 s: {len(leaves)} exceptions of kinds {kinds}"
    assert any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves), kinds


# --------------------------------------------------------------------------- the bench command


async def test_bench_command_over_tls(tls_origin: str, ca: trustme.CA, tmp_path: Path) -> None:
    # The command uses ssl.create_default_context(), which honours SSL_CERT_FILE.
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    env = {**os.environ, "SSL_CERT_FILE": str(ca_file), "PYTHONPATH": PACKAGE_PARENT}
    command = [sys.executable, "-m", "trio_pool", "bench", f"{tls_origin}/inspect?q=1"]
    with trio.fail_after(30):
        completed = await trio.run_process(
            [*command, "--json", "-n", "300", "-c", "3", "-m", "PUT"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert (result["requests"], result["errors"]) == (300, 0)
    assert result["status_counts"] == {"200": 300}
