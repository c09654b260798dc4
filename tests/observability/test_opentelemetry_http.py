"""trio_pool.opentelemetry on the HTTP dispatchers: the stable HTTP client metrics and the
CLIENT span of each request, read back through the OpenTelemetry SDK's in-memory reader and
span exporter; the ``traceparent`` header as the server received it.

Exact durations come from the in-memory server on ``autojump_clock``; the span and
``traceparent`` tests use a real server on 127.0.0.1.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
import trio.testing
from _helpers import assert_idle, memory_pool, ok
from _otel_helpers import Backend, backend, key, points, values
from opentelemetry.trace import SpanKind, StatusCode

import trio_pool
from trio_pool import InvalidArgumentError, interceptors
from trio_pool.opentelemetry import instrument
from trio_pool.testing import MockPool, ServerConnection, ServerRequest, serve_h11

MEMORY = {"server.address": "testserver", "server.port": 80, "url.scheme": "http"}


async def slow(request: ServerRequest, conn: ServerConnection) -> None:
    """Half a second of work, then 503 for /fail and 200 for anything else."""
    await trio.sleep(0.5)
    await conn.respond(503 if request.target == "/fail" else 200, body=b"body")


def closed_origin() -> str:
    """An origin on 127.0.0.1 where nothing listens (a port that was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def origin_attributes(origin: str) -> dict[str, Any]:
    port = int(origin.rsplit(":", 1)[1])
    return {"server.address": "127.0.0.1", "server.port": port, "url.scheme": "http"}


# --------------------------------------------------------------------------- metrics


async def test_request_duration_counts_every_request_with_its_attributes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with backend() as otel:
        async with memory_pool(slow, connections=2) as pool:
            telemetry = instrument(pool, **otel.providers())
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(pool.request, "GET", "/")
            for _ in range(2):
                response = await pool.request("POST", "/fail", body=b"x")
                assert response.status == 503
            found = otel.metrics()
            duration = found["http.client.request.duration"]
            assert duration.unit == "s"
            by_attributes = points(duration)
            assert set(by_attributes) == {
                key({**MEMORY, "http.request.method": "GET", "http.response.status_code": 200}),
                key(
                    {
                        **MEMORY,
                        "http.request.method": "POST",
                        "http.response.status_code": 503,
                        "error.type": "503",
                    }
                ),
            }
            gets = by_attributes[
                key({**MEMORY, "http.request.method": "GET", "http.response.status_code": 200})
            ]
            # Two connections for three requests: two take 0.5 s, the third queues 0.5 s more.
            assert (gets.count, gets.sum) == (3, 0.5 + 0.5 + 1.0)
            assert list(gets.explicit_bounds)[:3] == [0.005, 0.01, 0.025]
            assert values(found["http.client.open_connections"]) == {
                key({**MEMORY, "http.connection.state": "idle"}): 2,
                key({**MEMORY, "http.connection.state": "active"}): 0,
            }
            assert found["http.client.open_connections"].unit == "{connection}"
            assert "http.client.connection.duration" not in found  # none closed yet
            await trio.sleep(3.0)
        # Both connections opened at t=0. The one the third GET and the POSTs did not use
        # was idle from t=0.5 and closed by the keep-alive timeout (4 s) at t=4.5; the other
        # was closed when the block was left, at t=5 (three 0.5 s requests on it, 1 s of
        # POSTs, then 3 s).
        closed = points(otel.metrics()["http.client.connection.duration"])
        assert set(closed) == {key(MEMORY)}
        assert (closed[key(MEMORY)].count, closed[key(MEMORY)].sum) == (2, 4.5 + 5.0)
        assert otel.metrics()["http.client.connection.duration"].unit == "s"
        telemetry.uninstrument()


async def test_open_connections_counts_active_ones_while_requests_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with backend() as otel:
        async with memory_pool(slow, connections=3) as pool:
            instrument(pool, **otel.providers())
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(pool.request, "GET", "/")
                await trio.sleep(0.25)
                assert values(otel.metrics()["http.client.open_connections"]) == {
                    key({**MEMORY, "http.connection.state": "idle"}): 0,
                    key({**MEMORY, "http.connection.state": "active"}): 3,
                }


async def test_a_failed_connect_reports_its_error_type_and_no_status() -> None:
    origin = closed_origin()
    with backend() as otel:
        async with trio_pool.Pool(origin) as pool:
            instrument(pool, **otel.providers())
            with pytest.raises(trio_pool.ConnectError):
                await pool.request("GET", "/")
        duration = points(otel.metrics()["http.client.request.duration"])
        assert set(duration) == {
            key(
                {
                    **origin_attributes(origin),
                    "http.request.method": "GET",
                    "error.type": "ConnectError",
                }
            )
        }


async def test_an_agent_reports_each_origin_and_its_connections() -> None:
    with backend() as otel:
        async with serve_h11(ok) as one, serve_h11(ok) as two, trio_pool.Agent() as agent:
            instrument(agent, **otel.providers())
            for server in (one, two, two):
                await agent.request("GET", f"{server.origin}/x")
            found = otel.metrics()
            counts = {
                attributes: point.count
                for attributes, point in points(found["http.client.request.duration"]).items()
            }
            ok_get = {"http.request.method": "GET", "http.response.status_code": 200}
            assert counts == {
                key({**origin_attributes(one.origin), **ok_get}): 1,
                key({**origin_attributes(two.origin), **ok_get}): 2,
            }
            assert values(found["http.client.open_connections"]) == {
                key({**origin_attributes(server.origin), "http.connection.state": state}): (
                    1 if state == "idle" else 0
                )
                for server in (one, two)
                for state in ("idle", "active")
            }


async def test_a_balanced_pool_reports_each_upstream() -> None:
    with backend() as otel:
        async with (
            serve_h11(ok) as one,
            serve_h11(ok) as two,
            trio_pool.BalancedPool([one.origin, two.origin]) as balanced,
        ):
            instrument(balanced, **otel.providers())
            for _ in range(4):
                await balanced.request("GET", "/")
            found = otel.metrics()
            total = sum(p.count for p in points(found["http.client.request.duration"]).values())
            assert total == 4
            open_connections = values(found["http.client.open_connections"])
            assert {dict(attributes)["server.port"] for attributes in open_connections} == {
                origin_attributes(server.origin)["server.port"] for server in (one, two)
            }


async def test_a_retried_request_is_one_duration_per_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answers = iter([503, 503, 200])

    async def flaky(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(next(answers))

    with backend() as otel:
        async with memory_pool(flaky) as pool:
            retrying = pool.compose(interceptors.retry(min_timeout=0.1))
            telemetry = instrument(retrying, **otel.providers())
            assert (await retrying.request("GET", "/")).status == 200
            counts = {
                dict(attributes).get("http.response.status_code"): point.count
                for attributes, point in points(
                    otel.metrics()["http.client.request.duration"]
                ).items()
            }
            assert counts == {503: 2, 200: 1}
            with pytest.raises(InvalidArgumentError, match="instrumented already"):
                instrument(pool, **otel.providers())  # the base of what is instrumented
            telemetry.uninstrument()


# --------------------------------------------------------------------------- spans


def finished(otel: Backend) -> list[Any]:
    return list(otel.exporter.get_finished_spans())


async def test_each_request_is_a_client_span_whose_traceparent_the_server_receives() -> None:
    received: list[str | None] = []

    async def record(request: ServerRequest, conn: ServerConnection) -> None:
        received.append(request.header("traceparent"))
        await conn.respond(404 if request.target == "/missing" else 200)

    with backend() as otel:
        tracer = otel.tracer_provider.get_tracer("the application")
        async with serve_h11(record) as server, trio_pool.Pool(server.origin) as pool:
            telemetry = instrument(pool, **otel.providers())
            http = telemetry.dispatcher
            with tracer.start_as_current_span("handle order") as parent:
                await http.request("GET", "/items?page=2", headers={"traceparent": "forged"})
                await http.request("GET", "/missing")
            await pool.request("GET", "/plain")  # not through the interceptor: no span
            assert_idle(pool)

        spans = finished(otel)
        client = [span for span in spans if span.kind is SpanKind.CLIENT]
        assert [span.name for span in client] == ["GET", "GET"]
        first, missing = client
        assert dict(first.attributes or {}) == {
            **origin_attributes(server.origin),
            "http.request.method": "GET",
            "url.full": f"{server.origin}/items?page=2",
            "http.response.status_code": 200,
        }
        assert first.status.status_code is StatusCode.UNSET
        assert first.parent is not None
        assert first.parent.span_id == parent.get_span_context().span_id
        assert missing.status.status_code is StatusCode.ERROR
        assert dict(missing.attributes or {})["error.type"] == "404"
        # What the server got: each request's own span, never the caller's forged value.
        assert received == [
            f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}"
            f"-{span.context.trace_flags:02x}"
            for span in client
        ] + [None]


async def test_a_failed_request_ends_its_span_with_the_error() -> None:
    with backend() as otel:
        async with trio_pool.Pool(closed_origin()) as pool:
            telemetry = instrument(pool, **otel.providers())
            with pytest.raises(trio_pool.ConnectError):
                await telemetry.dispatcher.request("GET", "/")
        (span,) = finished(otel)
        assert span.status.status_code is StatusCode.ERROR
        assert dict(span.attributes or {})["error.type"] == "ConnectError"
        assert "http.response.status_code" not in dict(span.attributes or {})
        assert [event.name for event in span.events] == ["exception"]


async def test_a_streamed_response_span_lasts_until_the_body_is_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with backend() as otel:
        async with memory_pool(slow) as pool:
            telemetry = instrument(pool, **otel.providers())
            async with telemetry.dispatcher.stream("GET", "/") as response:
                assert response.status == 200
                assert finished(otel) == []  # the body is still to come
                assert [chunk async for chunk in response.body] == [b"body"]
            (span,) = finished(otel)
            assert dict(span.attributes or {})["http.response.status_code"] == 200


async def test_cancelled_inside_the_span_ends_it_and_leaves_the_pool_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with backend() as otel:
        async with memory_pool(slow) as pool:
            telemetry = instrument(pool, **otel.providers())
            with trio.move_on_after(0.25):  # the server takes 0.5 s
                await telemetry.dispatcher.request("GET", "/")
            (span,) = finished(otel)
            assert span.status.status_code is StatusCode.ERROR
            assert dict(span.attributes or {})["error.type"] == "RequestAbortedError"
            await trio.testing.wait_all_tasks_blocked()
            assert_idle(pool)
            assert (await telemetry.dispatcher.request("GET", "/")).status == 200
            ended = points(otel.metrics()["http.client.request.duration"])
            assert sorted(str(dict(a).get("error.type")) for a in ended) == [
                "None",
                "RequestAbortedError",
            ]


# --------------------------------------------------------------------------- uninstrument


async def test_uninstrument_stops_metrics_spans_and_headers() -> None:
    received: list[str | None] = []

    async def record(request: ServerRequest, conn: ServerConnection) -> None:
        received.append(request.header("traceparent"))
        await conn.respond(200)

    with backend() as otel:
        async with serve_h11(record) as server, trio_pool.Pool(server.origin) as pool:
            telemetry = instrument(pool, **otel.providers())
            await telemetry.dispatcher.request("GET", "/")
            telemetry.uninstrument()
            telemetry.uninstrument()  # a second call does nothing
            assert not telemetry.active
            assert "uninstrumented" in repr(telemetry)
            await telemetry.dispatcher.request("GET", "/")  # passes through
            await pool.request("GET", "/")
            found = otel.metrics()
            (point,) = points(found["http.client.request.duration"]).values()
            assert point.count == 1  # only the request before uninstrument()
            assert "http.client.open_connections" not in found
            assert len(finished(otel)) == 1
            assert received[1:] == [None, None]
            assert pool._traced is False  # nobody hears "request_end": no timing taken
            again = instrument(pool, **otel.providers())
            await pool.request("GET", "/")
            (point,) = points(otel.metrics()["http.client.request.duration"]).values()
            assert point.count == 2
            again.uninstrument()


async def test_instrument_twice_is_refused_until_uninstrumented() -> None:
    with backend() as otel:
        async with trio_pool.Pool(closed_origin()) as pool:
            telemetry = instrument(pool, **otel.providers())
            with pytest.raises(InvalidArgumentError, match="instrumented already"):
                instrument(pool, **otel.providers())
            with pytest.raises(InvalidArgumentError, match="instrumented already"):
                instrument(pool.compose(), **otel.providers())  # same events: refused too
            telemetry.uninstrument()
            instrument(pool, **otel.providers()).uninstrument()


async def test_without_an_sdk_instrument_works_and_records_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # No provider given and none configured globally: the API's no-op meter and tracer.
    async with memory_pool() as pool:
        telemetry = instrument(pool)
        assert (await telemetry.dispatcher.request("GET", "/")).status == 200
        telemetry.uninstrument()


async def test_a_mock_pool_is_instrumented_like_a_pool() -> None:
    with backend() as otel:
        async with MockPool() as mock:
            mock.intercept("GET", "/users/7").reply(200, b"{}")
            telemetry = instrument(mock, **otel.providers())
            assert (await telemetry.dispatcher.request("GET", "/users/7")).status == 200
            (attributes,) = points(otel.metrics()["http.client.request.duration"])
            assert dict(attributes) == {
                "server.address": "mock.test",
                "server.port": 80,
                "url.scheme": "http",
                "http.request.method": "GET",
                "http.response.status_code": 200,
            }
            (span,) = finished(otel)
            assert mock.calls[0].headers["traceparent"].split("-")[2] == (
                f"{span.context.span_id:016x}"
            )
            telemetry.uninstrument()


async def test_a_method_the_conventions_do_not_know_is_other(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with backend() as otel:
        async with memory_pool() as pool:
            telemetry = instrument(pool, **otel.providers())
            assert (await telemetry.dispatcher.request("PURGE", "/cache")).status == 200
            other = {"http.request.method": "_OTHER", "http.request.method_original": "PURGE"}
            (span,) = finished(otel)
            assert span.name == "HTTP"
            assert other.items() <= dict(span.attributes or {}).items()
            # A metric keeps its cardinality bounded: no method_original there.
            (attributes,) = points(otel.metrics()["http.client.request.duration"])
            assert dict(attributes)["http.request.method"] == "_OTHER"
            assert "http.request.method_original" not in dict(attributes)
            telemetry.uninstrument()
