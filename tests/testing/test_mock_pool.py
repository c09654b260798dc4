"""``trio_pool.testing.MockPool``: routes, matchers, replies, records, lifetimes, typing."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from _helpers import assert_idle, memory_pool

import trio_pool
from trio_pool import (
    ClientClosedError,
    ClientDestroyedError,
    Headers,
    InvalidArgumentError,
    RequestAbortedError,
    RequestOptions,
    SocketError,
)
from trio_pool.testing import (
    MockCall,
    MockNotMatchedError,
    MockPool,
    MockReply,
    ServerConnection,
    ServerRequest,
    serve_memory,
)

ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def mock_with(route: str = "/", status: int = 200) -> AsyncIterator[MockPool]:
    """A MockPool in its block with one persistent ``GET route`` route."""
    async with MockPool() as mock:
        mock.intercept("GET", route).reply(status, b"ok").persist()
        yield mock


# ---------------------------------------------------------------------------------- replies


async def test_a_static_reply_is_a_real_response() -> None:
    async with MockPool() as mock:
        mock.intercept("GET", "/users").reply(
            201, b'{"id": 7}', headers=[(b"Content-Type", b"application/json")], trailers={"x": "1"}
        )
        response = await mock.request("GET", "/users")
    assert isinstance(response, trio_pool.Response)
    assert (response.status, response.reason, response.http_version) == (201, "Created", "1.1")
    assert response.headers["content-type"] == "application/json"
    # As declared, plus the framing the server adds (chunked: the reply has trailers).
    assert list(response.headers) == [
        ("content-type", "application/json"),
        ("transfer-encoding", "chunked"),
    ]
    assert response.trailers.get("X") == "1"
    assert response.json() == {"id": 7}


async def test_reason_is_given_or_standard_or_empty() -> None:
    async with MockPool() as mock:
        mock.intercept("GET", "/a").reply(404)
        mock.intercept("GET", "/b").reply(599)
        mock.intercept("GET", "/c").reply(200, reason="Fine")
        reasons = [(await mock.request("GET", p)).reason for p in ("/a", "/b", "/c")]
    assert reasons == ["Not Found", "", "Fine"]


async def test_a_dynamic_reply_sees_the_call_and_may_be_async() -> None:
    def echo(call: MockCall) -> MockReply:
        return MockReply(200, call.body.upper(), headers={"x-path": call.path})

    async def slow(call: MockCall) -> MockReply:
        await trio.lowlevel.checkpoint()
        return MockReply(202, "é")

    async with MockPool() as mock:
        mock.intercept("POST", "/echo").reply(echo)
        mock.intercept("GET", "/slow").reply(slow)
        echoed = await mock.request("POST", "/echo", body="hi")
        slowed = await mock.request("GET", "/slow")
    assert (echoed.body, echoed.headers["x-path"]) == (b"HI", "/echo")
    assert (slowed.status, slowed.text()) == (202, "é")


async def test_a_dynamic_reply_that_returns_something_else_fails_the_request() -> None:
    async with MockPool() as mock:
        mock.intercept("GET", "/").reply(lambda call: 200)  # type: ignore[arg-type,return-value]
        with pytest.raises(InvalidArgumentError, match="must return a MockReply"):
            await mock.request("GET", "/")
        assert_idle(mock)


async def test_reply_with_error_raises_that_error_each_time() -> None:
    error = SocketError("connection reset (scripted)")
    async with MockPool() as mock:
        mock.intercept("GET", "/").reply_with_error(error).times(2)
        for _ in range(2):
            with pytest.raises(SocketError) as info:
                await mock.request("GET", "/")
            assert info.value is error
        assert_idle(mock)


@pytest.mark.parametrize(
    ("declare", "message", "registered"),
    [
        (lambda m: m.intercept("GET", "users"), "invalid path", 0),
        (lambda m: m.intercept("GET", "/users?page=1"), "query=", 0),
        (lambda m: m.intercept(1, "/"), "invalid method", 0),
        (lambda m: m.intercept("GET", "/", headers="x"), "invalid headers", 0),
        (lambda m: m.intercept("GET", "/", headers={"x": 1}), "matcher of header", 0),
        (lambda m: m.intercept("GET", "/", query=["a"]), "invalid query", 0),
        (lambda m: m.intercept("GET", "/", body=1), "invalid body", 0),
        (lambda m: m.intercept("GET", "/").reply(99), "invalid status", 0),
        (lambda m: m.intercept("GET", "/").reply(True), "invalid status", 0),
        (lambda m: m.intercept("GET", "/").reply(200, 5), "invalid body", 0),
        (lambda m: m.intercept("GET", "/").reply(200, headers="x"), "invalid headers", 0),
        (lambda m: m.intercept("GET", "/").reply(200, headers=["x"]), "is not a pair", 0),
        (lambda m: m.intercept("GET", "/").reply(200, trailers=[("x", 1)]), "invalid trailers", 0),
        (lambda m: m.intercept("GET", "/").reply(200, reason=b"OK"), "invalid reason", 0),
        (lambda m: m.intercept("GET", "/").reply(lambda c: c, b"x"), "either a callable", 0),
        (lambda m: m.intercept("GET", "/").reply_with_error(ValueError), "exception instance", 0),
        (lambda m: m.intercept("GET", "/").reply(200).delay(-1), "invalid delay", 1),
        (lambda m: m.intercept("GET", "/").reply(200).delay(math.nan), "invalid delay", 1),
        (lambda m: m.intercept("GET", "/").reply(200).times(0), "invalid times", 1),
    ],
)
def test_bad_declarations_raise_at_once(
    declare: Callable[[MockPool], object], message: str, registered: int
) -> None:
    mock = MockPool()
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        declare(mock)
    # A bad reply registers nothing; a bad setter leaves its route as it was.
    assert len(mock.pending_interceptors()) == registered


def test_bad_options_raise_like_a_pool() -> None:
    with pytest.raises(InvalidArgumentError, match="invalid origin"):
        MockPool("http://mock.test/path")
    with pytest.raises(InvalidArgumentError, match="invalid option 'conections'"):
        MockPool(conections=2)


# ---------------------------------------------------------------------------------- matching


async def test_matchers_str_pattern_and_callable() -> None:
    async with MockPool() as mock:
        mock.intercept(lambda m: m in ("PUT", "PATCH"), re.compile(r"/users/\d+")).reply(204)
        mock.intercept("GET", re.compile(r"/users/\d+")).reply(200, b"user")
        assert (await mock.request("PATCH", "/users/12")).status == 204
        assert (await mock.request("GET", "/users/3")).body == b"user"
        with pytest.raises(MockNotMatchedError):  # fullmatch: no trailing segment
            await mock.request("GET", "/users/3/posts")


async def test_header_matchers() -> None:
    async with MockPool() as mock:
        mock.intercept("GET", "/", headers={"Authorization": re.compile("Bearer .+")}).reply(200)
        mock.intercept("GET", "/", headers=lambda h: h.get("x-role") == "admin").reply(201)
        mock.intercept("GET", "/", headers={"x-missing": "1"}).reply(202)
        ok = await mock.request("GET", "/", headers={"authorization": "Bearer t"})
        admin = await mock.request("GET", "/", headers=[("X-Role", "admin")])
        with pytest.raises(MockNotMatchedError):
            await mock.request("GET", "/")  # x-missing is absent
    assert (ok.status, admin.status) == (200, 201)


@pytest.mark.parametrize(
    "matcher",
    [
        b'{"a": 1}',
        '{"a": 1}',
        re.compile(rb"\{.*\}"),
        re.compile(r'\{"a": \d\}'),
        lambda body: body.startswith(b"{"),
    ],
)
async def test_body_matchers(matcher: Any) -> None:
    async with MockPool() as mock:
        mock.intercept("POST", "/", body=matcher).reply(200)
        with pytest.raises(MockNotMatchedError):
            await mock.request("POST", "/", body=b"[]")
        assert (await mock.request("POST", "/", body='{"a": 1}')).status == 200


async def test_query_matchers_see_the_decoded_query() -> None:
    async with MockPool() as mock:
        mock.intercept("GET", "/s", query={"q": "a b", "tag": ["x", "y"]}).reply(200)
        mock.intercept("GET", "/s", query=lambda q: q.get("page") == ["2"]).reply(201)
        first = await mock.request("GET", "/s", query=[("q", "a b"), ("tag", "x"), ("tag", "y")])
        second = await mock.request("GET", "/s?page=2")
        with pytest.raises(MockNotMatchedError):
            await mock.request("GET", "/s", query={"q": "a b"})  # the whole query must match
    assert (first.status, second.status) == (200, 201)
    assert mock.calls[0].query == {"q": ["a b"], "tag": ["x", "y"]}
    assert mock.calls[0].target == "/s?q=a+b&tag=x&tag=y"


async def test_routes_are_tried_in_declaration_order_and_used_up_ones_skipped() -> None:
    async with MockPool() as mock:
        first = mock.intercept("GET", "/").reply(200, b"first")
        mock.intercept("GET", "/").reply(200, b"second").persist()
        bodies = [(await mock.request("GET", "/")).body for _ in range(3)]
    assert bodies == [b"first", b"second", b"second"]
    assert [c.scope for c in mock.calls[:1]] == [first]
    assert first.calls == mock.calls[:1]
    assert repr(first) == "<MockScope GET /: 1 of 1 replies used>"


# ---------------------------------------------------------------------------------- times, pending


async def test_a_route_answers_once_by_default_then_times_then_persist() -> None:
    async with MockPool() as mock:
        once = mock.intercept("GET", "/once").reply(200)
        twice = mock.intercept("GET", "/twice").reply(200).times(2)
        always = mock.intercept("GET", "/always").reply(200).persist()
        assert mock.pending_interceptors() == [once, twice, always]
        await mock.request("GET", "/once")
        with pytest.raises(MockNotMatchedError):
            await mock.request("GET", "/once")
        await mock.request("GET", "/twice")
        assert twice.pending
        await mock.request("GET", "/twice")
        assert mock.pending_interceptors() == [always]
        with pytest.raises(
            AssertionError, match=r"1 interceptor\(s\) still pending:\n  GET /always"
        ):
            mock.assert_no_pending_interceptors()
        for _ in range(3):
            await mock.request("GET", "/always")
        mock.assert_no_pending_interceptors()
    assert len(always.calls) == 3


async def test_concurrent_requests_never_share_a_single_reply(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with MockPool() as mock:
        mock.intercept("GET", "/").reply(200).delay(1)
        outcomes: list[str] = []

        async def one() -> None:
            try:
                await mock.request("GET", "/")
                outcomes.append("answered")
            except MockNotMatchedError:
                outcomes.append("unmatched")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            nursery.start_soon(one)
    assert sorted(outcomes) == ["answered", "unmatched"]


# ---------------------------------------------------------------------------------- unmatched


async def test_an_unmatched_request_names_itself_and_every_route_and_is_recorded() -> None:
    async with MockPool("http://api.test:8080") as mock:
        mock.intercept("GET", "/users").reply(200)
        mock.intercept("POST", re.compile("/items/.*"), body=b"x").reply(201).times(3)
        with pytest.raises(MockNotMatchedError) as info:
            await mock.request("DELETE", "/users", query={"id": "4"})
        assert_idle(mock)
    assert mock.origin == "http://api.test:8080"
    message = str(info.value)
    assert "DELETE /users?id=4" in message
    assert "http://api.test:8080" in message
    assert "\n  GET /users: 0 of 1 replies used" in message
    assert "\n  POST re.compile('/items/.*') body b'x': 0 of 3 replies used" in message
    assert isinstance(info.value, trio_pool.TrioPoolError)
    assert info.value.call is mock.calls[0]
    assert mock.unmatched == mock.calls
    assert not mock.calls[0].matched


async def test_with_no_routes_the_message_says_so() -> None:
    async with MockPool() as mock:
        with pytest.raises(MockNotMatchedError, match=r"routes: none$"):
            await mock.request("GET", "/")


# ---------------------------------------------------------------------------------- records


async def test_calls_record_what_would_be_sent() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"c"

    async with MockPool(pipelining=0) as mock:
        mock.intercept(re.compile(".*"), re.compile(".*")).reply(200).persist()
        await mock.request("POST", "/a", body=[b"1", b"2"], headers={"X-Id": "7"})
        await mock.request("PUT", "/b", body=chunks())
        await mock.request("GET", "/c", query="x=1&x=2&y=")
    first, second, third = mock.calls
    assert (first.method, first.path, first.body) == ("POST", "/a", b"12")
    assert first.headers["x-id"] == "7"
    assert first.headers["host"] == "mock.test"
    assert first.headers["transfer-encoding"] == "chunked"
    assert first.headers["connection"] == "close"  # pipelining=0, as a real request
    assert (second.method, second.body) == ("PUT", b"abc")
    assert (third.query, third.body) == ({"x": ["1", "2"], "y": [""]}, b"")
    assert all(call.matched for call in mock.calls)


async def test_a_streamed_body_must_match_its_content_length() -> None:
    async with mock_with() as mock:
        mock.intercept("POST", "/").reply(200)
        with pytest.raises(trio_pool.RequestContentLengthMismatchError):
            await mock.request("POST", "/", body=[b"abc"], headers={"content-length": "5"})
        assert_idle(mock)


async def test_an_error_of_the_body_iterable_is_raised_as_itself() -> None:
    def broken() -> Any:
        yield b"a"
        raise KeyError("the body broke")

    async with mock_with() as mock:
        mock.intercept("POST", "/").reply(200)
        with pytest.raises(KeyError, match="the body broke"):
            await mock.request("POST", "/", body=broken())
        assert_idle(mock)
        assert mock.calls == []  # nothing was received


# ---------------------------------------------------------------------------------- as a Pool


async def echo_script(request: ServerRequest, conn: ServerConnection) -> None:
    await conn.respond(200, body=request.body)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "GET", "path": "users"},
        {"method": "G ET", "path": "/"},
        {"method": "GET", "path": "/", "headers": {"transfer-encoding": "chunked"}},
        {"method": "GET", "path": "/", "headers": {"x": "a\nb"}},
        {"method": "GET", "path": "/", "query": 5},
        {"method": "GET", "path": "/", "body": 5},
        {"method": "POST", "path": "/", "body": b"abc", "headers": {"content-length": "4"}},
    ],
)
async def test_bad_requests_raise_the_same_error_as_a_real_pool(kwargs: dict[str, Any]) -> None:
    errors = []
    async with serve_memory(echo_script) as server:
        async with trio_pool.Pool(server.origin, connector=server.connector) as pool:
            with pytest.raises(trio_pool.TrioPoolError) as real:
                await pool.request(**kwargs)
            errors.append(real.value)
    async with mock_with() as mock:
        with pytest.raises(trio_pool.TrioPoolError) as mocked:
            await mock.request(**kwargs)
        errors.append(mocked.value)
        assert mock.calls == []
    assert [(type(e), str(e)) for e in errors[:1]] == [(type(e), str(e)) for e in errors[1:]]


# ---------------------------------------------------------------------------------- delays


async def test_a_delay_is_a_trio_sleep(autojump_clock: trio.testing.MockClock) -> None:
    async with MockPool() as mock:
        mock.intercept("GET", "/").reply(200).delay(5)
        start = trio.current_time()
        await mock.request("GET", "/")
        assert trio.current_time() - start == pytest.approx(5)


async def test_a_cancelled_delayed_request_leaves_the_mock_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with MockPool() as mock:
        route = mock.intercept("GET", "/").reply(200).delay(math.inf)
        with trio.move_on_after(1) as scope:
            await mock.request("GET", "/")
        assert scope.cancelled_caught
        assert_idle(mock)
        assert route.calls == mock.calls  # it was received (and used the route)
        assert not route.pending


async def test_a_delay_beyond_headers_timeout_is_a_headers_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with MockPool(headers_timeout=2) as mock:
        mock.intercept("GET", "/").reply(200).delay(3).persist()
        start = trio.current_time()
        with pytest.raises(trio_pool.HeadersTimeoutError, match=re.escape("within 2.0 s")):
            await mock.request("GET", "/")
        assert trio.current_time() - start == pytest.approx(2)
        assert_idle(mock)


async def test_an_error_is_raised_after_the_delay(autojump_clock: trio.testing.MockClock) -> None:
    async with MockPool() as mock:
        mock.intercept("GET", "/").reply_with_error(trio_pool.ConnectError("refused")).delay(4)
        with pytest.raises(trio_pool.ConnectError):
            await mock.request("GET", "/")
        assert trio.current_time() == pytest.approx(4)


# ---------------------------------------------------------------------------------- streaming


async def test_stream_yields_the_declared_chunks_and_holds_its_slot_until_read() -> None:
    async with MockPool() as mock:
        mock.intercept("GET", "/").reply(200, [b"a", b"", b"bc"], trailers={"t": "1"})
        async with mock.stream("GET", "/") as response:
            assert isinstance(response, trio_pool.StreamResponse)
            assert mock.statistics().running == 1
            assert response.trailers == Headers()  # not before the end
            chunks = [chunk async for chunk in response.body]
            assert response.trailers["t"] == "1"
            assert_idle(mock)
    assert chunks == [b"a", b"bc"]  # no empty chunk, as from a real server


async def test_leaving_a_stream_early_frees_it_and_later_reads_raise() -> None:
    async with MockPool() as mock:
        mock.intercept("GET", "/").reply(200, [b"a", b"b"])
        async with mock.stream("GET", "/") as response:
            assert await response.body.__anext__() == b"a"
            await response.aclose()
            assert_idle(mock)
            with pytest.raises(RequestAbortedError):
                await response.read()


async def test_a_reader_cancelled_mid_body_ends_the_request() -> None:
    async with MockPool() as mock:
        mock.intercept("GET", "/").reply(200, [b"a", b"b"])
        async with mock.stream("GET", "/") as response:
            with trio.CancelScope() as scope:
                scope.cancel()
                await response.read()
            assert_idle(mock)
            with pytest.raises(RequestAbortedError):
                await response.read()


async def test_pipeline_reads_the_body_then_streams_the_answer() -> None:
    async def body() -> AsyncIterator[bytes]:
        for part in (b"x", b"y"):
            await trio.lowlevel.checkpoint()
            yield part

    async with MockPool() as mock:
        mock.intercept("POST", "/up").reply(lambda call: MockReply(200, [call.body, b"!"]))
        async with mock.pipeline("POST", "/up", body=body()) as response:
            assert await response.read() == b"xy!"
        assert_idle(mock)


# ---------------------------------------------------------------------------------- dispatch


class Recorder:
    """A dispatch handler that writes down what it is told; on the named event it raises
    (``fail_on``), aborts its request (``abort_on``) or, for "start", stalls (``stall_on``)."""

    def __init__(self, *, fail_on: str = "", abort_on: str = "", stall_on: str = "") -> None:
        self.seen: list[tuple[Any, ...]] = []
        self.fail_on = fail_on
        self.abort_on = abort_on
        self.stall_on = stall_on

    def _note(self, controller: Any, *event: Any) -> None:
        if event[0] != "request_start":
            self.seen.append(event)
        if event[0] == self.abort_on:
            controller.abort("not today")
        if event[0] == self.fail_on:
            raise LookupError(f"handler failed in {self.fail_on}")

    def on_request_start(self, controller: Any) -> None:
        self._note(controller, "request_start")

    async def on_response_start(
        self, controller: Any, status: int, headers: Any, reason: str
    ) -> None:
        if self.stall_on == "start":
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        self._note(controller, "start", status, reason)

    def on_response_data(self, controller: Any, chunk: bytes) -> None:
        self._note(controller, "data", chunk)

    def on_response_end(self, controller: Any, trailers: Headers) -> None:
        self._note(controller, "end", list(trailers))

    def on_response_error(self, controller: Any, error: BaseException) -> None:
        self.seen.append(("error", type(error)))


async def dispatched(handler: Recorder, path: str = "/") -> MockPool:
    async with MockPool() as mock:
        mock.intercept("GET", "/").reply(200, [b"a", b"b"], trailers={"t": "1"})
        await mock.dispatch(RequestOptions("GET", path), handler)
        assert_idle(mock)
    return mock


async def test_dispatch_drives_the_handler_in_order() -> None:
    handler = Recorder()
    await dispatched(handler)
    assert handler.seen == [
        ("start", 200, "OK"),
        ("data", b"a"),
        ("data", b"b"),
        ("end", [("t", "1")]),
    ]


async def test_dispatch_a_handler_error_is_its_on_response_error() -> None:
    handler = Recorder(fail_on="data")
    await dispatched(handler)
    assert handler.seen == [("start", 200, "OK"), ("data", b"a"), ("error", LookupError)]


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (Recorder(abort_on="request_start"), RequestAbortedError),
        # API.md 1.3 (issue 12 item 2): the handler's own exception, as itself.
        (Recorder(fail_on="request_start"), LookupError),
    ],
)
async def test_dispatch_aborted_at_start_sends_nothing(
    handler: Recorder, error: type[BaseException]
) -> None:
    mock = await dispatched(handler)
    assert handler.seen == [("error", error)]
    assert mock.calls == []


async def test_dispatch_aborted_mid_response_hears_no_more() -> None:
    handler = Recorder(abort_on="data")
    await dispatched(handler)
    assert handler.seen == [("start", 200, "OK"), ("data", b"a"), ("error", RequestAbortedError)]


async def test_dispatch_cancelled_in_a_handler_method_ends_the_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler = Recorder(stall_on="start")
    async with mock_with() as mock:
        with trio.move_on_after(1) as scope:
            await mock.dispatch(RequestOptions("GET", "/"), handler)
        assert scope.cancelled_caught
        assert_idle(mock)
    assert handler.seen == [("error", RequestAbortedError)]


async def test_dispatch_unmatched_is_its_on_response_error() -> None:
    handler = Recorder()
    await dispatched(handler, "/elsewhere")
    assert handler.seen == [("error", MockNotMatchedError)]


async def test_dispatch_cancelled_in_a_delay_tells_the_handler_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler = Recorder()
    async with MockPool() as mock:
        mock.intercept("GET", "/").reply(200).delay(10)
        with trio.move_on_after(1):
            await mock.dispatch(RequestOptions("GET", "/"), handler)
        assert_idle(mock)
    assert handler.seen == [("error", RequestAbortedError)]


async def test_dispatch_refuses_other_options() -> None:
    async with mock_with() as mock:
        with pytest.raises(InvalidArgumentError, match="RequestOptions"):
            await mock.dispatch({"method": "GET"}, Recorder())  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- lifetime


def real_pool() -> AbstractAsyncContextManager[trio_pool.Dispatcher]:
    return memory_pool(echo_script)


DISPATCHERS = [pytest.param(mock_with, id="mock"), pytest.param(real_pool, id="pool")]
Opener = Callable[[], Any]


@pytest.mark.parametrize("opener", DISPATCHERS)
async def test_refusals_after_close_and_destroy_match_a_pool(opener: Opener) -> None:
    async with opener() as pool:
        await pool.close()
        assert pool.closed
        assert not pool.destroyed
        with pytest.raises(ClientClosedError):
            await pool.request("GET", "/")
        await pool.destroy()
        assert pool.destroyed
        with pytest.raises(ClientDestroyedError):
            await pool.request("GET", "/")
        with pytest.raises(ClientDestroyedError):
            await pool.close()
        assert_idle(pool)


@pytest.mark.parametrize("opener", DISPATCHERS)
async def test_leaving_with_an_error_raises_it_unwrapped_and_destroys(opener: Opener) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with opener() as pool:
            raise KeyError("mine")
    assert pool.destroyed


def test_outside_its_block_it_refuses_requests() -> None:
    async def main() -> None:
        mock = MockPool()
        with pytest.raises(trio_pool.TrioPoolError, match="async with"):
            await mock.request("GET", "/")
        async with mock:
            pass
        with pytest.raises(ClientClosedError):
            async with mock:
                pass

    trio.run(main)


async def test_close_waits_for_a_delayed_request(autojump_clock: trio.testing.MockClock) -> None:
    results: list[int] = []
    async with MockPool() as mock:
        mock.intercept("GET", "/").reply(200).delay(3)

        async def get() -> None:
            results.append((await mock.request("GET", "/")).status)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(get)
            await trio.testing.wait_all_tasks_blocked()
            await mock.close()
            assert results == [200]
            assert trio.current_time() == pytest.approx(3)


@pytest.mark.parametrize("error", [None, SocketError("gone")])
async def test_destroy_fails_delayed_and_streaming_requests(
    autojump_clock: trio.testing.MockClock, error: BaseException | None
) -> None:
    expected = type(error) if error is not None else ClientDestroyedError
    async with MockPool() as mock:
        mock.intercept("GET", "/slow").reply(200).delay(100)
        mock.intercept("GET", "/stream").reply(200, [b"a", b"b"])
        async with mock.stream("GET", "/stream") as response:
            assert await response.body.__anext__() == b"a"

            async def slow() -> None:
                with pytest.raises(expected):
                    await mock.request("GET", "/slow")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow)
                await trio.testing.wait_all_tasks_blocked()
                assert mock.statistics().running == 2
                await mock.destroy(error)
            assert trio.current_time() < 100
            with pytest.raises(expected):
                await response.read()
        assert_idle(mock)


# ---------------------------------------------------------------------------------- typing


async def fetch_status(http: trio_pool.Dispatcher) -> int:
    """Application code typed against the Protocol."""
    return (await http.request("GET", "/")).status


@pytest.mark.parametrize("opener", DISPATCHERS)
async def test_application_code_runs_on_a_mock_as_on_a_pool(opener: Opener) -> None:
    async with opener() as http:
        assert isinstance(http, trio_pool.Dispatcher)
        assert await fetch_status(http) == 200


@asynccontextmanager
async def open_nothing() -> AsyncIterator[None]:
    yield None


def test_only_dispatchers_are_dispatchers_at_run_time() -> None:
    assert isinstance(trio_pool.Client("http://x.test"), trio_pool.Dispatcher)
    assert isinstance(trio_pool.BalancedPool([]), trio_pool.Dispatcher)
    assert not isinstance(trio_pool.ResourcePool(open=open_nothing), trio_pool.Dispatcher)


def test_mypy_accepts_every_dispatcher_and_nothing_else(tmp_path: Path) -> None:
    program = tmp_path / "app.py"
    program.write_text(
        textwrap.dedent(
            """\
            import trio_pool
            from trio_pool.testing import MockPool


            async def app(http: trio_pool.Dispatcher) -> int:
                return (await http.request("GET", "/")).status


            async def main(
                client: trio_pool.Client,
                pool: trio_pool.Pool,
                balanced: trio_pool.BalancedPool,
                mock: MockPool,
            ) -> None:
                await app(client)
                await app(pool)
                await app(balanced)
                await app(mock)
                await mock.request("GET", "/", headers={"x": "1"}, query={"q": "2"})
                await app(object())  # line 20: the one error
            """
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(program),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=50,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stdout + result.stderr
    assert 'app.py:20: error: Argument 1 to "app" has incompatible type "object"' in errors[0]
