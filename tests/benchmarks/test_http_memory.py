"""The queued-request memory benchmark (benchmarks/http_memory.py) in miniature: the bytes
the pool adds per request waiting behind a stalled connection stay within issue #16's 1 KiB,
and cancelling the whole queue leaves the pool idle.

Unlike a throughput figure this one is deterministic (tracemalloc counts Python allocations,
whatever the machine's load), so the target itself is asserted. The sizes are CPython
3.11's (frames inside their coroutines)."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import pytest
import trio

BENCHMARKS = Path(__file__).resolve().parent.parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import http_memory  # noqa: E402

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        sys.implementation.name != "cpython" or sys.version_info < (3, 11),
        # 3.10 keeps a separate frame object beside each coroutine: other sizes altogether.
        reason="the target is set on CPython 3.11+'s frame and object sizes",
    ),
]


def test_a_queued_request_costs_at_most_1_kib_and_a_cancelled_queue_leaves_the_pool_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_memory, "QUEUED", 1_000)
    tracemalloc.start()
    try:
        result = trio.run(http_memory._measure)
    finally:
        tracemalloc.stop()
    assert result["stats_queued"] == 1_000
    assert result["idle_after_cancel"]
    assert 0 < result["per_queued"] <= http_memory.TARGET_BYTES, result["top_sites"]
