"""``interceptors.retry()``: backoff with full jitter, Retry-After, the filters, body replay,
and the deadline rule — on autojump with in-memory streams, so server hits and elapsed
virtual time prove each wait (API.md section 6)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import trio
import trio.testing
from _helpers import assert_idle
from _interceptor_helpers import pool_fixture, server_fixture  # noqa: F401 (fixtures)

import trio_pool
from trio_pool import ConnectError, InvalidArgumentError, Pool, SocketError
from trio_pool.interceptors import Controller, DispatchFunction, retry
from trio_pool.interceptors._retry import retry_after_seconds
from trio_pool.testing import H11Server, ServerConnection, ServerRequest


class Script:
    """Answers ``statuses`` in turn (then 200), each with ``headers``; counts hits."""

    def __init__(self, *statuses: int, headers: list[tuple[str, str]] | None = None) -> None:
        self.statuses = list(statuses)
        self.headers = headers or []
        self.hits: list[ServerRequest] = []

    async def __call__(self, request: ServerRequest, conn: ServerConnection) -> None:
        self.hits.append(request)
        if request.target == "/stall":
            await trio.sleep_forever()
        if request.target == "/big" and self.statuses:
            self.statuses.pop(0)
            await conn.respond(503, body=b"x" * 100_000)
            return
        if self.statuses:
            status = self.statuses.pop(0)
            if status == 0:  # hang up without an answer
                await conn.close()
                return
            await conn.respond(status, self.headers, b"failed %d" % status)
            return
        await conn.respond(200, body=b"ok " + request.body)


def notes(error: BaseException) -> list[str]:
    return list(getattr(error, "__notes__", []))


@pytest.fixture
def script() -> Script:
    return Script()


async def test_retries_a_status_with_jittered_backoff(
    autojump_clock: trio.testing.MockClock, script: Script, pool: Pool
) -> None:
    script.statuses = [503, 500, 502]
    client = trio_pool.compose(pool, retry(min_timeout=1.0, timeout_factor=2.0))
    start = trio.current_time()
    response = await client.request("GET", "/")
    elapsed = trio.current_time() - start
    assert (response.status, response.body) == (200, b"ok ")
    assert len(script.hits) == 4
    assert 0 <= elapsed <= 1.0 + 2.0 + 4.0  # full jitter: each wait in [0, cap]
    assert_idle(pool)


async def test_full_jitter_is_capped_at_max_timeout(
    autojump_clock: trio.testing.MockClock, script: Script, pool: Pool
) -> None:
    script.statuses = [503] * 8
    client = trio_pool.compose(
        pool, retry(max_retries=8, min_timeout=1.0, max_timeout=2.0, timeout_factor=10.0)
    )
    start = trio.current_time()
    assert (await client.request("GET", "/")).status == 200
    elapsed = trio.current_time() - start
    assert len(script.hits) == 9
    assert 0 < elapsed <= 1.0 + 7 * 2.0
    assert elapsed < 0.95 * (1.0 + 7 * 2.0)  # jittered, not the cap every time


async def test_retry_after_in_seconds(
    autojump_clock: trio.testing.MockClock, script: Script, pool: Pool
) -> None:
    script.statuses = [429]
    script.headers = [("retry-after", "7")]
    client = trio_pool.compose(pool, retry())
    start = trio.current_time()
    assert (await client.request("GET", "/")).status == 200
    assert trio.current_time() - start == pytest.approx(7.0)
    assert len(script.hits) == 2


async def test_retry_after_as_an_http_date_is_capped(
    autojump_clock: trio.testing.MockClock, script: Script, pool: Pool
) -> None:
    script.statuses = [503, 503]
    later = email.utils.formatdate(time.time() + 20, usegmt=True)
    script.headers = [("retry-after", later)]
    client = trio_pool.compose(pool, retry(max_timeout=30.0))
    start = trio.current_time()
    assert (await client.request("GET", "/")).status == 200
    assert 2 * 18 <= trio.current_time() - start <= 2 * 20
    # Capped at max_timeout; ignored when retry_after=False.
    script.statuses = [503]
    client = trio_pool.compose(pool, retry(max_timeout=5.0))
    start = trio.current_time()
    assert (await client.request("GET", "/")).status == 200
    assert trio.current_time() - start == pytest.approx(5.0)
    script.statuses = [503]
    client = trio_pool.compose(pool, retry(retry_after=False, min_timeout=0.5))
    start = trio.current_time()
    await client.request("GET", "/")
    assert trio.current_time() - start <= 0.5


def test_retry_after_values() -> None:
    assert retry_after_seconds(" 12 ") == 12.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("-3") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert (retry_after_seconds(email.utils.formatdate(time.time() + 100, usegmt=True)) or 0) > 98


async def test_gives_up_after_max_retries_with_the_last_response(
    autojump_clock: trio.testing.MockClock, script: Script, pool: Pool
) -> None:
    script.statuses = [503] * 10
    client = trio_pool.compose(pool, retry(max_retries=2))
    response = await client.request("GET", "/")
    assert (response.status, response.body) == (503, b"failed 503")
    assert len(script.hits) == 3
    assert_idle(pool)
    assert server_connections_reused(script)


def _passing(dispatch: DispatchFunction) -> DispatchFunction:
    """A user-written interceptor doing nothing: it keeps request() on the dispatch chain."""
    return dispatch


@pytest.mark.parametrize("general", [True, False], ids=["dispatch-chain", "request-level"])
async def test_a_long_discarded_body_closes_its_connection(
    autojump_clock: trio.testing.MockClock, script: Script, pool: Pool, general: bool
) -> None:
    script.statuses = [503]
    extra = (_passing,) if general else ()
    client = trio_pool.compose(pool, *extra, retry(min_timeout=0.1))
    response = await client.request("GET", "/big")
    assert (response.status, response.body) == (200, b"ok ")
    # A handler stops reading the long 503 (its connection is closed); the request-level
    # fast path has read it whole (the dispatcher's max_response_size bounds it), so its
    # connection is reused: the one difference trio_pool/http/_chain.py documents.
    expected = [0, 1] if general else [0, 0]
    assert [hit.connection for hit in script.hits] == expected
    assert_idle(pool)


async def test_headers_from_a_generator_are_sent_on_every_attempt(
    autojump_clock: trio.testing.MockClock, script: Script, pool: Pool
) -> None:
    script.statuses = [503]
    client = trio_pool.compose(pool, retry(min_timeout=0.1))
    pairs = ((name, "v") for name in ("x-a", "x-b"))
    assert (await client.request("GET", "/", headers=pairs)).status == 200
    assert [hit.header("x-b") for hit in script.hits] == ["v", "v"]


def server_connections_reused(script: Script) -> bool:
    """The discarded short bodies were read: every attempt went over one connection."""
    return {hit.connection for hit in script.hits} == {0}


async def test_methods_and_idempotent(
    autojump_clock: trio.testing.MockClock, script: Script, pool: Pool
) -> None:
    client = trio_pool.compose(pool, retry())
    script.statuses = [503]
    assert (await client.request("POST", "/", body=b"x")).status == 503
    assert len(script.hits) == 1
    script.statuses = [503]
    response = await client.request("POST", "/", body=b"x", idempotent=True)
    assert (response.status, response.body) == (200, b"ok x")
    assert [hit.body for hit in script.hits[1:]] == [b"x", b"x"]
    script.statuses = [503]
    assert (await client.request("GET", "/", idempotent=False)).status == 503
    client = trio_pool.compose(pool, retry(methods=["PATCH"], status_codes=[418]))
    script.statuses = [418]
    assert (await client.request("PATCH", "/")).status == 200
    script.statuses = [503]
    assert (await client.request("PATCH", "/")).status == 503


async def test_one_shot_body_is_not_sent_twice(
    autojump_clock: trio.testing.MockClock, script: Script, server: H11Server, pool: Pool
) -> None:
    client = trio_pool.compose(pool, retry())

    def once() -> Iterator[bytes]:
        yield b"stream"

    script.statuses = [503]
    assert (await client.request("PUT", "/", body=once())).status == 503
    assert len(script.hits) == 1
    # A connect error: nothing was sent, so even a one-shot body is retried.
    server.refuse = True

    async def heal() -> None:
        await trio.sleep(0.1)
        server.refuse = False

    async with trio.open_nursery() as nursery:
        nursery.start_soon(heal)
        client = trio_pool.compose(pool, retry(min_timeout=1.0))
        response = await client.request("PUT", "/", body=once())
    assert (response.status, response.body) == (200, b"ok stream")
    assert_idle(pool)


async def test_error_retries_and_the_attempts_note(
    autojump_clock: trio.testing.MockClock, server: H11Server, pool: Pool
) -> None:
    server.refuse = True
    client = trio_pool.compose(pool, retry(max_retries=3, min_timeout=0.1))
    with pytest.raises(ConnectError) as caught:
        await client.request("GET", "/")
    assert server.connections == 0
    assert any("gave up after 4 attempts: no retries left" in n for n in notes(caught.value))
    assert_idle(pool)


async def test_socket_error_retried_only_with_a_replayable_body(
    autojump_clock: trio.testing.MockClock, script: Script, server: H11Server, pool: Pool
) -> None:
    client = trio_pool.compose(pool, retry(min_timeout=0.1))
    script.statuses = [0]  # the server hangs up
    assert (await client.request("POST", "/", body=b"b", idempotent=True)).body == b"ok b"
    assert len(script.hits) == 2

    async def gen() -> AsyncIterator[bytes]:
        yield b"g"

    # (Without the Pool's own one re-send of API.md 1.6, which would hide this one.)
    async with Pool(server.origin, connector=server.connector, retry_idempotent=False) as own:
        client = trio_pool.compose(own, retry(min_timeout=0.1))
        await client.request("GET", "/")  # a kept-alive connection for the next request
        script.statuses = [0]
        with pytest.raises(SocketError) as caught:
            await client.request("POST", "/", body=gen(), idempotent=True)
        assert any("its body cannot be sent again" in n for n in notes(caught.value))
        assert_idle(own)


async def test_errors_filter(
    autojump_clock: trio.testing.MockClock, server: H11Server, pool: Pool
) -> None:
    server.refuse = True
    client = trio_pool.compose(pool, retry(errors=[SocketError]))
    start = trio.current_time()
    with pytest.raises(ConnectError) as caught:
        await client.request("GET", "/")
    assert trio.current_time() == start
    assert not getattr(caught.value, "__notes__", [])


async def test_no_retry_whose_wait_ends_after_the_deadline_status(
    autojump_clock: trio.testing.MockClock, script: Script, pool: Pool
) -> None:
    """A Retry-After of 10 s under a 3 s deadline: the 503 is the answer, at once."""
    script.statuses = [503, 503, 503]
    script.headers = [("retry-after", "10")]
    client = trio_pool.compose(pool, retry())
    start = trio.current_time()
    with trio.fail_after(3):
        response = await client.request("GET", "/")
    assert response.status == 503
    assert len(script.hits) == 1
    assert trio.current_time() == start
    # With room for one wait but not two: two hits, 10 s spent, then the 503.
    with trio.fail_after(15):
        response = await client.request("GET", "/")
    assert (response.status, len(script.hits)) == (503, 3)
    assert trio.current_time() - start == pytest.approx(10.0)
    assert_idle(pool)


async def test_no_retry_whose_wait_ends_after_the_deadline_error(
    autojump_clock: trio.testing.MockClock, server: H11Server, pool: Pool
) -> None:
    """Backoff caps 1, 2, 4, 8 s under a 2.5 s deadline: the error comes before it, with
    the attempts counted; no attempt starts that the deadline would cut."""
    server.refuse = True
    attempts: list[float] = []
    server_connector = server.connector

    async def counting(origin: object) -> trio.abc.Stream:
        attempts.append(trio.current_time())
        return await server_connector(origin)

    async with Pool(server.origin, connector=counting) as pool2:
        client = trio_pool.compose(pool2, retry(max_retries=10, min_timeout=1.0, max_timeout=1.0))
        start = trio.current_time()
        with trio.fail_after(2.5):
            with pytest.raises(ConnectError) as caught:
                await client.request("GET", "/")
        elapsed = trio.current_time() - start
    assert elapsed < 2.5
    said = notes(caught.value)
    assert any(f"gave up after {len(attempts)} attempt" in n for n in said), said
    assert any("would end after the deadline" in n for n in said), said
    assert 1 <= len(attempts) <= 10
    assert all(t - start < 2.5 for t in attempts)


def test_invalid_arguments() -> None:
    bad: list[dict[str, object]] = [
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"min_timeout": -1},
        {"min_timeout": float("nan")},
        {"max_timeout": 0.1},  # below min_timeout
        {"timeout_factor": 0.5},
        {"retry_after": "yes"},
        {"methods": "GET"},
        {"methods": [1]},
        {"status_codes": [99]},
        {"status_codes": ["503"]},
        {"errors": ConnectError},
        {"errors": [int]},
    ]
    for kwargs in bad:
        name = next(iter(kwargs))
        with pytest.raises(InvalidArgumentError, match=name):
            retry(**kwargs)  # type: ignore[arg-type]


async def test_cancelled_during_the_backoff_sleep(
    autojump_clock: trio.testing.MockClock, script: Script, pool: Pool
) -> None:
    """Cancelled from outside (no deadline: one would have stopped the retry from starting)
    while it sleeps between attempts."""
    script.statuses = [503, 503]
    script.headers = [("retry-after", "30")]
    client = trio_pool.compose(pool, retry())

    async def cancel_later(scope: trio.CancelScope) -> None:
        await trio.sleep(5)
        scope.cancel()

    for use_stream in (False, True):
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()
            nursery.start_soon(cancel_later, scope)
            with scope:
                if use_stream:
                    async with client.stream("GET", "/"):
                        pass  # pragma: no cover
                else:
                    await client.request("GET", "/")
        assert scope.cancelled_caught
        assert_idle(pool)
    assert len(script.hits) == 2
    assert (await client.request("GET", "/")).status == 200


async def test_dispatch_handler_hears_one_start_and_one_end(
    autojump_clock: trio.testing.MockClock, script: Script, pool: Pool
) -> None:
    script.statuses = [503, 503]
    client = trio_pool.compose(pool, retry(min_timeout=0.1))
    events: list[object] = []

    class Handler:
        def on_request_start(self, controller: object) -> None:
            events.append("start")

        def on_response_start(self, controller: object, status: int, *rest: object) -> None:
            events.append(status)

        def on_response_data(self, controller: object, chunk: bytes) -> None:
            events.append(chunk)

        def on_response_end(self, controller: object, trailers: object) -> None:
            events.append("end")

        def on_response_error(self, controller: object, error: BaseException) -> None:
            events.append(error)  # pragma: no cover

    await client.dispatch(trio_pool.RequestOptions("GET", "/"), Handler())
    assert events == ["start", 200, b"ok ", "end"]


async def test_a_handler_aborting_through_the_interceptors(
    autojump_clock: trio.testing.MockClock, script: Script, pool: Pool
) -> None:
    """``controller.abort()`` from the outer handler reaches the request below retry() and
    redirect(), and stops retrying."""
    from trio_pool.interceptors import redirect

    script.statuses = [200]  # (the scripted 200 has a body: "failed 200")
    client = trio_pool.compose(pool, retry(), redirect())
    events: list[object] = []

    class Aborting:
        def on_request_start(self, controller: Controller) -> None:
            assert not controller.aborted

        def on_response_start(self, controller: Controller, *head: object) -> None:
            controller.abort("enough")
            events.append(controller.aborted)

        def on_response_data(self, controller: Controller, chunk: bytes) -> None:
            events.append(chunk)  # pragma: no cover

        def on_response_end(self, controller: Controller, trailers: object) -> None:
            events.append("end")  # pragma: no cover

        def on_response_error(self, controller: Controller, error: BaseException) -> None:
            events.append(type(error))

    await client.dispatch(trio_pool.RequestOptions("GET", "/"), Aborting())
    assert events == [True, trio_pool.RequestAbortedError]
    assert len(script.hits) == 1
    assert_idle(pool)
    assert (await client.request("GET", "/")).status == 200
