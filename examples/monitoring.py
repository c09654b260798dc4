"""Watching a pool at work: its events, a statistics sampler and its DEBUG log.

Run it from the repository root (it needs nothing but trio_pool; the server is its own)::

    python examples/monitoring.py        # the log goes to stderr: 2>/dev/null hides it

Theory of operation: the script starts a scripted HTTP/1.1 server on 127.0.0.1
(``trio_pool.testing.serve_h11``) and wires up the three things a service would feed its
metrics and logs with:

* **events**: ``pool.on(event, callback)`` for ``connect``, ``disconnect``,
  ``connection_error`` and ``drain``. Callbacks are plain functions called from the pool's
  own tasks, so they only record (a counter, a line) and never block or await.
* **statistics**: a background task samples ``pool.statistics()`` (a cheap, frozen snapshot,
  no I/O) every few milliseconds, as a metrics exporter would, and keeps the peaks.
* **logging**: trio_pool logs lifecycle events at DEBUG under the ``trio_pool`` logger and
  never prints; the script turns that logger up to DEBUG.

Then it generates some traffic: a burst of requests larger than ``connections`` (requests
queue, connections open: ``connect``; the queue empties: ``drain``), a pause longer than
the keep-alive timeout (idle connections expire: ``disconnect`` with
``InformationalError("socket idle timeout")``), and a request to a port where nothing
listens (``connection_error``, and a ``ConnectError`` for the caller).
"""

from __future__ import annotations

import collections
import logging
import socket
import sys
from typing import Any

import attrs
import trio

import trio_pool
from trio_pool.testing import ServerConnection, ServerRequest, serve_h11

#: Requests in the burst, and the most connections the pool may open for it.
BURST = 40
CONNECTIONS = 4
#: Idle connections expire after this long (the server sends no Keep-Alive hint).
KEEP_ALIVE = 0.1
#: How often the sampler reads the statistics.
SAMPLE_EVERY = 0.005


async def ok(request: ServerRequest, conn: ServerConnection) -> None:
    await trio.sleep(0.005)  # some work, so that the burst queues up
    await conn.respond(200, body=b"ok")


def closed_origin() -> str:
    """An origin on 127.0.0.1 where nothing listens (a port that was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@attrs.define
class Monitor:
    """Collects what the events and the sampler report."""

    start: float
    events: collections.Counter[str] = attrs.Factory(collections.Counter)
    peaks: dict[str, int] = attrs.Factory(lambda: collections.defaultdict(int))
    samples: int = 0

    def listen(self, pool: trio_pool.Pool) -> None:
        """Registers a callback for each event on ``pool``."""
        for event in ("connect", "disconnect", "connection_error", "drain"):
            pool.on(event, lambda *args, event=event: self.record(event, *args))

    def record(self, event: str, origin: str, targets: list[Any], *error: BaseException) -> None:
        # Called by the pool: only bookkeeping here, never anything that blocks.
        self.events[event] += 1
        why = f" ({error[0]!r})" if error else ""
        print(f"  [{trio.current_time() - self.start:5.3f} s] {event} {origin}{why}")

    async def sample(self, pool: trio_pool.Pool) -> None:
        """Reads the pool's statistics forever; the caller cancels it."""
        while True:
            stats = pool.statistics()
            self.samples += 1
            for field, value in attrs.asdict(stats).items():
                self.peaks[field] = max(self.peaks[field], value)
            await trio.sleep(SAMPLE_EVERY)


async def main() -> int:
    monitor = Monitor(start=trio.current_time())
    async with (
        serve_h11(ok) as server,
        trio_pool.Pool(
            server.origin, connections=CONNECTIONS, keep_alive_timeout=KEEP_ALIVE
        ) as pool,
        trio_pool.Pool(closed_origin()) as unreachable,
        trio.open_nursery() as background,
    ):
        monitor.listen(pool)
        monitor.listen(unreachable)
        background.start_soon(monitor.sample, pool)

        print(f"a burst of {BURST} requests through {CONNECTIONS} connections:")
        async with trio.open_nursery() as burst:
            for _ in range(BURST):
                burst.start_soon(pool.request, "GET", "/")

        print(f"idle for {3 * KEEP_ALIVE:.1f} s, longer than the keep-alive timeout:")
        await trio.sleep(3 * KEEP_ALIVE)

        print("a request to a port where nothing listens:")
        try:
            await unreachable.request("GET", "/")
        except trio_pool.ConnectError as exc:
            print(f"  the caller got {exc!r}")

        background.cancel_scope.cancel()  # stop the sampler
        final = pool.statistics()

    peaks = ", ".join(f"{field}={value}" for field, value in monitor.peaks.items())
    print(f"sampler: {monitor.samples} samples; peaks: {peaks}")
    print(f"events: {dict(sorted(monitor.events.items()))}")
    print(f"at the end: {final}")

    # The script's own check, so that running it is a test: the connections the burst opened
    # all expired, exactly one connect failed, the queue drained and the pool is idle.
    events = monitor.events
    if not (
        1 <= events["connect"] <= CONNECTIONS
        and events["disconnect"] == events["connect"]
        and events["connection_error"] == 1
        and events["drain"] >= 1
        and monitor.peaks["queued"] > 0
        and final.connected == final.size == 0
    ):
        print("unexpected events or statistics", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # A service configures logging once, at start-up; trio_pool's records propagate to it.
    logging.basicConfig(format="  log: %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("trio_pool").setLevel(logging.DEBUG)
    sys.exit(trio.run(main))
