"""Running ``python -m trio_pool bench`` as a user would, and checking what it prints.

Shared by the tests of ``tests/cli``: the subprocess (with this source tree first on its
``PYTHONPATH``), a bound on its run time, and the checks every ``--json`` output must pass.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_pool

PACKAGE_PARENT = str(Path(trio_pool.__file__).resolve().parent.parent)
JSON_KEYS = {
    "version",
    "settings",
    "requests",
    "errors",
    "duration_s",
    "rps",
    "transfer",
    "latency_ms",
    "histogram",
    "status_counts",
    "error_counts",
    "first_error",
    "upstreams",
    "cpu",
    "interrupted",
}
LATENCY_KEYS = {"p50", "p90", "p99", "p99.9", "max"}


def command(*args: str) -> list[str]:
    """The ``bench`` command line with ``args``."""
    return [sys.executable, "-m", "trio_pool", "bench", *args]


def env() -> dict[str, str]:
    """This environment, with the trio_pool under test first on the path."""
    path = os.pathsep.join(filter(None, [PACKAGE_PARENT, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


async def run(argv: list[str], limit: float = 30.0) -> Any:
    """Run ``argv`` to completion (killed after ``limit`` seconds: then the test fails)."""
    with trio.move_on_after(limit):  # on expiry, run_process kills the process
        return await trio.run_process(
            argv, capture_stdout=True, capture_stderr=True, check=False, env=env()
        )
    raise AssertionError(f"{' '.join(argv[2:])!r} did not finish within {limit} s")


def check_json(output: str) -> dict[str, Any]:
    """Parse one ``--json`` line and check what holds for every run."""
    assert output.count("\n") == 1
    result: dict[str, Any] = json.loads(output)
    assert set(result) == JSON_KEYS
    assert set(result["latency_ms"]) == LATENCY_KEYS
    latency = result["latency_ms"]
    if result["requests"]:
        ordered = [latency[key] for key in ("p50", "p90", "p99", "p99.9", "max")]
        assert ordered[0] > 0
        assert ordered == sorted(ordered)
    assert result["duration_s"] > 0
    assert result["rps"] == pytest.approx(
        result["requests"] / result["duration_s"], rel=0.01, abs=0.06
    )
    assert sum(result["status_counts"].values()) == result["requests"]
    assert sum(result["error_counts"].values()) == result["errors"]
    assert sum(bucket["count"] for bucket in result["histogram"]) == result["requests"]
    assert (result["first_error"] is None) == (result["errors"] == 0)
    return result


def table_rows(output: str) -> dict[str, str]:
    """The table's lines by their first word (the last line of a repeated word wins)."""
    return {line.split(None, 1)[0]: line for line in output.splitlines() if line.strip()}
