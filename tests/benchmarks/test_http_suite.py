"""The HTTP benchmark suite's machinery: servers, every client, and the time caps.

Tiny measurements (a dozen requests), so these check that the suite works and counts right,
never how fast anything is: each client must fetch every byte of the 64 KiB body over https
with no error, the generated nginx config must serve both bodies on all four ports, and a
client that cannot get an answer must come back capped instead of hanging the suite.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _clients  # noqa: E402
import _servers  # noqa: E402
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
