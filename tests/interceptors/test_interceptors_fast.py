"""The request-level fast path of ``compose(...).request()`` (trio_pool/http/_chain.py) and
the dispatch chain give the same results: each scenario runs through both, the dispatch
chain forced by a user-written interceptor that does nothing, and through a spy that tells
which path a request took."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Callable

import brotli
import pytest
import trio
import trio.testing
import zstandard
from _helpers import assert_idle

import trio_pool
from trio_pool import Pool, RequestOptions, Response, TooManyRedirectsError
from trio_pool.interceptors import DispatchFunction, Handler, decompress, redirect, retry
from trio_pool.testing import H11Server, ServerConnection, ServerRequest, serve_memory

TEXT = b"the quick brown fox jumps over the lazy dog " * 50
ENCODE = {"gzip": gzip.compress, "br": brotli.compress, "zstd": zstandard.ZstdCompressor().compress}


class Script:
    """Routes: ``/r/<status>/<n>`` redirects ``n`` times with ``status`` (a body each time),
    then ``/done``; ``/busy`` answers 503 with ``Retry-After: 7`` ``busy`` times first;
    ``/cut`` closes the connection unanswered ``cuts`` times first; ``/enc/<coding>`` a
    compressed body; ``/stall`` never answers."""

    def __init__(self) -> None:
        self.busy = 0
        self.cuts = 0
        self.seen: list[str] = []

    async def __call__(self, request: ServerRequest, conn: ServerConnection) -> None:
        target = request.target
        self.seen.append(f"{request.method} {target}")
        parts = target.split("?")[0].split("/")
        if target.startswith("/r/"):
            status, left = int(parts[2]), int(parts[3])
            location = "/done" if left == 0 else f"/r/{status}/{left - 1}"
            body = b"" if request.method == "HEAD" else b"moved " * 20
            await conn.respond(status, [("location", location)], body)
        elif target == "/busy" and self.busy:
            self.busy -= 1
            await conn.respond(503, [("retry-after", "7")], b"later")
        elif target == "/cut" and self.cuts:
            self.cuts -= 1
            await conn.close()  # a SocketError (on a fresh connection: not re-sent by the pool)
        elif target.startswith("/enc/"):
            coding = parts[2]
            await conn.respond(200, [("content-encoding", coding)], ENCODE[coding](TEXT))
        elif target == "/stall":
            await trio.sleep_forever()
        else:
            body = b"" if request.method == "HEAD" else b"done " + request.body
            await conn.respond(200, [("x-method", request.method)], body)


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture(name="server")
async def server_fixture(script: Script) -> AsyncIterator[H11Server]:
    async with serve_memory(script) as server:
        yield server


@pytest.fixture(name="pool")
async def pool_fixture(server: H11Server) -> AsyncIterator[Pool]:
    async with Pool(server.origin, connector=server.connector) as pool:
        yield pool


def passing(dispatch: DispatchFunction) -> DispatchFunction:
    """A user-written interceptor that does nothing: ``request()`` takes the dispatch chain."""

    async def passed(options: RequestOptions, handler: Handler) -> None:
        await dispatch(options, handler)

    return passed


class Spy:
    """Counts the base dispatcher's ``dispatch()`` calls (the dispatch chain) and its
    ``request()`` hops (the fast path) by patching the pool instance."""

    def __init__(self, pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
        self.dispatched = 0
        self.requested = 0
        dispatch = pool.dispatch

        async def counted_dispatch(options: RequestOptions, handler: Handler) -> None:
            self.dispatched += 1
            await dispatch(options, handler)

        monkeypatch.setattr(pool, "dispatch", counted_dispatch)
        for name in ("_request_options", "_request_headed"):
            monkeypatch.setattr(pool, name, self._counted(getattr(pool, name)))

    def _counted(self, method: Callable[..., object]) -> Callable[..., object]:
        def counted(*args: object) -> object:
            self.requested += 1
            return method(*args)

        return counted


def clients(pool: Pool) -> dict[str, trio_pool.Dispatcher]:
    chain = (redirect(), retry(min_timeout=0.1), decompress())
    return {
        "fast": trio_pool.compose(pool, *chain),
        "general": trio_pool.compose(pool, passing, *chain),
    }


def summary(response: Response) -> tuple[object, ...]:
    return (
        response.status,
        response.reason,
        response.http_version,
        response.body,
        [(k, v) for k, v in response.headers if k.lower() != "date"],
        list(response.trailers),
        response.url,
        response._method,
    )


async def both(
    pool: Pool, monkeypatch: pytest.MonkeyPatch, method: str, path: str
) -> tuple[tuple[object, ...], tuple[object, ...]]:
    spy = Spy(pool, monkeypatch)
    results = {}
    for name, client in clients(pool).items():
        before = (spy.dispatched, spy.requested)
        results[name] = summary(await client.request(method, path))
        if name == "fast":
            assert spy.dispatched == before[0]
            assert spy.requested > before[1]
        else:
            assert spy.requested == before[1]
            assert spy.dispatched > before[0]
    assert_idle(pool)
    return results["fast"], results["general"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
async def test_redirects_give_the_same_response(
    pool: Pool, script: Script, monkeypatch: pytest.MonkeyPatch, status: int, method: str
) -> None:
    fast, general = await both(pool, monkeypatch, method, f"/r/{status}/2?q=1")
    assert fast == general
    assert fast[0] == 200
    assert str(fast[6]).endswith("/done")
    halves = len(script.seen) // 2
    assert script.seen[:halves] == script.seen[halves:]  # the same hops, the same methods


async def test_too_many_redirects_is_the_same_error(pool: Pool) -> None:
    for client in clients(pool).values():
        with pytest.raises(TooManyRedirectsError) as caught:
            await client.request("GET", "/r/302/9")
        assert "more than 5 redirects" in str(caught.value)
    assert_idle(pool)


async def test_retry_after_on_the_virtual_clock(
    autojump_clock: trio.testing.MockClock,
    pool: Pool,
    script: Script,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = Spy(pool, monkeypatch)
    for name, client in clients(pool).items():
        script.busy = 2
        start = trio.current_time()
        response = await client.request("GET", "/busy")
        assert (response.status, response.body) == (200, b"done "), name
        assert trio.current_time() - start == pytest.approx(14.0), name  # 2 x Retry-After 7
    assert spy.requested == 3
    assert spy.dispatched == 3
    assert_idle(pool)


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
async def test_decoded_bodies_are_the_same(
    pool: Pool, monkeypatch: pytest.MonkeyPatch, coding: str
) -> None:
    fast, general = await both(pool, monkeypatch, "GET", f"/enc/{coding}")
    assert fast == general
    assert fast[3] == TEXT


async def test_a_body_takes_the_dispatch_chain(pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(pool, monkeypatch)
    client = clients(pool)["fast"]
    response = await client.request("POST", "/r/307/0", body=b"again")
    assert (response.status, response.body) == (200, b"done again")
    assert spy.requested == 0
    assert spy.dispatched == 2
    assert_idle(pool)


async def test_cancelled_in_the_backoff_sleep(
    autojump_clock: trio.testing.MockClock,
    pool: Pool,
    script: Script,
) -> None:
    for name, client in clients(pool).items():
        script.busy = 5
        async with trio.open_nursery() as nursery:

            async def run(client: trio_pool.Dispatcher = client) -> None:
                await client.request("GET", "/busy")

            nursery.start_soon(run)
            await trio.sleep(3)  # the first 503 came back; the task sleeps until 7
            assert pool.statistics().running == 0, name
            nursery.cancel_scope.cancel()
        assert_idle(pool, what=name)
        script.busy = 0
        assert (await client.request("GET", "/busy")).status == 200


# The folded levels (trio_pool/http/_chain.py): a plain request is sent once, and the levels
# run over its answer only when it concerns one of them.


async def test_a_plain_answer_is_the_same(
    pool: Pool, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, general = await both(pool, monkeypatch, "GET", "/plain")
    assert fast == general
    assert fast[0] == 200
    assert script.seen == ["GET /plain", "GET /plain"]  # once each


async def test_a_cut_answer_is_retried_the_same(
    autojump_clock: trio.testing.MockClock,
    pool: Pool,
    script: Script,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = Spy(pool, monkeypatch)
    for name, client in clients(pool).items():
        script.cuts = 1
        response = await client.request("GET", "/cut", reset=True)  # fresh connections
        assert (response.status, response.body) == (200, b"done "), name
    assert script.seen == ["GET /cut"] * 4  # twice each: the folded send is not sent again
    assert (spy.requested, spy.dispatched) == (2, 2)
    assert_idle(pool)


async def test_an_error_not_retried_is_the_same(pool: Pool, script: Script) -> None:
    errors = []
    for client in clients(pool).values():
        with pytest.raises(trio_pool.InvalidArgumentError) as caught:
            await client.request("GET", "no-slash")
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    script.cuts = 9
    client = trio_pool.compose(pool, redirect(), retry(max_retries=0))
    with pytest.raises(trio_pool.SocketError):  # its last error (no retries left)
        await client.request("GET", "/cut", reset=True)
    assert script.seen == ["GET /cut"]
    assert_idle(pool)


async def test_cancelled_while_the_folded_request_waits(
    autojump_clock: trio.testing.MockClock, pool: Pool
) -> None:
    client = clients(pool)["fast"]
    with trio.move_on_after(5) as scope:
        await client.request("GET", "/stall")
    assert scope.cancelled_caught
    assert_idle(pool)
    assert (await client.request("GET", "/")).status == 200
    assert_idle(pool)


async def test_two_levels_that_add_headers(pool: Pool, script: Script) -> None:
    # The second decompress() sees the first one's accept-encoding: no fold, the levels.
    client = trio_pool.compose(pool, decompress(), redirect(), decompress())
    response = await client.request("GET", "/r/302/0")
    assert (response.status, response.body) == (200, b"done ")
    response = await client.request("GET", "/enc/gzip")
    assert response.body == TEXT
    assert_idle(pool)
