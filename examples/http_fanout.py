"""Fan out: fetch many paths at once through one ``Pool``, each with its own deadline.

Run it from the repository root (it needs nothing but trio_pool; the server is its own)::

    python examples/http_fanout.py

Theory of operation: the script starts a scripted HTTP/1.1 server on 127.0.0.1
(``trio_pool.testing.serve_h11``) that serves ``/items/<n>``: most items exist, a few are
missing (404), a few never answer (a stuck backend) and a few hang up mid-request. It then
starts one task per path in a nursery. The tasks share one ``Pool(connections=8)``: at most
eight connections are ever open, and the requests that find them all busy wait in the pool's
FIFO queue, so the nursery may start as many tasks as there are paths without flooding the
server. Each task bounds its own request with ``trio.move_on_after``: a cancelled request is
taken out of the queue, or its connection is closed and replaced if it was mid-response, and
the other requests never notice. Failures are counted per kind instead of crashing the
nursery, and the pool's statistics show it idle again at the end.
"""

from __future__ import annotations

import collections
import sys

import trio

import trio_pool
from trio_pool.testing import ServerConnection, ServerRequest, serve_h11

#: How many paths to fetch, every one in a task of its own.
PATHS = 200
#: The most connections the pool opens to the server.
CONNECTIONS = 8
#: Each request's own deadline, in seconds.
PER_REQUEST_TIMEOUT = 0.25


def behaviour(item: int) -> str:
    """What the server does for ``/items/<item>``: one of ok, missing, stuck, hang-up."""
    if item % 50 == 17:
        return "stuck"
    if item % 50 == 33:
        return "hang-up"
    if item % 10 == 9:
        return "missing"
    return "ok"


async def items_server(request: ServerRequest, conn: ServerConnection) -> None:
    """The server's script, called once per request."""
    item = int(request.target.rsplit("/", 1)[1])
    what = behaviour(item)
    if what == "stuck":
        await trio.sleep_forever()  # the client's deadline has to deal with this one
    elif what == "hang-up":
        # No response at all. The pool retries a GET that failed this way on a reused
        # connection once, on a new one (the server may just have closed an idle socket);
        # that one hangs up too, and the caller gets a SocketError.
        await conn.close()
    elif what == "missing":
        await conn.respond(404, body=b"no such item")
    else:
        await trio.sleep(0.002)  # some work, so that requests overlap
        await conn.respond(200, headers=[("content-type", "text/plain")], body=b"item %d" % item)


async def fetch_all(pool: trio_pool.Pool) -> collections.Counter[str]:
    """Fetches every path concurrently; returns how many ended which way."""
    outcomes: collections.Counter[str] = collections.Counter()

    async def fetch(item: int) -> None:
        with trio.move_on_after(PER_REQUEST_TIMEOUT):
            try:
                response = await pool.request("GET", f"/items/{item}")
            except trio_pool.TrioPoolError as exc:  # e.g. SocketError for the hang-ups
                outcomes[f"error: {type(exc).__name__}"] += 1
            else:
                # A 404 is an answer, not an exception; raise_for_status() would make it one.
                outcomes[f"status {response.status}"] += 1
            return
        outcomes["timed out"] += 1

    async with trio.open_nursery() as nursery:
        for item in range(PATHS):
            nursery.start_soon(fetch, item)
    return outcomes


async def main() -> int:
    async with (
        serve_h11(items_server) as server,
        trio_pool.Pool(server.origin, connections=CONNECTIONS) as pool,
    ):
        start = trio.current_time()
        outcomes = await fetch_all(pool)
        elapsed = trio.current_time() - start
        print(f"fetched {PATHS} paths in {elapsed:.2f} s through at most {CONNECTIONS} connections")
        for outcome, count in sorted(outcomes.items()):
            print(f"  {outcome:<22} {count:4}")
        print(f"  connections the server accepted: {server.connections}")
        print(f"  pool afterwards: {pool.statistics()}")

        # The script's own check, so that running it is a test: every path is accounted for,
        # each kind of failure stayed with its own request, and nothing is left in the pool.
        expected = collections.Counter(behaviour(item) for item in range(PATHS))
        stats = pool.statistics()
        if (
            outcomes["status 200"] != expected["ok"]
            or outcomes["status 404"] != expected["missing"]
            or outcomes["timed out"] != expected["stuck"]
            or sum(outcomes.values()) != PATHS
            or stats.size != 0
        ):
            print(f"unexpected outcomes: {dict(outcomes)}, {stats}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
