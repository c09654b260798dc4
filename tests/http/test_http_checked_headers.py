"""A dispatcher remembers the header pairs it checked (issue #15's speed): a repeated pair
skips its checks, which must never let a bad header through nor change what is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from trio_pool import InvalidArgumentError, Pool
from trio_pool.testing import H11Server, ServerConnection, ServerRequest, serve_memory


async def echo(request: ServerRequest, conn: ServerConnection) -> None:
    """Answers with the request's headers, one ``name: value`` per line."""
    await conn.respond(200, body="\n".join(f"{n}: {v}" for n, v in request.headers).encode())


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    server: H11Server
    async with serve_memory(echo) as server, Pool(server.origin, connector=server.connector) as p:
        yield p


async def _sent(pool: Pool, headers: object) -> list[str]:
    response = await pool.request("GET", "/", headers=headers)  # type: ignore[arg-type]
    return response.text().splitlines()


async def test_a_repeated_pair_is_sent_the_same(pool: Pool) -> None:
    for headers in ([("X-A", " one ")], [(b"x-a", b"one")], {"X-A": "one"}, [("x-a", "one")]):
        for _ in range(2):
            assert "x-a: one" in await _sent(pool, headers)


@pytest.mark.parametrize(
    "bad",
    [
        [("x-a", "one\r\nx-b: two")],
        [("x a", "one")],
        [("transfer-encoding", "chunked")],
        [("x-a", "\u20ac")],  # not latin-1
    ],
)
async def test_a_bad_pair_is_refused_every_time(pool: Pool, bad: list[tuple[str, str]]) -> None:
    for _ in range(3):
        with pytest.raises(InvalidArgumentError):
            await _sent(pool, bad)
    assert "x-a: one" in await _sent(pool, [("x-a", "one")])


async def test_a_pair_equal_to_a_checked_one_in_another_shape(pool: Pool) -> None:
    assert "x-a: one" in await _sent(pool, [("x-a", "one")])
    # A list pair (unhashable) and one of another value type are checked as ever.
    assert "x-a: one" in await _sent(pool, [["x-a", "one"]])
    with pytest.raises(InvalidArgumentError):
        await _sent(pool, [["x-a", "one\n"]])
    with pytest.raises(InvalidArgumentError):
        await _sent(pool, [("x-a", 1)])


async def test_credentials_are_checked_every_time(pool: Pool) -> None:
    for _ in range(2):
        assert "authorization: Bearer t" in await _sent(pool, [("Authorization", "Bearer t")])
    with pytest.raises(InvalidArgumentError):
        await _sent(pool, [("Authorization", "Bearer t\r\n")])


async def test_many_pairs_stay_bounded(pool: Pool) -> None:
    for i in range(600):  # more than a dispatcher remembers: it starts over
        assert f"x-n: {i}" in await _sent(pool, [("x-n", str(i))])
    assert len(pool._prepared.checked) <= 256
