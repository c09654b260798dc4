"""API.md section 4, the request conveniences, on every dispatcher (``Pool`` over loopback
TCP, ``Client`` over in-memory streams, ``BalancedPool``, ``MockPool``): ``json=``, the body
types (files in 64 KiB blocks, generators, bad types refused before anything is sent), the
query encoding, absolute URLs, ``Response.url``, ``StreamResponse.read()``/``text()``/
``json()``, ``ResponseDecodeError``, ``ResponseStatusError``'s message; and issue 12's
HTTP items 1 (dispatch arguments), 4 (CONNECT), 6 (reading a stream is a checkpoint),
7 (virtual hosts) and 8."""

from __future__ import annotations

import errno
import io
import json
import os
import socket
import ssl
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import trio_pool
from trio_pool import (
    BalancedPool,
    Client,
    Dispatcher,
    Headers,
    InvalidArgumentError,
    Pool,
    RequestOptions,
    ResponseDecodeError,
    ResponseStatusError,
)
from trio_pool.testing import (
    MockCall,
    MockPool,
    MockReply,
    ServerConnection,
    ServerRequest,
    serve_h11,
    serve_memory,
)

if sys.version_info < (3, 11):  # pragma: no cover - trio depends on the backport there
    from exceptiongroup import ExceptionGroup

KINDS = ["pool-tcp", "client-memory", "balanced-tcp", "mock"]


@attrs.frozen
class Seen:
    """A request as the server (or the mock) received it."""

    method: str
    target: str
    headers: Headers
    body: bytes


@attrs.define
class Target:
    """A dispatcher under test, the origin it serves, and what reached the server."""

    http: Dispatcher
    origin: str
    seen: list[Seen]
    connections: Callable[[], int]  # connections the server accepted so far


def _answer(seen: Seen) -> tuple[int, list[tuple[str, str]], bytes, str]:
    """The scripted answer: 200 with the request as JSON, or the status a path asks for."""
    if seen.target.startswith("/status/"):
        status = int(seen.target.removeprefix("/status/"))
        return status, [], b"", HTTPStatus(status).phrase
    if seen.target == "/gzip":
        headers = [("content-encoding", "gzip"), ("content-type", "text/plain")]
        return 200, headers, b"" if seen.method == "HEAD" else b"\x1f\x8b", "OK"
    body = json.dumps({"method": seen.method, "target": seen.target}).encode()
    return 200, [("content-type", "application/json")], body, "OK"


@asynccontextmanager
async def dispatcher(kind: str) -> AsyncIterator[Target]:
    seen: list[Seen] = []

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        got = Seen(request.method, request.target, Headers(request.headers), request.body)
        seen.append(got)
        status, headers, body, reason = _answer(got)
        await conn.respond(status, headers, body, reason=reason.encode())

    if kind == "mock":

        def reply(call: MockCall) -> MockReply:
            got = Seen(call.method, call.target, call.headers, call.body)
            seen.append(got)
            status, headers, body, reason = _answer(got)
            return MockReply(status, body, headers, reason=reason)

        async with MockPool("http://mock.test") as mock:
            mock.intercept(lambda _: True, lambda _: True).reply(reply).persist()
            yield Target(mock, "http://mock.test", seen, lambda: 0)
        return
    if kind == "client-memory":
        async with (
            serve_memory(script) as server,
            Client(server.origin, connector=server.connector) as client,
        ):
            yield Target(client, server.origin, seen, lambda: server.connections)
        return
    async with serve_h11(script) as server:
        http: Pool | BalancedPool = (
            Pool(server.origin) if kind == "pool-tcp" else BalancedPool(server.origin)
        )
        async with http:
            yield Target(http, server.origin, seen, lambda: server.connections)


@pytest.fixture(params=KINDS)
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    async with dispatcher(request.param) as made:
        yield made


def idle(http: Dispatcher) -> bool:
    stats = http.statistics()
    return stats.size == 0 and stats.running == 0


# --------------------------------------------------------------------------- json=


async def test_json_is_sent_compact_utf8_with_its_content_type(target: Target) -> None:
    value = {"name": "Zoë", "tags": [1, 2.5, None, True]}
    response = await target.http.request("POST", "/j", json=value)
    assert response.status == 200
    (seen,) = target.seen
    assert seen.body == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["content-length"] == str(len(seen.body))


