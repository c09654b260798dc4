"""The bench report from known numbers: the CPU warning, the histogram's buckets, percentiles.

In-process and without I/O: a :class:`Recorder` is filled by hand and summarised, so every
figure of the table and the JSON can be predicted exactly.
"""

from __future__ import annotations

from trio_pool._cli._args import parse_args
from trio_pool._cli._load import LoadResult, Recorder
from trio_pool._cli._report import Summary


def _summary(latencies_ms: list[float], cpu: tuple[float, float | None], *options: str) -> Summary:
    recorder = Recorder(latencies=[ms / 1000 for ms in latencies_ms], received=1000)
    recorder.statuses[200] = len(latencies_ms)
    recorder.error("timeout", "first one", 2)
    result = LoadResult(recorder, (), 2.0, interrupted=False, fatal=None)
    config = parse_args(["bench", "http://127.0.0.1:8080/x", "-n", "1000", *options])
    return Summary.of(config, result, ["http://127.0.0.1:8080/x"], cpu)


def test_a_busy_client_is_warned_about() -> None:
    summary = _summary([1.0], (0.95, None))
    table = summary.table("http://127.0.0.1:8080/x")
    assert "cpu          client 95% of a core\n" in table
    assert "warning      the client used 95% of a core: it may be the bottleneck" in table
    cpu = summary.to_json()["cpu"]
    assert cpu == {"client": 0.95, "server": None, "client_saturated": True}


def test_an_idle_client_is_not_warned_about() -> None:
    summary = _summary([1.0], (0.9, 0.4))
    table = summary.table("x")
    assert "warning" not in table
    assert "cpu          client 90% of a core, embedded server 40%" in table
    assert summary.to_json()["cpu"] == {"client": 0.9, "server": 0.4, "client_saturated": False}


def test_histogram_buckets_are_log_spaced_with_inclusive_upper_edges() -> None:
    latencies = [0.3, 0.5, 0.50001, 0.9, 1.0, 7.0, 7.0, 7.0, 250_000.0]
    summary = _summary(latencies, (0.1, None))
    histogram = summary.to_json()["histogram"]
    assert histogram == [
        {"le_ms": 0.5, "count": 2},
        {"le_ms": 1.0, "count": 3},
        {"le_ms": 2.0, "count": 0},
        {"le_ms": 5.0, "count": 0},
        {"le_ms": 10.0, "count": 3},
        *({"le_ms": edge, "count": 0} for edge in [20.0, 50.0, 100.0, 200.0, 500.0]),
        *({"le_ms": edge, "count": 0} for edge in [1000.0, 2000.0, 5000.0, 10000.0]),
        *({"le_ms": edge, "count": 0} for edge in [20000.0, 50000.0, 100000.0]),
        {"le_ms": None, "count": 1},
    ]
    lines = summary.table("x").split("log buckets\n", 1)[1].splitlines()
    assert lines[0] == "        0.5 |" + "#" * 27 + " " * 13 + "|         2  22.2%"
    assert lines[1].startswith("          1 |" + "#" * 40 + "|         3  33.3%")
    assert lines[2].startswith("          2 |" + " " * 40 + "|         0   0.0%")
    assert lines[-1].startswith("        inf |")


def test_percentiles_are_nearest_rank() -> None:
    summary = _summary([float(n) for n in range(1, 1001)], (0.1, None))
    assert summary.totals.latency_ms == {
        "p50": 500.0,
        "p90": 900.0,
        "p99": 990.0,
        "p99.9": 999.0,
        "max": 1000.0,
    }
    assert summary.totals.rps == 500.0
    assert summary.received_per_s == 500.0
    assert summary.totals.error_counts == {"timeout": 2}
    assert summary.first_error == "first one"


def test_a_rate_not_reached_is_warned_about() -> None:
    latencies = [1.0] * 100  # 100 responses in 2 s: 50 req/s
    assert "warning" not in _summary(latencies, (0.1, None), "--rate", "55").table("x")
    table = _summary(latencies, (0.1, None), "--rate", "60").table("x")
    assert "warning      50 req/s of the --rate 60: the requests in flight were capped" in table
