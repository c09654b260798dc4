"""Memory per queued request: ``Pool.request()`` calls waiting behind a stalled connection.

One ``Pool(connections=1)`` over in-memory streams (``trio_pool.testing.serve_memory``)
whose server never answers: the first request holds the only connection, then N more are
started, each in its own Trio task, and all wait in the pool's queue. ``tracemalloc``
measures what the N waiting requests allocated (after a full collection), per request.

Each waiting request is also a Trio task, which costs memory whatever the task waits for,
so the same is measured for N bare tasks parked in Trio (``wait_task_rescheduled``, the
cheapest wait) and the difference is the pool's own cost per queued request, the figure
the target applies to. Run alone: ``PYTHONPATH=. python benchmarks/http_memory.py [N]``
(not yet listed in ``run.py``'s ``BENCHMARKS``).
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Awaitable, Callable

import trio
import trio.testing
from _common import Options, Result

TITLE = "Memory per request queued in a Pool (tracemalloc), minus a bare parked Trio task's"

TARGET_BYTES = 2048  # the pool's own cost per queued request


async def _allocated_per_task(n: int, start: Callable[[trio.Nursery], None]) -> float:
    """Bytes allocated per task by ``n`` calls of ``start`` once all tasks are blocked."""
    async with trio.open_nursery() as nursery:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            for _ in range(n):
                start(nursery)
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        nursery.cancel_scope.cancel()
    return sum(stat.size_diff for stat in after.compare_to(before, "filename")) / n


async def _park() -> None:
    await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.SUCCEEDED)


async def _measure(n: int) -> tuple[float, float]:
    """(bytes per queued request, bytes per bare parked task)."""
    from trio_pool import Pool
    from trio_pool.testing import ServerConnection, ServerRequest, serve_memory

    async def never(request: ServerRequest, conn: ServerConnection) -> None:
        await trio.sleep_forever()

    bare = await _allocated_per_task(n, lambda nursery: nursery.start_soon(_park))
    async with (
        serve_memory(never) as server,
        Pool(server.origin, connector=server.connector, connections=1) as pool,
        trio.open_nursery() as holder,
    ):
        get: Callable[[], Awaitable[object]] = lambda: pool.request("GET", "/")  # noqa: E731
        holder.start_soon(get)  # takes the only connection, never answered
        await trio.testing.wait_all_tasks_blocked()
        queued = await _allocated_per_task(n, lambda nursery: nursery.start_soon(get))
        holder.cancel_scope.cancel()
    return queued, bare


def _text(n: int, queued: float, bare: float) -> str:
    return "\n".join(
        [
            f"{n:,} requests queued behind one stalled connection (in-memory streams)",
            f"allocated per queued request, its Trio task included: {queued:,.0f} B",
            f"a bare Trio task parked (wait_task_rescheduled):       {bare:,.0f} B",
            f"the pool's own cost per queued request:               {queued - bare:,.0f} B"
            f" (target < {TARGET_BYTES:,} B)",
        ]
    )


def run(options: Options) -> Result:
    n = 2_000 if options.quick else 10_000
    queued, bare = trio.run(_measure, n)
    own = queued - bare
    failures = [] if own < TARGET_BYTES else [f"{own:,.0f} B per queued request"]
    data = {"requests": n, "per_request_bytes": queued, "bare_task_bytes": bare, "own": own}
    return Result(name="http_memory", text=_text(n, queued, bare), data=data, failures=failures)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    print(_text(count, *trio.run(_measure, count)))