async def test_json_keeps_the_callers_content_type_and_works_on_stream(target: Target) -> None:
    headers = {"content-type": "application/vnd.api+json"}
    async with target.http.stream("PUT", "/j", json=[1], headers=headers) as response:
        assert await response.json() == {"method": "PUT", "target": "/j"}
    assert target.seen[0].headers.get_all("content-type") == ["application/vnd.api+json"]
    assert target.seen[0].body == b"[1]"


async def test_json_in_request_options_for_dispatch(target: Target) -> None:
    handler = Recorder()
    await target.http.dispatch(RequestOptions("POST", "/d", json={"a": 1}), handler)
    assert handler.events[0] == "start"
    assert handler.events[-1] == "end"
    assert target.seen[0].body == b'{"a":1}'


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"json": {"a": 1}, "body": b"x"}, "json"),
        ({"json": {"a": {1, 2}}}, "json"),  # a set is not JSON-serialisable
        ({"json": {"x": object()}}, "json"),
    ],
    ids=repr,
)
async def test_bad_json_is_refused_before_anything_is_sent(
    target: Target, kwargs: dict[str, Any], word: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=word):
        await target.http.request("POST", "/j", **kwargs)
    assert target.seen == []
    assert idle(target.http)


# --------------------------------------------------------------------------- body=


async def test_bytes_likes_and_str_bodies(target: Target) -> None:
    for body in (bytearray(b"ab"), memoryview(b"cd"), "é"):
        await target.http.request("POST", "/b", body=body)
    assert [seen.body for seen in target.seen] == [b"ab", b"cd", "é".encode()]
    assert [seen.headers["content-length"] for seen in target.seen] == ["2", "2", "2"]


async def test_generators_and_lists_of_bytes_stream_chunked(target: Target) -> None:
    async def agen() -> AsyncIterator[Any]:
        yield b"a"
        await trio.lowlevel.checkpoint()
        yield bytearray(b"b")

    def gen() -> Iterator[Any]:
        yield b"c"
        yield memoryview(b"d")

    await target.http.request("POST", "/g", body=agen())
    await target.http.request("POST", "/g", body=gen())
    await target.http.request("POST", "/g", body=[b"e", b"f"])
    assert [seen.body for seen in target.seen] == [b"ab", b"cd", b"ef"]


@pytest.mark.parametrize(
    "body",
    [
        {"a": "1"},
        [b"a", "b"],
        ["a", "b"],
        ("a",),
        42,
        1.5,
        object(),
        io.StringIO("text"),
    ],
    ids=lambda body: type(body).__name__ + repr(body)[:20],
)
async def test_a_body_of_a_wrong_type_is_refused_before_anything_is_sent(
    target: Target, body: object
) -> None:
    # A dict used to raise a bare TypeError after the head was written.
    with pytest.raises(InvalidArgumentError, match="body"):
        await target.http.request("POST", "/b", body=body)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="body"):
        async with target.http.stream("POST", "/b", body=body):  # type: ignore[arg-type]
            pass
    with pytest.raises(InvalidArgumentError, match="body"):
        async with target.http.pipeline("POST", "/b", body=body):  # type: ignore[arg-type]
            pass
    handler = Recorder()
    with pytest.raises(InvalidArgumentError, match="body"):
        await target.http.dispatch(RequestOptions("POST", "/b", body=body), handler)  # type: ignore[arg-type]
    assert handler.events == []
    assert target.seen == []
    assert target.connections() == 0  # nothing was even connected for it
    assert idle(target.http)
    assert (await target.http.request("GET", "/after")).status == 200


async def test_a_text_mode_closed_or_write_only_file_is_refused(
    target: Target, tmp_path: Path
) -> None:
    path = tmp_path / "t.txt"
    path.write_text("text")
    with path.open() as text_file:
        with pytest.raises(InvalidArgumentError, match="text-mode"):
            await target.http.request("POST", "/f", body=text_file)  # type: ignore[arg-type]
    async with await trio.open_file(path) as async_text:
        with pytest.raises(InvalidArgumentError, match="text-mode"):
            await target.http.request("POST", "/f", body=async_text)  # type: ignore[arg-type]
    with path.open("ab") as write_only:
        with pytest.raises(InvalidArgumentError, match="not open for reading"):
            await target.http.request("POST", "/f", body=write_only)
    closed = path.open("rb")
    closed.close()
    with pytest.raises(InvalidArgumentError, match="closed file"):
        await target.http.request("POST", "/f", body=closed)
    assert target.seen == []


