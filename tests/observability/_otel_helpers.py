"""The OpenTelemetry SDK as the tests' backend: an in-memory metric reader and span exporter,
and the data they collected flattened into dicts that assertions can compare."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

Attributes = frozenset[tuple[str, Any]]


@attrs.define
class Backend:
    """A meter provider and a tracer provider that keep what they get in memory."""

    reader: InMemoryMetricReader = attrs.Factory(InMemoryMetricReader)
    exporter: InMemorySpanExporter = attrs.Factory(InMemorySpanExporter)
    meter_provider: MeterProvider = attrs.field(init=False)
    tracer_provider: TracerProvider = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def providers(self) -> dict[str, Any]:
        """The keyword arguments of ``instrument()`` that point at this backend."""
        return {"meter_provider": self.meter_provider, "tracer_provider": self.tracer_provider}

    def metrics(self) -> dict[str, Metric]:
        """Collect now: metric name -> metric (only those with data points)."""
        data = self.reader.get_metrics_data()
        found: dict[str, Metric] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "trio_pool"
                for metric in scope.metrics:
                    if list(metric.data.data_points):
                        found[metric.name] = metric
        return found

    def shutdown(self) -> None:
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()


def points(metric: Metric) -> dict[Attributes, Any]:
    """A metric's data points by their attribute set."""
    return {
        frozenset(dict(point.attributes or {}).items()): point for point in metric.data.data_points
    }


def values(metric: Metric) -> dict[Attributes, Any]:
    """A sum's or gauge's values by attribute set."""
    return {key: point.value for key, point in points(metric).items()}


def key(attributes: dict[str, Any]) -> Attributes:
    """The key :func:`points` and :func:`values` give a data point of ``attributes``."""
    return frozenset(attributes.items())


@contextmanager
def backend() -> Iterator[Backend]:
    """A :class:`Backend` for the block, shut down after it."""
    made = Backend()
    try:
        yield made
    finally:
        made.shutdown()
