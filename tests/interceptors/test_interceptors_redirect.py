"""``interceptors.redirect()``: method and body per status, Location resolution, origin
changes, the limit, and no connection left holding a discarded 3xx (API.md section 6)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from _helpers import assert_idle
from _interceptor_helpers import TwoOrigins, pool_fixture, server_fixture  # noqa: F401 (fixtures)

import trio_pool
from trio_pool import InvalidArgumentError, Pool, TooManyRedirectsError
from trio_pool.interceptors import redirect
from trio_pool.testing import H11Server, Script, ServerConnection, ServerRequest, serve_memory

# Routes: /to/<status>/<location...> answers <status> with that Location (the rest of the
# path, verbatim); /rel/page a 302 to its request's x-location header; /big-to/<location> a 307
# with a 100 KB body; /loop a 302 to itself; anything else echoes.


async def script(request: ServerRequest, conn: ServerConnection) -> None:
    target = request.target
    if target.startswith("/to/"):
        _, _, status, location = target.split("/", 3)
        body = b"" if request.method == "HEAD" else b"moved"
        await conn.respond(int(status), [("location", location.replace("%3F", "?"))], body)
        return
    if target.startswith("/big-to/"):
        await conn.respond(307, [("location", target[len("/big-to") :])], b"x" * 100_000)
        return
    if target == "/rel/page":
        await conn.respond(302, [("location", request.header("x-location") or "")], b"moved")
        return
    if target.startswith("/loop"):
        await conn.respond(302, [("location", "/loop")], b"again")
        return
    echo = [
        f"{request.method} {target}",
        f"body={request.body.decode()}",
        f"type={request.header('content-type')}",
        f"auth={request.header('authorization')}",
        f"cookie={request.header('cookie')}",
    ]
    await conn.respond(200, body=b"" if request.method == "HEAD" else "\n".join(echo).encode())


@pytest.fixture(name="script")
def _script_fixture() -> Script:
    return script


def lines(response: trio_pool.Response) -> list[str]:
    return response.text().split("\n")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_get_follows_every_redirect_status(pool: Pool, status: int) -> None:
    client = trio_pool.compose(pool, redirect())
    response = await client.request("GET", f"/to/{status}//done")
    assert response.status == 200
    assert lines(response)[0] == "GET /done"
    assert_idle(pool)


@pytest.mark.parametrize(
    ("status", "method", "expected"),
    [
        (303, "POST", "GET"),
        (303, "PUT", "GET"),
        (303, "HEAD", "HEAD"),
        (301, "POST", "GET"),
        (302, "POST", "GET"),
    ],
)
async def test_becomes_get_without_a_body(
    server: H11Server, pool: Pool, status: int, method: str, expected: str
) -> None:
    client = trio_pool.compose(pool, redirect())
    headers = {"content-type": "text/plain", "authorization": "Bearer t"}
    response = await client.request(method, f"/to/{status}//done", body=b"data", headers=headers)
    assert response.status == 200
    last = server.requests[-1]
    assert (last.method, last.target, last.body) == (expected, "/done", b"")
    assert last.header("content-type") is None
    assert last.header("content-length") in (None, "0")
    assert last.header("authorization") == "Bearer t"  # same origin: kept


@pytest.mark.parametrize("status", [307, 308, 301, 302])
@pytest.mark.parametrize("body", [b"bytes", "text", [b"li", b"st"], bytearray(b"array")])
async def test_keeps_method_and_a_replayable_body(
    server: H11Server, pool: Pool, status: int, body: bytes | str | list[bytes]
) -> None:
    client = trio_pool.compose(pool, redirect())
    method = "PUT" if status in (301, 302) else "POST"  # 301/302 change only POST
    response = await client.request(
        method,
        f"/to/{status}//done",
        body=body,
        headers={"content-type": "text/plain"},
    )
    assert response.status == 200
    first, last = server.requests
    assert last.method == method
    assert last.body == first.body != b""
    assert last.header("content-type") == "text/plain"


async def test_a_seekable_file_is_rewound(server: H11Server, pool: Pool) -> None:
    client = trio_pool.compose(pool, redirect())
    file = io.BytesIO(b"skip:file-body")
    file.seek(5)
    # A binary file as a body arrives with the request conveniences; until then, a file's
    # replay is checked through the seam it uses.
    from trio_pool.interceptors._replay import replay_of

    replay = replay_of(file)
    assert replay is not None
    await replay.mark()
    file.read()
    await replay.rewind()
    assert file.read() == b"file-body"
    assert replay_of(iter([b"x"])) is None
    async_file = trio.wrap_file(io.BytesIO(b"skip:async-body"))
    await async_file.seek(5)
    replay = replay_of(async_file)
    assert replay is not None
    await replay.mark()
    await async_file.read()
    await replay.rewind()
    assert await async_file.read() == b"async-body"

    class Pipe(io.RawIOBase):
        def seekable(self) -> bool:
            return False

    assert replay_of(Pipe()) is None
    await client.request("GET", "/")


async def test_a_one_shot_body_returns_the_307(server: H11Server, pool: Pool) -> None:
    client = trio_pool.compose(pool, redirect())

    def once() -> Iterator[bytes]:
        yield b"only once"

    response = await client.request("POST", "/to/307//done", body=once())
    assert (response.status, response.headers["location"], response.body) == (
        307,
        "/done",
        b"moved",
    )
    assert len(server.requests) == 1
    # 303 needs no replay: followed.
    response = await client.request("POST", "/to/303//done", body=once())
    assert lines(response)[0] == "GET /done"
    assert_idle(pool)


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("c", "GET /rel/c"),
        ("../c", "GET /c"),
        ("sub/./d/../e", "GET /rel/sub/e"),
        ("/abs?x=1", "GET /abs?x=1"),
        ("?q=2", "GET /rel/page?q=2"),
        ("http://testserver/same#frag", "GET /same"),
        ("http://TESTSERVER:80/port", "GET /port"),
        ("//testserver/net", "GET /net"),
    ],
)
async def test_location_is_resolved_against_the_request_url(
    pool: Pool, location: str, expected: str
) -> None:
    client = trio_pool.compose(pool, redirect())
    response = await client.request("GET", "/rel/page", headers={"x-location": location})
    assert response.status == 200
    assert lines(response)[0] == expected


async def test_headers_from_a_generator_reach_every_hop(pool: Pool) -> None:
    client = trio_pool.compose(pool, redirect())
    pairs = ((name, "Bearer g") for name in ("authorization",))
    response = await client.request("GET", "/to/307//done", headers=pairs)
    assert lines(response)[3] == "auth=Bearer g"


async def test_same_origin_absolute_location_keeps_credentials(pool: Pool) -> None:
    client = trio_pool.compose(pool, redirect())
    headers = {"authorization": "Bearer t", "cookie": "c=1"}
    response = await client.request("GET", "/to/302/http://testserver/x", headers=headers)
    assert lines(response)[3:] == ["auth=Bearer t", "cookie=c=1"]


async def test_a_one_origin_dispatcher_returns_a_cross_origin_redirect(
    server: H11Server, pool: Pool
) -> None:
    client = trio_pool.compose(pool, redirect())
    response = await client.request("GET", "/to/302/http://other.test/x")
    assert (response.status, response.body) == (302, b"moved")
    assert response.headers["location"] == "http://other.test/x"
    assert len(server.requests) == 1
    assert_idle(pool)
    async with client.stream("GET", "/to/301/https://other.test/y") as streamed:
        assert streamed.status == 301
        assert await streamed.read() == b"moved"
    assert_idle(pool)


async def test_a_dispatcher_of_many_origins_follows_and_drops_credentials() -> None:
    async with (
        serve_memory(script) as first,
        serve_memory(script) as second,
        Pool("http://one.test", connector=first.connector) as one,
        Pool("http://two.test", connector=second.connector) as two,
    ):
        agent = TwoOrigins({"http://one.test": one, "http://two.test": two})
        client = trio_pool.compose(agent, redirect())
        headers = {
            "authorization": "Bearer t",
            "cookie": "c=1",
            "proxy-authorization": "p",
            "x-keep": "k",
        }
        response = await client.request(
            "POST", "http://one.test/to/307/http://two.test/there", body=b"b", headers=headers
        )
        assert response.status == 200
        assert lines(response)[:2] == ["POST /there", "body=b"]
        assert lines(response)[3:] == ["auth=None", "cookie=None"]
        arrived = second.requests[0]
        assert arrived.header("proxy-authorization") is None
        assert arrived.header("x-keep") == "k"
        assert arrived.header("host") == "two.test"
        assert_idle(agent)


async def test_too_many_redirects(server: H11Server, pool: Pool) -> None:
    client = trio_pool.compose(pool, redirect(max_redirections=2))
    with pytest.raises(TooManyRedirectsError, match="more than 2 redirects"):
        await client.request("GET", "/loop")
    assert len(server.requests) == 3
    assert_idle(pool)
    # The discarded 3xx bodies were read to their end: one connection served everything.
    assert (await client.request("GET", "/")).status == 200
    assert server.connections == 1
    with pytest.raises(TooManyRedirectsError):
        async with client.stream("GET", "/loop"):
            pass  # pragma: no cover
    assert_idle(pool)


async def test_zero_redirections_returns_every_3xx(pool: Pool) -> None:
    client = trio_pool.compose(pool, redirect(max_redirections=0))
    assert (await client.request("GET", "/to/302//done")).status == 302


async def test_a_long_3xx_body_is_returned_whole_rather_than_held(
    server: H11Server, pool: Pool
) -> None:
    client = trio_pool.compose(pool, redirect())
    response = await client.request("GET", "/big-to/done")
    assert (response.status, len(response.body)) == (307, 100_000)
    assert len(server.requests) == 1
    assert_idle(pool)


async def test_no_location_or_another_scheme_is_not_followed(pool: Pool) -> None:
    client = trio_pool.compose(pool, redirect())
    response = await client.request("GET", "/to/302/ftp://files.test/x")
    assert response.status == 302
    response = await client.request("GET", "/to/300/x")  # not a redirect to follow
    assert response.status == 300


async def test_stream_follows_and_reports_the_last_response(pool: Pool) -> None:
    client = trio_pool.compose(pool, redirect())
    async with client.stream("GET", "/to/302//done") as response:
        assert response.status == 200
        assert (await response.read()).startswith(b"GET /done")
    assert_idle(pool)


def test_invalid_max_redirections() -> None:
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(InvalidArgumentError, match="max_redirections"):
            redirect(max_redirections=bad)  # type: ignore[arg-type]


async def test_cancelled_during_a_hop(autojump_clock: trio.testing.MockClock) -> None:
    async def stalling(request: ServerRequest, conn: ServerConnection) -> None:
        if request.target == "/never":
            await trio.sleep_forever()
        await script(request, conn)

    async with (
        serve_memory(stalling) as server,
        Pool(server.origin, connector=server.connector) as pool,
    ):
        client = trio_pool.compose(pool, redirect())
        with trio.move_on_after(5) as scope:
            await client.request("GET", "/to/302//never")
        assert scope.cancelled_caught
        assert_idle(pool)
        with trio.move_on_after(5):
            async with client.stream("GET", "/to/302//never"):
                pass  # pragma: no cover
        assert_idle(pool)
        assert (await client.request("GET", "/to/302//done")).status == 200


async def test_response_url_is_the_last_url(pool: Pool) -> None:
    client = trio_pool.compose(pool, redirect())
    response = await client.request("GET", "/to/301//done?x=1")
    assert response.url == "http://testserver/done?x=1"
    response = await client.request("GET", "/plain", query={"a": "b"})
    assert response.url == "http://testserver/plain?a=b"
    async with client.stream("GET", "/to/302//there") as streamed:
        assert streamed.url == "http://testserver/there"


async def test_an_agent_follows_a_redirect_to_another_origin() -> None:
    """The real ``Agent`` (any origin): a cross-origin 307 is followed, credentials dropped,
    and ``Response.url`` is the other origin's."""
    async with serve_memory(script) as first, serve_memory(script) as second:

        async def connector(origin: trio_pool.Origin) -> trio.abc.Stream:
            return await (first if origin.host == "one.test" else second).connector(origin)

        async with trio_pool.Agent(connector=connector) as agent:
            client = agent.compose(redirect())
            response = await client.request(
                "PUT",
                "http://one.test/to/307/http://two.test/there",
                body=b"b",
                headers={"authorization": "Bearer t", "x-keep": "k"},
            )
            assert lines(response)[:2] == ["PUT /there", "body=b"]
            assert lines(response)[3] == "auth=None"
            assert response.url == "http://two.test/there"
            assert second.requests[0].header("x-keep") == "k"
            assert_idle(agent)
