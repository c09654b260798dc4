"""The ``bench`` report: a :class:`Summary` of a run, as a table or as one JSON object.

Theory of operation
-------------------
:meth:`Summary.of` turns the measured phase's recorders into plain numbers once: nearest-rank
percentiles of the sorted latencies, a histogram over fixed log-spaced buckets (1-2-5 per
decade, so bucket edges read as round numbers), rates over the phase's elapsed time, and the
CPU shares. The table and :meth:`Summary.to_json` are two renderings of the same fields, so
they cannot disagree; ``docs/bench-schema.json`` is the JSON's schema, and a test validates a
real run's output against it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs

import trio_pool

from ._args import BenchConfig
from ._load import LoadResult, Recorder

__all__ = ["CPU_WARNING", "Counts", "Summary"]

#: Above this share of one core, the client may be the bottleneck: the report says so.
CPU_WARNING = 0.9

_PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999))
# Upper bucket edges in milliseconds: 1-2-5 per decade, 1 us to 100 s, then everything.
_EDGES_MS = (
    *(round(m * 10.0**exponent, 6) for exponent in range(-3, 5) for m in (1, 2, 5)),
    100_000.0,
    math.inf,
)
_HISTOGRAM_WIDTH = 40


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of a non-empty sorted sequence."""
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def _latency_ms(ordered: Sequence[float]) -> dict[str, float | None]:
    if not ordered:
        return dict.fromkeys([*(name for name, _ in _PERCENTILES), "max"])
    latency: dict[str, float | None] = {
        name: _percentile(ordered, fraction) * 1000 for name, fraction in _PERCENTILES
    }
    latency["max"] = ordered[-1] * 1000
    return latency


def _histogram(ordered: Sequence[float]) -> list[tuple[float, int]]:
    """``(upper edge ms, count)`` from the first non-empty bucket to the last."""
    counts = [0] * len(_EDGES_MS)
    bucket = 0
    for latency in ordered:  # sorted: the bucket only moves up
        ms = latency * 1000
        while ms > _EDGES_MS[bucket]:
            bucket += 1
        counts[bucket] += 1
    used = [index for index, count in enumerate(counts) if count]
    if not used:
        return []
    return [(_EDGES_MS[i], counts[i]) for i in range(used[0], used[-1] + 1)]


