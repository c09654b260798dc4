"""Requests without headers, body or query are prepared once per (method, path, reset) and
copied afterwards (``_request.Prepared``): the copies must be the same requests, errors must
stay errors, and nothing of one request may leak into the next."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from trio_pool import InvalidArgumentError, Pool
from trio_pool.testing import H11Server, ServerConnection, ServerRequest, serve_memory


async def answer(request: ServerRequest, conn: ServerConnection) -> None:
    await conn.respond(200, body=f"{request.method} {request.target}".encode())


@pytest.fixture
async def pool() -> AsyncIterator[tuple[Pool, H11Server]]:
    async with serve_memory(answer) as server:
        async with Pool(server.origin, connector=server.connector, connections=1) as pool:
            yield pool, server


async def test_repeated_requests_are_identical_on_the_wire(pool: tuple[Pool, H11Server]) -> None:
    dispatcher, server = pool
    for _ in range(3):
        assert (await dispatcher.request("GET", "/a")).body == b"GET /a"
        assert (await dispatcher.request("DELETE", "/a")).body == b"DELETE /a"
    heads = {(r.method, r.target, tuple(r.headers)) for r in server.requests}
    assert len(heads) == 2
    assert len(server.requests) == 6


async def test_reset_is_part_of_the_shape(pool: tuple[Pool, H11Server]) -> None:
    dispatcher, server = pool
    await dispatcher.request("GET", "/")
    await dispatcher.request("GET", "/", reset=True)
    await dispatcher.request("GET", "/")
    closes = [r.header("connection") for r in server.requests]
    assert closes == [None, "close", None]
    assert server.connections == 2  # the reset one closed its connection


async def test_more_shapes_than_the_cache_holds(pool: tuple[Pool, H11Server]) -> None:
    dispatcher, server = pool
    paths = [f"/{i}" for i in range(150)]
    for path in paths + paths[:5]:
        assert (await dispatcher.request("GET", path)).body == f"GET {path}".encode()
    assert [r.target for r in server.requests] == paths + paths[:5]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("G T", "/"),
        ("GET", "no-slash"),
        ("GET", "/a b"),
        (b"GET", "/"),
        ("GET", b"/"),
        ("GET", None),
    ],
)
async def test_bad_arguments_fail_every_time(
    pool: tuple[Pool, H11Server], method: object, path: object
) -> None:
    dispatcher, server = pool
    for _ in range(2):  # a refusal is never remembered as a prepared request
        with pytest.raises(InvalidArgumentError):
            await dispatcher.request(method, path)  # type: ignore[arg-type]
    assert server.requests == []
