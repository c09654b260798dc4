"""A primary and two read replicas behind one ``BalancedPool``, routed by capability tags.

Run it from the repository root (it needs nothing but trio_pool; the servers are its own)::

    python examples/balanced_replicas.py

Theory of operation: the script starts three scripted HTTP/1.1 servers on 127.0.0.1
(``trio_pool.testing.serve_h11``), each answering with its own name: a primary and two
replicas. One ``BalancedPool`` holds one ``Pool`` per upstream; the primary is tagged
``("read", "write")`` and the replicas ``("read",)``. A request with ``capability="write"``
may only go to an upstream carrying that tag, so every write lands on the primary; a read
may go to any of the three, and weighted round-robin spreads the reads over them. The script
then takes a replica out of rotation (``remove_upstream``: graceful, its running requests
finish) as one would for maintenance, shows that reads keep flowing to the other two, adds
it back (``add_upstream``) and shows it taking reads again. Each phase prints how many
requests each upstream served, counted from the responses.
"""

from __future__ import annotations

import collections
import sys

import trio

import trio_pool
from trio_pool.testing import Script, ServerConnection, ServerRequest, serve_h11

#: Concurrent requests per phase.
READS = 60
WRITES = 20


def named(name: str) -> Script:
    """A server script that answers every request with ``name``, as a real upstream would
    answer with its data; here the name tells which upstream served the request."""

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        await trio.sleep(0.002)  # some work, so that concurrent requests overlap
        await conn.respond(200, body=name.encode())

    return script


async def spread(
    pool: trio_pool.BalancedPool, method: str, capability: str, count: int
) -> collections.Counter[str]:
    """Sends ``count`` concurrent requests; returns how many each upstream answered."""
    served: collections.Counter[str] = collections.Counter()

    async def one() -> None:
        body = b"new row" if method == "POST" else None
        response = await pool.request(method, "/rows", body=body, capability=capability)
        served[response.text()] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    return served


def show(phase: str, served: collections.Counter[str]) -> None:
    counts = ", ".join(f"{name}={count}" for name, count in sorted(served.items()))
    print(f"{phase:<32} {counts}")


async def main() -> int:
    async with (
        serve_h11(named("primary")) as primary,
        serve_h11(named("replica-1")) as replica_1,
        serve_h11(named("replica-2")) as replica_2,
        # Pool options (connections, timeouts, ...) apply to every upstream's Pool.
        trio_pool.BalancedPool([], connections=4) as pool,
    ):
        pool.add_upstream(primary.origin, capabilities=("read", "write"))
        pool.add_upstream(replica_1.origin, capabilities=("read",))
        pool.add_upstream(replica_2.origin, capabilities=("read",))

        writes = await spread(pool, "POST", "write", WRITES)
        show(f"{WRITES} writes:", writes)
        reads = await spread(pool, "GET", "read", READS)
        show(f"{READS} reads:", reads)

        pool.remove_upstream(replica_2.origin)  # e.g. for maintenance
        print(f"removed replica-2; upstreams now {len(pool.upstreams)}")
        reads_without = await spread(pool, "GET", "read", READS)
        show(f"{READS} reads without replica-2:", reads_without)

        pool.add_upstream(replica_2.origin, capabilities=("read",))
        print(f"added replica-2 back; upstreams now {len(pool.upstreams)}")
        reads_again = await spread(pool, "GET", "read", READS)
        show(f"{READS} reads with it back:", reads_again)
        print(f"pool afterwards: {pool.statistics()}")

        # The script's own check, so that running it is a test.
        problems = []
        if writes != {"primary": WRITES}:
            problems.append(f"writes went to {dict(writes)}")
        if set(reads) != {"primary", "replica-1", "replica-2"}:
            problems.append(f"reads did not reach every upstream: {dict(reads)}")
        if "replica-2" in reads_without:
            problems.append("a removed upstream served a read")
        if "replica-2" not in reads_again:
            problems.append("the upstream added back served no read")
        if problems:
            print("; ".join(problems), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