@pytest.mark.parametrize("bad", ["str", 3, None])
async def test_an_iterable_yielding_a_non_bytes_chunk_fails_and_closes_the_connection(
    bad: object,
) -> None:
    def gen() -> Iterator[object]:
        yield b"ok"
        yield bad

    # Real TCP: the server sees a head, then the connection dropped; it is never reused.
    async with dispatcher("pool-tcp") as made:
        http = made.http
        await http.request("GET", "/warm")
        with pytest.raises(InvalidArgumentError, match="body"):
            await http.request("POST", "/bad", body=gen())  # type: ignore[arg-type]
        assert idle(http)
        await trio.testing.wait_all_tasks_blocked()  # its worker closes it
        assert http.statistics().connected == 0
        assert (await http.request("GET", "/next")).status == 200
        assert made.connections() == 2
        assert [seen.target for seen in made.seen] == ["/warm", "/next"]


async def test_an_async_iterable_yielding_str_fails_stream_and_pipeline() -> None:
    async def agen() -> AsyncIterator[object]:
        yield b"a"
        yield "b"

    async with dispatcher("client-memory") as made:
        with pytest.raises(InvalidArgumentError, match="yielded a str"):
            async with made.http.stream("POST", "/s", body=agen()):  # type: ignore[arg-type]
                pass
        with pytest.raises(InvalidArgumentError, match="yielded a str"):
            async with made.http.pipeline("POST", "/p", body=agen()) as response:  # type: ignore[arg-type]
                await response.read()
        assert idle(made.http)
        assert (await made.http.request("GET", "/next")).status == 200


