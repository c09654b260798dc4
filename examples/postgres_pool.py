"""trio_pool's main job: a pool of PostgreSQL connections, from start to crash to recovery.

Run it from the repository root (it needs Debian's ``postgresql`` package for the server
binaries, and ``pip install ".[examples]"`` for pg-purepy)::

    python examples/postgres_pool.py        # -v also shows trio_pool's DEBUG log

Theory of operation: the script starts a throwaway PostgreSQL server of its own (``initdb``
into a temporary directory, on a free port on 127.0.0.1; see ``_pgserver.py`` next to this
file), then opens ``ResourcePool(open=..., ping=..., min=2, max=5)`` around pg-purepy's
``open_database_connection``. That function is an async context manager whose connection must
be closed by the task that opened it; ``open=`` gives every connection a task of its own inside
the pool, so this structured API pools as is. The script then

1. runs a few hundred concurrent queries through at most five connections;
2. kills the server the hard way (``pg_ctl stop -m immediate``, i.e. a crash), shows that
   queries now fail while the pool itself stays healthy, restarts the server on the same port,
   and shows the pool recovering by itself on its backoff schedule;
3. ends the pool gracefully (every connection closed), and stops and removes the server.

It prints what it does and the pool's statistics along the way, and exits 0 on success.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from contextlib import AbstractAsyncContextManager

import trio
from _pgserver import PostgresServer, PostgresServerError, quiet_pg_purepy, throwaway_postgres
from pg_purepy import AsyncPostgresConnection, open_database_connection

from trio_pool import Backoff, ResourcePool

#: How many queries each batch runs, every one in a task of its own.
QUERIES = 300

Pool = ResourcePool[AsyncPostgresConnection]


async def ping(conn: AsyncPostgresConnection) -> None:
    """The pool runs this before handing a connection out; raising means "dead, replace it"."""
    await conn.fetch_one("SELECT 1")


async def run_batch(pool: Pool, count: int) -> tuple[float, set[int], int]:
    """Runs ``count`` concurrent tasks, each borrowing a connection for one query.

    Returns:
        The elapsed time, the backend PIDs that served the queries (one per pooled connection
        used) and the most connections the pool had allocated at any hand-out.
    """
    pids: set[int] = set()
    most_allocated = 0

    async def one(number: int) -> None:
        nonlocal most_allocated
        # Waits in FIFO order while all five connections are busy; the pool pings the
        # connection it hands out, and takes it back when the block ends.
        async with pool.acquire() as conn:
            most_allocated = max(most_allocated, pool.statistics().allocated)
            row = await conn.fetch_one("SELECT :n::int * :n::int, pg_backend_pid()", n=number)
            square, pid = row.data
            if square != number * number or not isinstance(pid, int):  # pragma: no cover
                raise AssertionError(f"unexpected row for {number}: {row.data!r}")
            pids.add(pid)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for number in range(count):
            nursery.start_soon(one, number)
    return trio.current_time() - start, pids, most_allocated


def report_batch(label: str, result: tuple[float, set[int], int]) -> None:
    """Prints one line about a :func:`run_batch`."""
    elapsed, pids, most_allocated = result
    print(
        f"{label}: {QUERIES} concurrent queries in {elapsed:.2f} s, all correct, served by "
        f"{len(pids)} connections (backend pids {sorted(pids)}); at most {most_allocated} allocated"
    )


async def demo(server: PostgresServer) -> None:
    """Everything that runs inside Trio: the pool, the queries, the crash and the recovery."""

    def connect() -> AbstractAsyncContextManager[AsyncPostgresConnection]:
        # Called by the pool for every new connection; trust authentication, no password.
        return open_database_connection(
            server.host, server.user, port=server.port, database=server.database
        )

    pool = ResourcePool(
        open=connect,
        ping=ping,
        min=2,  # kept open (and refilled) even when idle
        max=5,  # never more connections than this, however many tasks want one
        # After a failed connection attempt, retry after 0.05, 0.05, 0.1, 0.15, ... s, at most
        # every 0.5 s: a dead server is probed gently, a restarted one is found quickly.
        backoff=Backoff(min=0.05, max=0.5),
        # bail_after stays at its default of 0: if the very first connection fails (wrong
        # port, no server) every acquire fails at once with PoolBailedError. It only applies
        # until a connection has succeeded; after that the pool retries forever (step 2).
    )
    async with pool:
        async with pool.acquire() as conn:
            row = await conn.fetch_one("SELECT version()")
        print(f"connected: {row.data[0]}")
        report_batch("batch 1", await run_batch(pool, QUERIES))
        print(f"  {pool.statistics()}")

        # --- 2. a crash -------------------------------------------------------------------
        # Three queries are running when the server dies: they fail, in their own tasks only.
        running = trio.Semaphore(0)

        async def doomed_query() -> None:
            try:
                async with pool.acquire() as conn:
                    running.release()
                    # "SELECT 1 FROM": pg-purepy has no converter for pg_sleep's void result.
                    await conn.fetch_one("SELECT 1 FROM pg_sleep(30)")
            except Exception as exc:  # the server's goodbye, or the socket closing
                print(f"  a query in flight failed: {exc!r}")

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(doomed_query)
            for _ in range(3):
                await running.acquire()
            await trio.sleep(0.1)  # let the three queries reach the server
            print("killing the server (pg_ctl stop -m immediate: every backend dies at once)")
            await trio.to_thread.run_sync(server.stop, "immediate")
        # The failed queries' connections went back to the pool as if nothing had happened:
        # the pool finds out at the next hand-out, when each one's ping fails and it is thrown
        # away. New connections are refused, and the pool keeps retrying on its backoff, so an
        # acquire *waits* for the server to come back. Bound the wait as Trio code bounds
        # anything: with a cancel scope.
        with trio.move_on_after(1.0) as scope:
            try:
                async with pool.acquire() as conn:
                    await conn.fetch_one("SELECT 1")
                print("  unexpected: a query succeeded while the server was down")
            except Exception as exc:  # e.g. a connection error, if the pool reports it
                print(f"  a query while the server is down fails: {exc!r}")
        if scope.cancelled_caught:
            print("  a query while the server is down waits; gave up on it after 1 s")
        print(f"  {pool.statistics()}  (the dead connections are gone)")

        print("restarting the server on the same port")
        await trio.to_thread.run_sync(server.start)
        restarted = trio.current_time()
        async with pool.acquire() as conn:  # no reconfiguration: the pool finds it by itself
            await conn.fetch_one("SELECT 1")
        print(f"  the pool recovered {trio.current_time() - restarted:.2f} s after the restart")
        report_batch("batch 2", await run_batch(pool, QUERIES))
        print(f"  {pool.statistics()}")

        # --- 3. shutdown --------------------------------------------------------------------
        # Leaving the block would do the same; calling end() shows what it reports.
        errors = await pool.end()
        print(f"pool ended: every connection closed, {len(errors)} dispose errors")
        print(f"  {pool.statistics()}")


def main(argv: list[str] | None = None) -> int:
    """Starts the server, runs :func:`demo`, stops the server; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="show trio_pool's log")
    args = parser.parse_args(argv)
    quiet_pg_purepy()  # pg-purepy's import turned on DEBUG logging for everything; undo that
    if args.verbose:
        logging.basicConfig(format="  log: %(name)s: %(message)s")
        logging.getLogger("trio_pool").setLevel(logging.DEBUG)
    # A backend killed by an immediate shutdown says so in a WARNING notice before it dies,
    # which pg-purepy raises as a Python warning; here that is exactly what we asked for.
    warnings.filterwarnings("ignore", r"WARNING: \[code 57P01\]", UserWarning)

    try:
        with throwaway_postgres() as server:  # stopped and removed however we leave
            print(f"started a throwaway PostgreSQL server on {server.host}:{server.port}")
            trio.run(demo, server)
    except PostgresServerError as exc:  # includes "binaries not installed"
        print(f"postgres_pool: {exc}", file=sys.stderr)
        return 1
    print("server stopped and removed; done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
