"""The HTTP benchmark suite's machinery: servers, every client, the time caps, the targets.

Tiny measurements (a dozen requests), so these check that the suite works and counts right,
never how fast anything is: each client must fetch every byte of the 64 KiB body over https
with no error (the bare loops over plain http too), the generated nginx config must serve both
bodies on all four ports, a client that cannot get an answer must come back capped instead of
hanging the suite, and a saved report must give the targets' verdicts and the docs.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _clients  # noqa: E402
import _loops  # noqa: E402
import _report  # noqa: E402
import _servers  # noqa: E402
import _targets  # noqa: E402
import run  # noqa: E402
from _clients import Target  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def embedded() -> Iterator[_servers.Server]:
    with _servers.start("embedded") as server:
        yield server


def _target(server: _servers.Server, scheme: str, path: str, size: int) -> Target:
    cafile = server.cafile if scheme == "https" else None
    return Target(server.origins(scheme), path, size, cafile, server.pids)


@pytest.mark.parametrize("client", _clients.CLIENTS)
def test_every_client_fetches_every_byte_over_https(embedded: _servers.Server, client: str) -> None:
    target = _target(embedded, "https", _servers.LARGE_PATH, _servers.LARGE_SIZE)
    sample = _clients.measure(client, target, 3, 12, 1, 30.0)
    assert (sample.completed, sample.errors, sample.cut) == (12, 0, False)
    assert sample.rps > 0


def test_a_wrong_body_length_counts_as_an_error(embedded: _servers.Server) -> None:
    target = _target(embedded, "http", _servers.SMALL_PATH, _servers.SMALL_SIZE + 1)
    sample = _clients.measure(_clients.POOL, target, 2, 10, 1, 30.0)
    assert (sample.completed, sample.errors) == (10, 10)


def test_nginx_serves_both_bodies_on_all_four_ports() -> None:
    if _servers.nginx_binary() is None:
        # CI installs nginx and sets this variable, so there a missing nginx is a failure,
        # not a skip that would count as passing.
        if os.environ.get("TRIO_POOL_REQUIRE_NGINX") == "1":
            pytest.fail("TRIO_POOL_REQUIRE_NGINX=1 but nginx is not installed", pytrace=False)
        pytest.skip("nginx is not installed")
    with _servers.start("nginx") as server:
        assert server.kind == "nginx"
        assert len(server.pids) >= 2  # the master and its worker
        context = ssl.create_default_context(cafile=server.cafile)
        for scheme in ("http", "https"):
            for origin in server.origins(scheme):
                for path, size in ((_servers.SMALL_PATH, 12), (_servers.LARGE_PATH, 65536)):
                    with urllib.request.urlopen(origin + path, context=context) as response:
                        assert (response.status, len(response.read())) == (200, size)
        master = server.pids[0]
    assert _servers.cpu_seconds(master) is None  # stopped and reaped


@pytest.mark.parametrize("client", [_clients.POOL, _clients.HTTPX, _clients.URLLIB3])
def test_a_server_that_never_answers_gives_a_capped_sample(client: str) -> None:
    # A listening socket nobody accepts from: connects succeed (the kernel's backlog), no
    # request is ever answered. Covers the in-process, the child-process and the thread paths.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        origin = f"http://127.0.0.1:{silent.getsockname()[1]}"
        target = Target((origin, origin), "/", 12, None, ())
        sample = _clients.measure(client, target, 2, 10, 1, 0.3)
    assert sample.cut
    assert sample.completed == 0


def test_cli_compare_reads_the_bench_and_the_tools_units(embedded: _servers.Server) -> None:
    # benchmarks/cli_compare.py: the trio-pool line from a real (tiny) run, and wrk's units.
    import cli_compare

    url = embedded.origins("http")[0] + "/"
    line = cli_compare.trio_pool_bench(url, 2, 1, 0.3)
    assert " req/s  p99 " in line
    assert line.endswith("%)")
    assert "us/request  (bench's own: " in line
    assert [cli_compare._ms(text) for text in ("250.00us", "1.50ms", "2.00s")] == [0.25, 1.5, 2000]


@pytest.mark.parametrize("client", sorted(_loops.LOOPS))
@pytest.mark.parametrize(
    ("path", "size"),
    [(_servers.SMALL_PATH, _servers.SMALL_SIZE), (_servers.LARGE_PATH, _servers.LARGE_SIZE)],
)
def test_the_bare_loops_read_every_byte_over_plain_http(
    embedded: _servers.Server, client: str, path: str, size: int
) -> None:
    # Plain TCP is where the loops use Pool's raw socket path (https goes through the stream).
    sample = _clients.measure(client, _target(embedded, "http", path, size), 3, 12, 1, 30.0)
    assert (sample.completed, sample.errors, sample.cut) == (12, 0, False)


def test_the_fast_parser_reads_a_head_and_waits_for_the_rest() -> None:
    head = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 12\r\n\r\n"
    assert _loops.parse_head(head[:-2]) is None
    assert _loops.parse_head(head + b"hello") == (200, len(head), 12)
    with pytest.raises(RuntimeError, match="content-length"):
        _loops.parse_head(b"HTTP/1.1 204 No Content\r\n\r\n")


@pytest.mark.parametrize("gc_enabled", [True, False])
def test_a_sample_says_its_gc_mode_and_cpu_per_request(
    embedded: _servers.Server, gc_enabled: bool
) -> None:
    target = _target(embedded, "http", _servers.SMALL_PATH, _servers.SMALL_SIZE)
    sample = _clients.measure(_clients.POOL, target, 2, 20, 1, 30.0, gc_enabled=gc_enabled)
    assert sample.gc_enabled is gc_enabled
    assert sample.completed == 20
    assert 0 < sample.cpu_us < 1e6  # getrusage: microseconds of this process per request


def test_more_workers_than_connections_queue_in_the_pool(
    embedded: _servers.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # C=10,000 in miniature: the pool holds MAX_CONNECTIONS connections, the rest queue.
    monkeypatch.setattr(_clients, "MAX_CONNECTIONS", 3)
    target = _target(embedded, "http", _servers.SMALL_PATH, _servers.SMALL_SIZE)
    for client in (_clients.POOL, _clients.AIOHTTP):
        sample = _clients.measure(client, target, 40, 80, 1, 30.0)
        assert (sample.completed, sample.errors, sample.cut) == (80, 0, False)


def _sample(rps: float, cpu_us: float = 40.0) -> dict[str, object]:
    return {"rps": rps, "cpu_us": cpu_us, "completed": 100}


def _report_with(pool_rps: list[float], aiohttp_rps: list[float]) -> dict[str, Any]:
    key = _targets.cell_key
    cells = [
        {
            "scheme": "http",
            "body": "12 B",
            "concurrency": 10,
            "client": client,
            "rps": rps[0],
            "rps_gc_off": None,
            "cpu_us": 40.0,
            "cpu_us_gc_off": float("nan"),
            "p50_ms": 1.0,
            "p99_ms": 2.0,
            "capped": 0,
            "pool_ratio": None,
            "pipelined_ratio": None,
        }
        for client, rps in (("Pool", pool_rps), ("aiohttp", aiohttp_rps))
    ]
    http = {
        "server": "nginx",
        "requests": 100,
        "requests_10k": 1000,
        "repetitions": 3,
        "target_repetitions": 5,
        "guard_s": 1.0,
        "clients": ["Pool", "aiohttp"],
        "concurrencies": [10],
        "cells": cells,
        "samples": {
            key("http", "12 B", 10, "Pool"): [_sample(r) for r in pool_rps],
            key("http", "12 B", 10, "aiohttp"): [_sample(r) for r in aiohttp_rps],
        },
    }
    environment = {"date": "2026-12-04T12:00:00+00:00", "cpus": 2, "load_average": [0.1] * 3}
    return {"environment": environment, "mode": "full", "results": {"http": {"data": http}}}


def test_targets_are_checked_on_paired_ratios() -> None:
    # Repetition by repetition: 2.0, 1.0, 3.0 -> median 2.0, spread (3 - 1) / 2.
    outcomes = _targets.evaluate(_report_with([200, 100, 300], [100, 100, 100])["results"])
    by_name = {o.name: o for o in outcomes}
    ratio = by_name["Pool / aiohttp, http 12 B, C=10"]
    assert (ratio.value, ratio.spread, ratio.samples, ratio.met) == (2.0, 1.0, 3, True)
    assert by_name["Pool CPU per request, http 12 B, C=10"].met is True  # 40 µs <= 50
    assert by_name["Pool / aiohttp, http 12 B, C=100"].met is None  # not measured


def test_check_from_a_saved_run_exits_1_only_when_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps(_report_with([100, 100], [200, 200])))
    assert run.main(["--from-json", str(saved), "--check"]) == 0
    out = capsys.readouterr().out
    assert "Pool / aiohttp, http 12 B, C=10" in out
    assert "NOT MET" in out
    assert run.main(["--from-json", str(saved), "--check", "--strict"]) == 1


def test_the_docs_are_generated_from_a_saved_run(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{_report.README_START}\nold\n{_report.README_END}\nafter\n")
    written = _report.write(_report_with([300, 300, 300], [100, 100, 100]), tmp_path / "docs")
    assert tmp_path / "docs" / _report.TABLE in written
    targets = (tmp_path / "docs" / _report.TARGETS).read_text()
    assert "Pool / aiohttp, http 12 B, C=10" in targets
    assert "3.00" in targets
    text = readme.read_text()
    assert "old" not in text
    assert "| 10 | 300 | 100 |" in text
    assert text.startswith("before\n")
    assert text.endswith("after\n")


def test_the_analysis_pairs_gc_on_and_off_and_the_extra_target_repetitions() -> None:
    # A fabricated run: Pool and aiohttp (a target pair) got 5 GC-on repetitions, the h11 loop
    # 3; GC off 3 each. The table must show both columns, and the paired ratios must use the
    # common repetitions only.
    import http_pool
    from _common import Options

    def sample(rps: float, gc_enabled: bool = True) -> _clients.Sample:
        return _clients.Sample(rps, 1.0, 2.0, 100, 0, False, 0.5, 0.9, 40.0, gc_enabled)

    on = {
        ("http", "12 B", 10, "Pool"): [sample(r) for r in (300, 300, 300, 300, 300)],
        ("http", "12 B", 10, "aiohttp"): [sample(r) for r in (100, 150, 100, 200, 100)],
        ("http", "12 B", 10, "h11 loop"): [sample(r) for r in (600, 600, 600)],
    }
    off = {cell: [sample(2 * s.rps, False) for s in ss[:3]] for cell, ss in on.items()}
    raw = {
        "server": "nginx",
        "requests": 100,
        "requests_10k": 1000,
        "repetitions": 3,
        "target_repetitions": 5,
        "cells_measured": "all",
        "guard_s": 1.0,
        "clients": ["Pool", "h11 loop", "aiohttp"],
        "concurrencies": [10],
        "max_connections": 1000,
        "notes": [],
        "samples": on,
        "samples_gc_off": off,
    }
    result = http_pool._analyse(raw, Options(quick=True))
    rows = {row["client"]: row for row in result.data["cells"]}
    assert rows["Pool"]["rps"] == 300
    assert rows["Pool"]["rps_gc_off"] == 600
    assert rows["h11 loop"]["pool_ratio"] == 0.5  # paired over the 3 common repetitions
    assert rows["aiohttp"]["pool_ratio"] == 3.0  # median of 3, 2, 3, 1.5, 3
    assert "GC off" in result.text
    assert "Pool / aiohttp, http 12 B, C=10" in result.text
    assert any(f.startswith("Pool / h11 loop, http 12 B, C=10: 0.50") for f in result.failures)
    json.dumps(result.data)  # what --json saves


def test_a_run_without_the_http_benchmark_leaves_the_docs_alone(tmp_path: Path) -> None:
    report = {"environment": {"date": "2026-12-04"}, "results": {"resource_pool": {"data": {}}}}
    assert _report.write(report, tmp_path / "docs") == []
    assert not (tmp_path / "docs").exists()