class CountingFile(io.RawIOBase):
    """A binary file that records the size of every read."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.reads: list[int] = []
        self.threads: set[bool] = set()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.reads.append(size)
        try:
            trio.lowlevel.current_task()
            self.threads.add(False)
        except RuntimeError:
            self.threads.add(True)  # no Trio task here: a worker thread
        return self._data.read(size)


async def test_a_binary_file_is_read_in_64k_blocks_off_the_event_loop(target: Target) -> None:
    data = bytes(range(256)) * 1024 + b"\n" * 1000  # 263 KiB, lines everywhere
    upload = CountingFile(data)
    await target.http.request("PUT", "/f", body=upload)
    assert target.seen[0].body == data
    assert set(upload.reads) == {65536}
    assert len(upload.reads) == len(data) // 65536 + 2  # the last partial block, then b""
    assert upload.threads == {True}


async def test_real_files_bytesio_and_trio_async_files(target: Target, tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    data = b"line\n" * 30000  # 150 000 bytes: three blocks
    path.write_bytes(data)
    with path.open("rb") as sync_file:
        await target.http.request("PUT", "/sync", body=sync_file)
    await target.http.request("PUT", "/bytesio", body=io.BytesIO(data))
    async with await trio.open_file(path, "rb") as async_file:
        await target.http.request("PUT", "/async", body=async_file)
    with path.open("rb") as sync_file:
        sync_file.seek(100_000)  # sent from where it stands
        async with target.http.pipeline("PUT", "/rest", body=sync_file) as response:
            await response.read()
    assert [seen.body == data for seen in target.seen[:3]] == [True, True, True]
    assert target.seen[3].body == data[100_000:]
    # The size is known: a content-length, not chunked (servers that refuse chunked uploads).
    assert [seen.headers.get("content-length") for seen in target.seen] == [
        "150000",
        "150000",
        "150000",
        "50000",
    ]
    assert all("transfer-encoding" not in seen.headers for seen in target.seen)


async def test_a_pipe_is_streamed_chunked(target: Target) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"piped")
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        await target.http.request("PUT", "/pipe", body=pipe)
    assert target.seen[0].body == b"piped"
    assert target.seen[0].headers.get("content-length") is None


async def test_cancelled_while_awaiting_an_async_file_leaves_the_pool_idle() -> None:
    reading = trio.Event()

    class SlowFile:
        async def read(self, size: int) -> bytes:
            reading.set()
            await trio.sleep_forever()
            raise AssertionError("not reached")

    async with dispatcher("pool-tcp") as made:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(made.http.request, "PUT", "/slow", body=SlowFile()))
                await reading.wait()
                scope.cancel()
        assert scope.cancelled_caught
        assert idle(made.http)
        await trio.testing.wait_all_tasks_blocked()  # its worker closes it
        assert made.http.statistics().connected == 0  # cut mid-body: never reused
        assert (await made.http.request("GET", "/next")).status == 200
        assert made.connections() == 2
        assert [seen.target for seen in made.seen] == ["/next"]


async def test_cancelled_while_a_thread_reads_a_file_leaves_the_pool_idle() -> None:
    started = threading.Event()
    release = threading.Event()

    class BlockingFile(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            started.set()
            release.wait(10)
            return b"x" * size

    async with dispatcher("client-memory") as made:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                upload = partial(made.http.request, "PUT", "/slow", body=BlockingFile())
                nursery.start_soon(upload)
                await trio.to_thread.run_sync(started.wait)
                scope.cancel()  # delivered when the block read in the thread returns
                release.set()
        assert scope.cancelled_caught
        assert idle(made.http)
        assert (await made.http.request("GET", "/next")).status == 200
        assert [seen.target for seen in made.seen] == ["/next"]


async def stale_second(request: ServerRequest, conn: ServerConnection) -> None:
    """The second request of each connection meets a closed connection (the keep-alive race
    of API.md 1.6)."""
    if request.index == 1:
        await conn.close()
        return
    await conn.respond(200, body=request.body)


async def test_a_one_shot_body_is_not_resent_after_a_stale_keep_alive() -> None:
    def gen() -> Iterator[bytes]:
        yield b"once"

    async with (
        serve_memory(stale_second) as server,
        Pool(server.origin, connector=server.connector) as pool,
    ):
        await pool.request("GET", "/")
        # PUT is idempotent, but its generator was consumed by the failed try: re-sending
        # it would send an empty body. The failure reaches the caller instead.
        with pytest.raises(trio_pool.SocketError):
            await pool.request("PUT", "/gen", body=gen())
        await pool.request("GET", "/warm")
        with pytest.raises(trio_pool.SocketError):
            await pool.request("PUT", "/file", body=io.BytesIO(b"once"))
        assert idle(pool)
        assert [r.target for r in server.requests] == ["/", "/gen", "/warm", "/file"]


async def test_a_list_body_is_resent_whole_after_a_stale_keep_alive() -> None:
    async with (
        serve_memory(stale_second) as server,
        Pool(server.origin, connector=server.connector) as pool,
    ):
        await pool.request("GET", "/")
        response = await pool.request("PUT", "/list", body=[b"a", b"b"])
        assert response.body == b"ab"
        assert [(r.target, r.body) for r in server.requests] == [
            ("/", b""),
            ("/list", b"ab"),
            ("/list", b"ab"),
        ]


# --------------------------------------------------------------------------- query=


async def test_query_values_are_encoded_as_httpx_does(target: Target) -> None:
    query = {"a": None, "t": True, "f": False, "n": 1, "x": 2.5, "l": ["p", 3], "s": "a b"}
    await target.http.request("GET", "/q", query=query)
    await target.http.request("GET", "/q?z=0", query=[("k", None), ("k", (True, "v"))])
    assert [seen.target for seen in target.seen] == [
        "/q?a=&t=true&f=false&n=1&x=2.5&l=p&l=3&s=a+b",
        "/q?z=0&k=&k=true&k=v",
    ]


@pytest.mark.parametrize("query", [{"a": object()}, {"a": {"b": 1}}, {1: "x"}, [("a",)], 5])
async def test_a_bad_query_is_refused_before_anything_is_sent(
    target: Target, query: object
) -> None:
    with pytest.raises(InvalidArgumentError, match="query"):
        await target.http.request("GET", "/q", query=query)  # type: ignore[arg-type]
    assert target.seen == []


# --------------------------------------------------------------------------- URLs


async def test_an_absolute_url_of_the_own_origin_is_accepted_and_response_url_says_it(
    target: Target,
) -> None:
    response = await target.http.request("GET", f"{target.origin}/a/b?c=1#frag", query={"d": 2})
    assert target.seen[0].target == "/a/b?c=1&d=2"
    assert response.url == f"{target.origin}/a/b?c=1&d=2"
    response = await target.http.request("GET", target.origin)
    assert target.seen[1].target == "/"
    assert response.url == f"{target.origin}/"
    async with target.http.stream("GET", "/s", query={"q": "v"}) as streamed:
        assert streamed.url == f"{target.origin}/s?q=v"


async def test_an_absolute_url_of_another_origin_is_refused_naming_both(target: Target) -> None:
    for url in ("http://other.example/x", target.origin.replace("http:", "https:") + "/x"):
        with pytest.raises(InvalidArgumentError) as info:
            await target.http.request("GET", url)
        assert url.rsplit("/", 1)[0] in str(info.value)
        assert target.origin in str(info.value)
    assert target.seen == []


async def test_the_origin_may_be_spelled_differently() -> None:
    async with dispatcher("client-memory") as made:  # http://testserver
        await made.http.request("GET", "HTTP://TestServer:80/x")
        assert made.seen[0].target == "/x"


# --------------------------------------------------------------------------- responses


async def test_stream_read_caches_and_text_json_read_if_needed(target: Target) -> None:
    async with target.http.stream("GET", "/r") as response:
        first = await response.read()
        assert await response.read() == first
        assert await response.text() == first.decode()
        assert await response.json() == {"method": "GET", "target": "/r"}
        assert [chunk async for chunk in response.body] == [first]
    async with target.http.stream("GET", "/t") as response:
        assert await response.text() == '{"method": "GET", "target": "/t"}'
    async with target.http.stream("GET", "/j") as response:
        assert await response.json() == {"method": "GET", "target": "/j"}
    assert idle(target.http)


async def test_an_undecoded_content_encoding_raises_response_decode_error(target: Target) -> None:
    response = await target.http.request("GET", "/gzip")
    for call in (response.text, response.json):
        with pytest.raises(ResponseDecodeError, match=r"gzip.*interceptors\.decompress\(\)"):
            call()
    assert response.body == b"\x1f\x8b"
    async with target.http.stream("GET", "/gzip") as streamed:
        with pytest.raises(ResponseDecodeError, match="gzip"):
            await streamed.text()
        with pytest.raises(ResponseDecodeError, match="gzip"):
            await streamed.json()
        assert await streamed.read() == b"\x1f\x8b"
    assert isinstance(ResponseDecodeError("x"), trio_pool.TrioPoolError)
    head = await target.http.request("HEAD", "/gzip")  # no body: nothing to decode
    assert head.text() == ""


@pytest.mark.parametrize(
    ("status", "suffix"), [(503, "503 Service Unavailable"), (404, "404 Not Found")]
)
async def test_response_status_error_names_method_url_and_status(
    target: Target, status: int, suffix: str
) -> None:
    response = await target.http.request("DELETE", f"/status/{status}")
    with pytest.raises(ResponseStatusError) as info:
        response.raise_for_status()
    assert str(info.value) == f"DELETE {target.origin}/status/{status}: {suffix}"
    assert info.value.response is response


async def test_response_status_error_without_a_reason_has_no_double_space() -> None:
    async def bare(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_raw(b"HTTP/1.1 599\r\ncontent-length: 0\r\n\r\n")

    async with serve_memory(bare) as server, Pool(server.origin, connector=server.connector) as p:
        response = await p.request("GET", "/x")
    assert response.reason == ""
    with pytest.raises(ResponseStatusError) as info:
        response.raise_for_status()
    assert str(info.value) == "GET http://testserver/x: 599"


# --------------------------------------------------------------------------- issue 12, item 6


async def test_reading_a_stream_is_a_checkpoint_even_with_buffered_data(target: Target) -> None:
    for step in ("read", "iterate", "text", "json"):
        async with target.http.stream("GET", f"/{step}") as response:
            await trio.testing.wait_all_tasks_blocked()  # the whole body has arrived
            with trio.CancelScope() as scope:
                scope.cancel()
                if step == "read":
                    await response.read()
                elif step == "iterate":
                    async for _ in response.body:
                        pass
                elif step == "text":
                    await response.text()
                else:
                    await response.json()
            assert scope.cancelled_caught, step
        assert idle(target.http)
    assert (await target.http.request("GET", "/after")).status == 200


async def test_a_cached_read_is_a_checkpoint_too(target: Target) -> None:
    async with target.http.stream("GET", "/c") as response:
        await response.read()
        with trio.CancelScope() as scope:
            scope.cancel()
            await response.read()
        assert scope.cancelled_caught
        with trio.CancelScope() as scope:
            scope.cancel()
            async for _ in response.body:
                pass
        assert scope.cancelled_caught


# --------------------------------------------------------------------------- issue 12, item 1


class Recorder:
    """A complete dispatch handler."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def on_request_start(self, controller: object) -> None:
        self.events.append("start")

    def on_response_start(self, controller: object, status: int, headers: object, r: str) -> None:
        self.events.append("head")

    def on_response_data(self, controller: object, chunk: bytes) -> None:
        self.events.append("data")

    def on_response_end(self, controller: object, trailers: object) -> None:
        self.events.append("end")

    def on_response_error(self, controller: object, error: BaseException) -> None:
        self.events.append("error")


