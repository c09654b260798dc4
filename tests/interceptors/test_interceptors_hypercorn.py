"""The three interceptors against a server nobody here wrote: hypercorn's trio worker on
127.0.0.1 (redirects, a 503 with Retry-After, a gzip body)."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from functools import partial

import pytest
import trio
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
from trio_pool.interceptors import decompress, redirect, retry

BODY = b"hello from hypercorn\n" * 1000


class App:
    """``/start`` → 302 ``/flaky`` → 503 once (Retry-After: 0) → 307 ``/data`` → gzip."""

    def __init__(self) -> None:
        self.flaky_hits = 0
        self.paths: list[str] = []

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await asgi_lifespan(receive, send)
            return
        assert scope["type"] == "http"
        while (await receive()).get("more_body"):
            pass
        path = scope["path"]
        self.paths.append(path)
        headers: list[tuple[bytes, bytes]] = []
        body = b""
        if path == "/start":
            status, headers = 302, [(b"location", b"/flaky")]
        elif path == "/flaky":
            self.flaky_hits += 1
            if self.flaky_hits == 1:
                status, headers = 503, [(b"retry-after", b"0")]
            else:
                status, headers = 307, [(b"location", b"/data")]
        else:
            accepted = dict(scope["headers"]).get(b"accept-encoding", b"")
            assert b"gzip" in accepted
            status, body = 200, gzip.compress(BODY)
            headers = [(b"content-encoding", b"gzip")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send(
            HTTPResponseStartEvent(
                type="http.response.start", status=status, headers=headers, trailers=False
            )
        )
        await send(HTTPResponseBodyEvent(type="http.response.body", body=body, more_body=False))


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, App]]:
    app = App()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 1.0
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(serve, app, config, shutdown_trigger=stop.wait)
        )
        yield binds[0], app
        stop.set()


async def test_redirect_retry_and_decompress_with_hypercorn(served: tuple[str, App]) -> None:
    origin, app = served
    async with trio_pool.Pool(origin, connections=2) as pool:
        client = trio_pool.compose(pool, redirect(), retry(min_timeout=0.01), decompress())
        response = await client.request("POST", "/start", body=b"form")
        assert response.status == 200
        assert response.body == BODY
        assert "content-encoding" not in response.headers
        assert app.paths == ["/start", "/flaky", "/flaky", "/data"]
        async with client.stream("GET", "/data") as streamed:
            assert await streamed.read() == BODY
        assert_idle(pool)
