"""Monitoring in production: a log line per request, OpenTelemetry metrics scraped as
Prometheus text, a span per request with its ``traceparent``, and the cumulative counters.

Run it from the repository root (``pip install ".[examples]"`` brings the OpenTelemetry SDK
and its Prometheus exporter; the servers are its own)::

    python examples/monitoring.py        # the request log goes to stderr: 2>/dev/null hides it

Theory of operation: the script starts a scripted HTTP/1.1 server on 127.0.0.1
(``trio_pool.testing.serve_h11``) and wires up what a service would, as the "Monitoring in
production" page describes:

* **traces to logs**: a ``"request_end"`` listener writes one JSON line per request (method,
  URL, status or error, and the phases: queued, connect, send, wait, receive, total). It is
  a plain function called from the pool's tasks, so it only formats and logs.
* **metrics**: ``trio_pool.opentelemetry.instrument()`` on the HTTP pool and on a
  ``ResourcePool``, with the SDK's ``MeterProvider`` reading through the Prometheus exporter;
  the script prints the exposition text a Prometheus server would scrape.
* **spans**: requests sent through ``Instrumentation.dispatcher`` are CLIENT spans, and the
  server sees each one's ``traceparent`` header.
* **counters**: ``statistics()``' cumulative ``*_total`` fields, the numbers a dashboard plots.

Then it generates traffic: a burst larger than ``connections`` (requests queue), a request
the server answers 503, one to a port where nothing listens (``ConnectError``), and a few
checkouts of the resource pool, one of which times out.
"""

from __future__ import annotations

import json
import logging
import socket
import sys

import trio
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY, generate_latest

import trio_pool
from trio_pool.opentelemetry import instrument
from trio_pool.testing import ServerConnection, ServerRequest, serve_h11

#: Requests in the burst, and the most connections the pool may open for it.
BURST = 20
CONNECTIONS = 4

request_log = logging.getLogger("myservice.http")


def log_request(trace: trio_pool.RequestTrace) -> None:
    """The ``"request_end"`` listener: one structured line per request."""
    request_log.info(
        json.dumps(
            {
                "method": trace.method,
                "url": trace.url,
                "status": trace.status,
                "error": None if trace.error is None else type(trace.error).__name__,
                "attempt": trace.attempt,
                "reused": trace.reused_connection,
                **{
                    phase: None if seconds is None else round(seconds, 6)
                    for phase, seconds in (
                        ("queued", trace.queued),
                        ("connect", trace.connect),
                        ("send", trace.send),
                        ("wait", trace.wait),
                        ("receive", trace.receive),
                        ("total", trace.total),
                    )
                },
            }
        )
    )


received_traceparents: list[str | None] = []


async def app(request: ServerRequest, conn: ServerConnection) -> None:
    received_traceparents.append(request.header("traceparent"))
    await trio.sleep(0.005)  # some work, so that the burst queues up
    await conn.respond(503 if request.target == "/unavailable" else 200, body=b"ok")


def closed_origin() -> str:
    """An origin on 127.0.0.1 where nothing listens (a port that was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def open_connection() -> object:
    return object()  # stands in for a database connection


async def close_connection(connection: object) -> None:
    pass


async def main() -> int:
    # The SDK side: what an application configures once, at start-up.
    meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))

    database = trio_pool.ResourcePool(
        open_connection, close_connection, max=2, request_timeout=0.05, name="orders-db"
    )
    async with (
        serve_h11(app) as server,
        trio_pool.Pool(server.origin, connections=CONNECTIONS) as pool,
        trio_pool.Pool(closed_origin()) as unreachable,
        database,
    ):
        pool.on("request_end", log_request)
        unreachable.on("request_end", log_request)
        http = instrument(pool, meter_provider=meter_provider, tracer_provider=tracer_provider)
        db = instrument(database, meter_provider=meter_provider)

        async with trio.open_nursery() as burst:  # traced: through http.dispatcher
            for _ in range(BURST):
                burst.start_soon(http.dispatcher.request, "GET", "/orders")
        await pool.request("GET", "/unavailable")  # not traced: no traceparent
        try:
            await unreachable.request("GET", "/")
        except trio_pool.ConnectError as exc:
            print(f"the caller got {exc!r}")

        async with database.acquire(), database.acquire():  # max=2: a third one times out
            try:
                await database.checkout()
            except trio_pool.RequestTimeoutError:
                print("a checkout timed out (request_timeout=0.05 s)")

        exposition = generate_latest(REGISTRY).decode()
        final, db_final = pool.statistics(), database.statistics()
        http.uninstrument()
        db.uninstrument()

    print("scraped by Prometheus (trio_pool's metrics, without the comment lines):")
    ours = [
        line
        for line in exposition.splitlines()
        if line.startswith(("http_client_", "db_client_")) and "_bucket{" not in line
    ]
    for line in ours:
        print(f"  {line}")
    print(f"spans: {len(spans.get_finished_spans())}")
    print(
        f"counters: requests_total={final.requests_total} errors_total={final.errors_total}"
        f" connects_total={final.connects_total}"
        f" | acquires_total={db_final.acquires_total}"
        f" request_timeouts_total={db_final.request_timeouts_total}"
    )

    # The script's own check, so that running it is a test.
    traced = [value for value in received_traceparents if value is not None]
    expected_metrics = (
        "http_client_request_duration_seconds_count",
        "http_client_open_connections",
        "db_client_connection_count",
        "db_client_connection_wait_time_seconds_count",
        "db_client_connection_timeouts",
    )
    if not (
        all(any(line.startswith(name) for line in ours) for name in expected_metrics)
        and len(spans.get_finished_spans()) == BURST
        and len(traced) == BURST
        and len(received_traceparents) == BURST + 1
        and final.requests_total == BURST + 1
        and 1 <= final.connects_total <= CONNECTIONS
        and db_final.request_timeouts_total == 1
    ):
        print("unexpected metrics, spans or counters", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # A service configures logging once, at start-up; the request log is one JSON per line.
    logging.basicConfig(format="%(name)s %(message)s", stream=sys.stderr, level=logging.INFO)
    sys.exit(trio.run(main))