def _without(name: str) -> object:
    class Partial(Recorder):
        pass

    handler = Partial()
    setattr(handler, name, None)  # present but not callable counts as missing
    return handler


@pytest.mark.parametrize(
    ("options", "handler", "word"),
    [
        (RequestOptions("GET", "/"), None, "on_request_start"),
        (RequestOptions("GET", "/"), object(), "on_response_error"),
        (RequestOptions("GET", "/"), _without("on_response_start"), "on_response_start"),
        (RequestOptions("GET", "/"), _without("on_response_data"), "on_response_data"),
        (RequestOptions("GET", "/"), _without("on_response_end"), "on_response_end"),
        (RequestOptions("GET", "/"), _without("on_response_error"), "on_response_error"),
        ({"method": "GET", "path": "/"}, Recorder(), "options"),
        (None, Recorder(), "options"),
    ],
    ids=repr,
)
async def test_dispatch_checks_its_arguments_before_anything_is_sent(
    target: Target, options: object, handler: object, word: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=word):
        await target.http.dispatch(options, handler)  # type: ignore[arg-type]
    assert target.seen == []
    assert idle(target.http)
    if isinstance(handler, Recorder):
        assert handler.events == []


# --------------------------------------------------------------------------- issue 12, item 4


@pytest.mark.parametrize("method", ["CONNECT", "connect"])
async def test_connect_is_refused_outside_connect(target: Target, method: str) -> None:
    with pytest.raises(InvalidArgumentError, match="connect"):
        await target.http.request(method, "/")
    with pytest.raises(InvalidArgumentError, match="connect"):
        async with target.http.stream(method, "/"):
            pass
    with pytest.raises(InvalidArgumentError, match="connect"):
        async with target.http.pipeline(method, "/"):
            pass
    with pytest.raises(InvalidArgumentError, match="connect"):
        await target.http.dispatch(RequestOptions(method, "/"), Recorder())
    assert target.seen == []
    assert idle(target.http)


