"""Memory per request queued behind a stalled ``trio_pool.Pool``, measured with tracemalloc.

A loopback server accepts the pool's one connection and never answers, so the first request
holds that connection forever and the next 10,000 wait in the pool's queue. The cost of a
queued request is what the pool adds for it: its queue entry, the wake-up machinery and the
coroutine frames of ``request()`` down to where it waits. To keep the caller's own task out
of the number, once the first request is on the wire the 10,000 callers are started and
parked on an event (snapshot A); then the event is set, they all call ``pool.request`` and
queue up (snapshot B, taken once
``statistics().queued`` says 10,000). ``(B - A) / 10,000`` is the pool's share per queued
request (**target: <= 1 KiB**); ``A`` over the task count is shown for reference (a parked
Trio task with its coroutine). Then everything is cancelled, and the pool must report itself
idle again (a missed target otherwise). tracemalloc counts Python allocations only (the
allocator's own overhead is not in it), which is the part the pool controls.
"""

from __future__ import annotations

import functools
import gc
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from _common import Options, Result, format_table, median

TITLE = "Bytes per request queued behind a stalled Pool (tracemalloc), 10,000 queued"

QUEUED = 10_000
TARGET_BYTES = 1024
TOP_SITES = 6
GUARD = 60.0
"""Time bound on one measurement (queueing 10,000 requests under tracemalloc takes ~1 s)."""


async def _stall(stream: trio.SocketStream) -> None:
    """The stalled server: hold the connection, read nothing, answer nothing."""
    async with stream:
        await trio.sleep_forever()


async def _until(condition: Callable[[], bool]) -> None:
    """Poll ``condition``: the pool's statistics have no event to wait on."""
    while not condition():  # noqa: ASYNC110
        await trio.sleep(0.01)


def _top_sites(before: tracemalloc.Snapshot) -> list[tuple[str, float]]:
    """The source lines that allocated the most since ``before``, in bytes per request."""
    ours = [tracemalloc.Filter(False, tracemalloc.__file__)]
    after = tracemalloc.take_snapshot().filter_traces(ours)
    diff = after.compare_to(before.filter_traces(ours), "lineno")
    root = Path(__file__).resolve().parent.parent
    return [
        (
            f"{os.path.relpath(stat.traceback[0].filename, root)}:{stat.traceback[0].lineno}",
            stat.size_diff / QUEUED,
        )
        for stat in diff[:TOP_SITES]
    ]


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def _measure() -> dict[str, Any]:
    from trio_pool import Pool

    result: dict[str, Any] = {}
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as server:
            serve = functools.partial(trio.serve_tcp, _stall, 0, host="127.0.0.1")
            listeners = await server.start(serve)
            port = listeners[0].socket.getsockname()[1]
            async with Pool(f"http://127.0.0.1:{port}", connections=1) as pool:
                gate = trio.Event()
                parked = 0

                async def caller() -> None:
                    nonlocal parked
                    parked += 1
                    await gate.wait()
                    await pool.request("GET", "/")

                async with trio.open_nursery() as callers:
                    # The request that holds the connection goes first, and is on the wire
                    # before anything is measured.
                    callers.start_soon(pool.request, "GET", "/")
                    await _until(lambda: pool.statistics().running >= 1)
                    before_tasks = _traced()
                    for _ in range(QUEUED):
                        callers.start_soon(caller)
                    await _until(lambda: parked == QUEUED)
                    parked_tasks = _traced()
                    snapshot = tracemalloc.take_snapshot()
                    gate.set()
                    await _until(lambda: pool.statistics().queued >= QUEUED)
                    queued = _traced()
                    result["top_sites"] = _top_sites(snapshot)
                    result["stats_queued"] = pool.statistics().queued
                    callers.cancel_scope.cancel()
                stats = pool.statistics()
                result["idle_after_cancel"] = (stats.queued, stats.pending, stats.running) == (
                    0,
                    0,
                    0,
                )
            server.cancel_scope.cancel()
    result["per_queued"] = (queued - parked_tasks) / QUEUED
    result["per_parked_task"] = (parked_tasks - before_tasks) / QUEUED
    return result


def run(options: Options) -> Result:
    reps = options.reps(quick=1, full=3)
    samples = []
    tracemalloc.start()
    try:
        for _ in range(reps):
            samples.append(trio.run(_measure))
    finally:
        tracemalloc.stop()
    per_queued = median([s["per_queued"] for s in samples])
    per_task = median([s["per_parked_task"] for s in samples])
    failures = []
    if per_queued > TARGET_BYTES:
        failures.append(f"{per_queued:,.0f} bytes per queued request > {TARGET_BYTES:,}")
    if not all(s["idle_after_cancel"] for s in samples):
        failures.append("the pool was not idle after every queued request was cancelled")
    table = format_table(
        ["", "bytes", "target"],
        [
            ["per queued request (the pool's share)", f"{per_queued:,.0f}", f"<= {TARGET_BYTES:,}"],
            ["per parked caller task (reference)", f"{per_task:,.0f}", ""],
        ],
    )
    sites = format_table(
        ["where the bytes of one queued request were allocated (last repetition)", "bytes"],
        [[where, f"{size:,.0f}"] for where, size in samples[-1]["top_sites"]],
    )
    text = "\n".join(
        [
            f"{QUEUED:,} requests queued behind one stalled connection; median of {reps}",
            "",
            table,
            "",
            sites,
        ]
    )
    data = {
        "queued": QUEUED,
        "repetitions": reps,
        "per_queued_bytes": per_queued,
        "per_parked_task_bytes": per_task,
        "target_bytes": TARGET_BYTES,
        "samples": samples,
    }
    return Result(name="http_memory", text=text, data=data, failures=failures)
