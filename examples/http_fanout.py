"""Fan out: fetch many paths at once through one ``Pool``, each with its own deadline.

Run it from the repository root (it needs nothing but trio_pool; the server is its own)::

    python examples/http_fanout.py

Theory of operation: the script starts a scripted HTTP/1.1 server on 127.0.0.1
(``trio_pool.testing.serve_h11``) that serves ``/items/<n>``: most items exist, a few are
missing (404), a few never answer (a stuck backend) and a few hang up mid-request. It then
fetches every path through one ``Pool(connections=8)``: at most eight connections are ever
open to the server, however many requests there are.

The requests run in a nursery of eight worker tasks that take paths from a memory channel,
one request at a time each. One task per path would work too (the pool queues the requests
that find every connection busy, first come, first served), but each request has a deadline
of its own (``trio.move_on_after``), and a deadline that starts while a request is still
queued behind two hundred others measures the backlog, not the server. With as many workers
as connections, each request's deadline covers its own exchange. A cancelled request is
taken out of the pool's queue, or its connection is closed and replaced if it was
mid-response, and the other requests never notice. Failures are counted per kind instead of
crashing the nursery, and the pool's statistics show it idle again at the end.
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
PER_REQUEST_TIMEOUT = 0.5


def behaviour(item: int) -> str:
    """What the server does for ``/items/<item>``: one of ok, missing, stuck, hang-up."""
    if item % 50 == 17:
        return "stuck"
    if item % 50 == 33:
        return "hang-up"
    if item % 10 == 9:
        return "missing"
    return "ok"


#: How a request for an item ends, given what the server does for it.
EXPECTED_OUTCOME = {
    "ok": "status 200",
    "missing": "status 404",
    "stuck": "timed out",
    "hang-up": "error: SocketError",
}


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
    """Fetches every path, ``CONNECTIONS`` at a time; returns how many ended which way."""
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

    async def worker(paths: trio.MemoryReceiveChannel[int]) -> None:
        async for item in paths:  # until the channel is closed and empty
            await fetch(item)

    send, receive = trio.open_memory_channel[int](0)
    async with trio.open_nursery() as nursery:
        for _ in range(CONNECTIONS):
            nursery.start_soon(worker, receive)
        async with send:  # closing it ends the workers' loops
            for item in range(PATHS):
                await send.send(item)
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

        # The script's own check, so that running it is a test: each path ended as its
        # server behaviour implies (so every failure stayed with its own request), and
        # nothing is left in the pool.
        expected = collections.Counter(EXPECTED_OUTCOME[behaviour(n)] for n in range(PATHS))
        if outcomes != expected or pool.statistics().size != 0:
            print(f"unexpected: {dict(outcomes)} instead of {dict(expected)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