@pytest.mark.parametrize(
    "authority",
    [
        None,
        "",
        "nohostport",
        "host:",
        ":443",
        "host:0",
        "host:65536",
        "host:https",
        "::1:443",
        "[::1]",
        "[nothex]:443",
        "user@host:443",
        "host:443/path",
        "host name:443",
    ],
)
async def test_connect_needs_host_and_port(target: Target, authority: object) -> None:
    with pytest.raises(InvalidArgumentError, match="authority"):
        async with target.http.connect(authority):  # type: ignore[arg-type]
            pass
    assert target.seen == []
    assert idle(target.http)


@pytest.mark.parametrize("authority", ["db.internal:5432", "10.0.0.1:1", "[::1]:65535"])
async def test_valid_connect_authorities_reach_the_proxy(authority: str) -> None:
    async def tunnel(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.switch_protocols(200)

    async with serve_memory(tunnel) as server, Pool(server.origin, connector=server.connector) as p:
        async with p.connect(authority) as up:
            assert up.status == 200
    assert [(r.method, r.target) for r in server.requests] == [("CONNECT", authority)]


# --------------------------------------------------------------------------- ConnectError


async def test_connect_error_names_refused_and_its_cause_is_the_oserror() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with Pool(f"http://127.0.0.1:{port}") as pool:
        with pytest.raises(trio_pool.ConnectError) as info:
            await pool.request("GET", "/")
    cause = info.value.__cause__
    assert type(cause) is ConnectionRefusedError  # not Trio's OSError("all attempts...")
    assert cause.errno == errno.ECONNREFUSED
    assert str(info.value) == f"cannot connect to http://127.0.0.1:{port}: Connection refused"


class _NoSuchHost(trio.abc.HostnameResolver):
    """The system resolver's answer for an unknown name, without asking any DNS server."""

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        await trio.lowlevel.checkpoint()
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def getnameinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not used")


async def test_connect_error_names_a_dns_failure() -> None:
    previous = trio.socket.set_custom_hostname_resolver(_NoSuchHost())
    try:
        async with Pool("http://no-such-host.test") as pool:
            with pytest.raises(trio_pool.ConnectError) as info:
                await pool.request("GET", "/")
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
    assert isinstance(info.value.__cause__, socket.gaierror)
    assert str(info.value).endswith(": Name or service not known")


async def test_connect_error_names_a_tls_verification_failure() -> None:
    import trustme

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)

    async def hello(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200)

    async with serve_h11(hello, ssl_context=context) as server, Pool(server.origin) as pool:
        with pytest.raises(trio_pool.ConnectError) as info:
            await pool.request("GET", "/")
    assert type(info.value.__cause__) is ssl.SSLCertVerificationError
    assert "certificate verification failed" in str(info.value)
    assert "self-signed certificate" in str(info.value) or "issuer" in str(info.value)


