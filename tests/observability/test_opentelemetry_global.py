"""``instrument()`` with the global meter provider, called before and after the application
sets it: every instrumented pool reports its own observations. The global provider can be set
once per process, so the check runs in its own interpreter."""

from __future__ import annotations

import json

from _python_run import run_python

_PROGRAM = """
import json
import trio, trio_pool
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from trio_pool.opentelemetry import instrument
from trio_pool.testing import serve_h11


async def ok(request, conn):
    await conn.respond(200)


async def main():
    reader = InMemoryMetricReader()
    async with serve_h11(ok) as a, serve_h11(ok) as b, serve_h11(ok) as c:
        async with trio_pool.Pool(a.origin) as pa, trio_pool.Pool(b.origin) as pb:
            async with trio_pool.Pool(c.origin) as pc:
                instrument(pa)  # before the application configures OpenTelemetry
                instrument(pb)
                metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
                instrument(pc)  # after
                for pool in (pa, pb, pc):
                    await pool.request("GET", "/")
                idle = {}
                durations = {}
                for resource in reader.get_metrics_data().resource_metrics:
                    for scope in resource.scope_metrics:
                        for metric in scope.metrics:
                            for point in metric.data.data_points:
                                port = point.attributes["server.port"]
                                if metric.name == "http.client.open_connections":
                                    if point.attributes["http.connection.state"] == "idle":
                                        idle[port] = point.value
                                elif metric.name == "http.client.request.duration":
                                    durations[port] = point.count
                ports = [int(s.origin.rsplit(":", 1)[1]) for s in (a, b, c)]
                print(json.dumps([[idle.get(p), durations.get(p)] for p in ports]))


trio.run(main)
"""


def test_pools_instrumented_before_and_after_the_global_provider_is_set_all_report() -> None:
    result = run_python("-c", _PROGRAM)
    assert result.returncode == 0, result.stderr
    # Each pool: one idle connection observed, one request measured.
    assert json.loads(result.stdout) == [[1, 1], [1, 1], [1, 1]]
