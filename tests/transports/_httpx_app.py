"""The ASGI app the httpx transport tests talk to, served by hypercorn's trio worker.

Routes (everything else is 404):

* ``/inspect``: JSON of the request as received (method, path, query, headers, body size).
* ``/upload``: reads the body piece by piece (never whole) and answers its size and sha256.
* ``/download?size=N``: N pattern bytes in 64 KiB pieces (never built whole).
* ``/redirect?to=PATH``: 302 to PATH. ``/status/N``: status N.
* ``/cookies/set?name=value``, ``/cookies``: sets a cookie; echoes the ``cookie`` header.
* ``/basic``: 401 unless ``authorization: Basic dXNlcjpwYXNz`` (user:pass).
* ``/gzip``: a gzip-encoded JSON body (``content-encoding: gzip``).
* ``/stall...``: sets ``STALLED`` (the test's event), then never answers.
* a websocket at any path: echoes each text message reversed.
* ``/v1/models``, ``/v1/chat/completions``: the few endpoints of the OpenAI API the SDK test
  calls (JSON, or server-sent events with ``"stream": true``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import trio
from _helpers import asgi_lifespan
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Scope,
)

PIECE = 65536
_BLOCK = bytes(range(256)) * (PIECE // 256)


class Stalls:
    """Events the ``/stall`` route sets when a request reaches it (one per request)."""

    def __init__(self) -> None:
        self.arrived = trio.Event()

    def reset(self) -> None:
        self.arrived = trio.Event()


STALLS = Stalls()


def pattern(size: int) -> bytes:
    """The first ``size`` bytes ``/download`` sends."""
    return (_BLOCK * (size // PIECE + 1))[:size]


def _start(status: int, headers: list[tuple[bytes, bytes]]) -> HTTPResponseStartEvent:
    return HTTPResponseStartEvent(
        type="http.response.start", status=status, headers=headers, trailers=False
    )


def _piece(body: bytes, *, more: bool) -> HTTPResponseBodyEvent:
    return HTTPResponseBodyEvent(type="http.response.body", body=body, more_body=more)


async def _read_body(receive: ASGIReceiveCallable, sink: Callable[[bytes], None]) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        sink(message["body"])
        if not message["more_body"]:
            return


async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    if scope["type"] == "lifespan":
        await asgi_lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        await _websocket(receive, send)
        return
    assert scope["type"] == "http"
    path: str = scope["path"]
    query = dict(parse_qsl(scope["query_string"].decode(), keep_blank_values=True))
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}

    async def respond(
        status: int, body: bytes = b"", extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        head = [(b"content-length", str(len(body)).encode()), *(extra or [])]
        await send(_start(status, head))
        await send(_piece(body, more=False))

    async def respond_json(value: Any, status: int = 200) -> None:
        await respond(status, json.dumps(value).encode(), [(b"content-type", b"application/json")])

    if path == "/upload":
        digest = hashlib.sha256()
        size = 0

        def count(piece: bytes) -> None:
            nonlocal size
            size += len(piece)
            digest.update(piece)

        await _read_body(receive, count)
        await respond_json({"size": size, "sha256": digest.hexdigest()})
        return
    body = bytearray()
    await _read_body(receive, body.extend)
    if path == "/inspect":
        await respond_json(
            {
                "method": scope["method"],
                "path": path,
                "query": scope["query_string"].decode(),
                "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
                "size": len(body),
                "body": body.decode("latin-1"),
            }
        )
    elif path == "/download":
        size = int(query["size"])
        await send(_start(200, [(b"content-length", str(size).encode())]))
        sent = 0
        while sent < size:
            piece = _BLOCK[: min(PIECE, size - sent)]
            sent += len(piece)
            await send(_piece(piece, more=sent < size))
    elif path == "/redirect":
        await respond(302, b"", [(b"location", query["to"].encode())])
    elif path.startswith("/status/"):
        await respond(int(path.rsplit("/", 1)[1]), b"status")
    elif path == "/cookies/set":
        cookies = [(b"set-cookie", f"{k}={v}; Path=/".encode()) for k, v in query.items()]
        await respond(200, b"set", cookies)
    elif path == "/cookies":
        await respond_json({"cookie": headers.get("cookie")})
    elif path == "/basic":
        if headers.get("authorization") == "Basic dXNlcjpwYXNz":
            await respond(200, b"welcome")
        else:
            await respond(401, b"who?", [(b"www-authenticate", b'Basic realm="test"')])
    elif path == "/gzip":
        packed = gzip.compress(json.dumps({"packed": True}).encode())
        await respond(200, packed, [(b"content-encoding", b"gzip")])
    elif path.startswith("/stall"):
        STALLS.arrived.set()
        await trio.sleep_forever()
    elif path == "/v1/models":
        await respond_json(
            {
                "object": "list",
                "data": [{"id": "m-1", "object": "model", "created": 0, "owned_by": "test"}],
            }
        )
    elif path == "/v1/chat/completions":
        await _chat(json.loads(body), send, respond_json)
    else:
        await respond(404, b"not found")


async def _websocket(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Accept, then answer every text message with it reversed, until the client leaves."""
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
        elif message["type"] == "websocket.receive":
            text = message.get("text") or ""
            await send({"type": "websocket.send", "text": text[::-1], "bytes": None})
        else:
            return


async def _chat(
    request: dict[str, Any],
    send: ASGISendCallable,
    respond_json: Callable[[Any], Any],
) -> None:
    """A fixed completion: the last user message, reversed."""
    text = request["messages"][-1]["content"][::-1]
    base = {"id": "c-1", "created": 0, "model": request["model"]}
    if not request.get("stream"):
        await respond_json(
            {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                ],
            }
        )
        return
    await send(_start(200, [(b"content-type", b"text/event-stream")]))
    for i, char in enumerate(text):
        delta = {"role": "assistant", "content": char} if i == 0 else {"content": char}
        event = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        data = f"data: {json.dumps(event)}\n\n".encode()
        await send(_piece(data, more=True))
    await send(_piece(b"data: [DONE]\n\n", more=False))


@asynccontextmanager
async def served() -> AsyncIterator[str]:
    """Serve :func:`app` on 127.0.0.1, port 0, for the block; yields the origin."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 5.0
    config.loglevel = "WARNING"
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(serve, app, config, shutdown_trigger=stop.wait)
        )
        try:
            yield binds[0]
        finally:
            stop.set()