async def test_a_connector_receives_a_public_origin() -> None:
    received: list[object] = []

    async with serve_memory(lambda r, c: c.respond(200)) as server:

        async def connector(origin: trio_pool.Origin) -> trio.abc.Stream:
            received.append(origin)
            return await server.connector(origin)

        async with Pool("http://TestServer:80", connector=connector) as pool:
            await pool.request("GET", "/")
    (origin,) = received
    assert isinstance(origin, trio_pool.Origin)
    assert type(origin).__module__ == "trio_pool"
    assert (origin.scheme, origin.host, origin.port) == ("http", "testserver", 80)
    assert (origin.text, origin.authority) == ("http://testserver", "testserver")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        origin.port = 1  # type: ignore[misc]


async def test_a_balanced_pool_takes_an_absolute_url_of_any_upstream_and_balances_it() -> None:
    async def where(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, body=request.target.encode())

    async with (
        serve_h11(where) as one,
        serve_h11(where) as two,
        BalancedPool([one.origin, two.origin]) as pool,
    ):
        urls = []
        for _ in range(4):
            response = await pool.request("GET", f"{one.origin}/x?y=1")
            assert response.body == b"/x?y=1"
            urls.append(response.url)
        async with pool.stream("GET", f"{two.origin}/s") as streamed:
            assert await streamed.read() == b"/s"
        handler = Recorder()
        await pool.dispatch(RequestOptions("GET", f"{two.origin}/d"), handler)
        assert handler.events == ["start", "head", "data", "end"]
        # Routing picked the upstream, not the URL: both served, each URL says which.
        assert set(urls) == {f"{one.origin}/x?y=1", f"{two.origin}/x?y=1"}
        with pytest.raises(InvalidArgumentError) as info:
            await pool.request("GET", "http://other.example/x")
        assert "http://other.example" in str(info.value)
        assert one.origin in str(info.value)
        assert two.origin in str(info.value)
        with pytest.raises(InvalidArgumentError, match="path"):
            await pool.dispatch(RequestOptions("GET", None), handler)  # type: ignore[arg-type]
        assert len(one.requests) + len(two.requests) == 6


async def test_connect_error_digs_the_oserror_out_of_groups_and_wrappers() -> None:
    emfile = OSError(errno.EMFILE, "Too many open files")

    async def connector(origin: trio_pool.Origin) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        wrapper = trio.BrokenResourceError("could not open")
        wrapper.__cause__ = ExceptionGroup("attempts", [ValueError("first"), emfile])
        raise wrapper

    async with Pool("http://testserver", connector=connector) as pool:
        with pytest.raises(trio_pool.ConnectError) as info:
            await pool.request("GET", "/")
        assert info.value.__cause__ is emfile
        assert str(info.value) == "cannot connect to http://testserver: Too many open files"
        assert idle(pool)