@attrs.frozen
class Counts:
    """What the totals and each upstream report alike."""

    requests: int
    errors: int
    rps: float
    #: ``p50``, ``p90``, ``p99``, ``p99.9``, ``max`` in ms; None when no response came back.
    latency_ms: dict[str, float | None]
    #: Responses by status code (as a string, since it is a JSON object key).
    status_counts: dict[str, int]
    #: Errors by kind (``timeout`` or the exception's class).
    error_counts: dict[str, int]

    @classmethod
    def of(cls, recorder: Recorder, ordered: Sequence[float], elapsed: float) -> Counts:
        """``recorder``'s counts; ``ordered`` are its latencies, sorted."""
        return cls(
            requests=len(ordered),
            errors=recorder.errors.total(),
            rps=len(ordered) / elapsed if elapsed > 0 else 0.0,
            latency_ms=_latency_ms(ordered),
            status_counts={str(code): n for code, n in sorted(recorder.statuses.items())},
            error_counts=dict(recorder.errors.most_common()),
        )

    def to_json(self) -> dict[str, object]:
        """These fields as the JSON output has them (rounded)."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "rps": round(self.rps, 1),
            "latency_ms": {
                key: None if value is None else round(value, 3)
                for key, value in self.latency_ms.items()
            },
            "status_counts": self.status_counts,
            "error_counts": self.error_counts,
        }


@attrs.frozen
class Summary:
    """What ``bench`` reports; :meth:`to_json` is the ``--json`` object, :meth:`table` the
    text."""

    settings: dict[str, object]
    totals: Counts
    duration_s: float
    first_error: str | None
    #: Response body bytes, and per second.
    received: int
    received_per_s: float
    histogram: list[tuple[float, int]]
    #: ``(url, counts)`` per upstream of a balanced run, in the order of the URLs.
    upstreams: list[tuple[str, Counts]]
    #: Shares of one core over the measured run; the server's None if not embedded/unknown.
    client_cpu: float
    server_cpu: float | None
    interrupted: bool

    @classmethod
    def of(
        cls,
        config: BenchConfig,
        result: LoadResult,
        urls: Sequence[str],
        cpu: tuple[float, float | None],
    ) -> Summary:
        """Summarise the measured phase ``result`` of ``config`` against ``urls``."""
        recorder, elapsed = result.recorder, result.elapsed
        ordered = sorted(recorder.latencies)
        upstreams = [
            (url, Counts.of(upstream, sorted(upstream.latencies), elapsed))
            for url, upstream in zip(urls, result.upstreams, strict=False)
        ]
        return cls(
            settings=config.settings() | {"urls": list(urls)},
            totals=Counts.of(recorder, ordered, elapsed),
            duration_s=elapsed,
            first_error=recorder.first_error,
            received=recorder.received,
            received_per_s=recorder.received / elapsed if elapsed > 0 else 0.0,
            histogram=_histogram(ordered),
            upstreams=upstreams,
            client_cpu=cpu[0],
            server_cpu=cpu[1],
            interrupted=result.interrupted,
        )

    @property
    def client_saturated(self) -> bool:
        """True when the client used more than :data:`CPU_WARNING` of a core."""
        return self.client_cpu > CPU_WARNING

    def to_json(self) -> dict[str, object]:
        """The ``--json`` output (schema: ``docs/bench-schema.json``)."""
        totals = self.totals.to_json()
        return {
            "version": trio_pool.__version__,
            "settings": self.settings,
            "requests": totals["requests"],
            "errors": totals["errors"],
            "duration_s": round(self.duration_s, 6),
            "rps": totals["rps"],
            "transfer": {
                "body_bytes": self.received,
                "body_bytes_per_s": round(self.received_per_s, 1),
            },
            "latency_ms": totals["latency_ms"],
            "histogram": [
                {"le_ms": None if math.isinf(edge) else edge, "count": count}
                for edge, count in self.histogram
            ],
            "status_counts": totals["status_counts"],
            "error_counts": totals["error_counts"],
            "first_error": self.first_error,
            "upstreams": [{"url": url, **counts.to_json()} for url, counts in self.upstreams],
            "cpu": {
                "client": round(self.client_cpu, 3),
                "server": None if self.server_cpu is None else round(self.server_cpu, 3),
                "client_saturated": self.client_saturated,
            },
            "interrupted": self.interrupted,
        }

    def table(self, label: str) -> str:
        """The human-readable report; ``label`` names the target."""
        totals = self.totals
        rows = [("target", label), *self._setting_rows()]
        rows += [
            ("requests", str(totals.requests)),
            ("errors", str(totals.errors)),
            ("duration", f"{self.duration_s:.3f} s"),
            ("req/s", f"{totals.rps:,.1f}"),
            ("transfer", f"{self.received:,} bytes of bodies, {_size(self.received_per_s)}/s"),
            ("latency ms", _latency_text(totals.latency_ms)),
            (
                "statuses",
                ", ".join(f"{code}: {n}" for code, n in totals.status_counts.items()) or "-",
            ),
        ]
        if totals.error_counts:
            kinds = ", ".join(f"{kind}: {n}" for kind, n in totals.error_counts.items())
            rows.append(("error kinds", kinds))
            rows.append(("first error", self.first_error or "-"))
        for url, upstream in self.upstreams:
            # The table keeps each upstream to one line; the JSON has every percentile.
            latency = upstream.latency_ms
            shown = {key: latency[key] for key in ("p50", "p99", "max")}
            rows.append(
                (
                    "upstream",
                    f"{url}  {upstream.requests} requests, {upstream.errors} errors, "
                    f"{upstream.rps:,.1f} req/s, ms {_latency_text(shown)}",
                )
            )
        rows.append(("cpu", self._cpu_text()))
        if self.client_saturated:
            rows.append(
                (
                    "warning",
                    f"the client used {self.client_cpu:.0%} of a core: it may be the "
                    "bottleneck (compare the server's share; try -p, or fewer --concurrency)",
                )
            )
        rate = self.settings["rate"]
        if isinstance(rate, float) and totals.rps < 0.9 * rate and not self.interrupted:
            rows.append(
                (
                    "warning",
                    f"{totals.rps:,.0f} req/s of the --rate {rate:g}: the requests in flight "
                    "were capped by --concurrency (or the client was busy); latency counts "
                    "the wait",
                )
            )
        if self.interrupted:
            rows.append(("interrupted", "Ctrl-C: the run was cut short; this is what ran"))
        lines = [f"{name:<12} {value}" for name, value in rows]
        if self.histogram:
            lines.append("histogram    latency ms (upper edge), log buckets")
            lines += self._histogram_lines()
        return "\n".join(lines)

    def _setting_rows(self) -> list[tuple[str, str]]:
        settings = self.settings
        amount = (
            f"{settings['requests']} requests"
            if settings["requests"] is not None
            else f"{settings['duration_s']:g} s"
        )
        rate = settings["rate"]
        load = (
            f"{settings['method']}, {amount}, concurrency {settings['concurrency']}, "
            f"connections {settings['connections'] or 'unlimited'}, "
            f"pipelining {settings['pipelining']}, "
            + (f"rate {rate:g}/s (open loop)" if isinstance(rate, float) else "closed loop")
        )
        options = [f"timeout {settings['timeout_s']:g} s", f"warm-up {settings['warmup_s']:g} s"]
        headers = settings["headers"]
        assert isinstance(headers, list)
        if headers:
            options.append("headers " + "; ".join(f"{name}: {value}" for name, value in headers))
        if settings["body_bytes"]:
            options.append(f"body {settings['body_bytes']} bytes")
        if settings["cacert"] is not None:
            options.append(f"CA {settings['cacert']}")
        if settings["insecure"]:
            options.append("TLS unverified (--insecure)")
        return [("load", load), ("options", ", ".join(options))]

    def _cpu_text(self) -> str:
        text = f"client {self.client_cpu:.0%} of a core"
        if self.server_cpu is not None:
            text += f", embedded server {self.server_cpu:.0%}"
        return text

    def _histogram_lines(self) -> list[str]:
        most = max(count for _, count in self.histogram)
        total = sum(count for _, count in self.histogram)
        lines = []
        for edge, count in self.histogram:
            bar = "#" * math.ceil(count / most * _HISTOGRAM_WIDTH) if count else ""
            label = "inf" if math.isinf(edge) else f"{edge:g}"
            lines.append(
                f"  {label:>9} |{bar:<{_HISTOGRAM_WIDTH}}| {count:>9,} {count / total:6.1%}"
            )
        return lines


def _latency_text(latency: dict[str, float | None]) -> str:
    return "  ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in latency.items())


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:,.1f} {unit}" if unit != "B" else f"{count:,.0f} B"
        count /= 1024
    return f"{count:,.1f} GiB"
