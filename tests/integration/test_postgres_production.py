"""The production knobs of API.md §9 on a real PostgreSQL server: ``max_lifetime``, ``reset``
on return (``DISCARD ALL``), and ``expire_all()`` across a server restart.

Theory of operation: as in ``test_postgres_pool.py``, every pool opens pg-purepy connections
as the test's own role through a ``ConnectionTracker``, and the server's backend PID tells one
connection from another. Lifetimes age in real time here, as the server's connections do (a
virtual clock would also fire the pool's timeouts while it waits on real sockets), so they are
a fraction of a second; every wait is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from pg_purepy import AsyncPostgresConnection

from trio_pool import Backoff, ResourcePool

from .pg import ConnectionTracker, poll_until
from .test_postgres_pool import IMMEDIATE_SHUTDOWN_WARNING, backend_pid, make_pool

postgres = pytest.mark.postgres


async def discard_all(conn: AsyncPostgresConnection) -> None:
    """The reset of the how-to: the session back to a fresh connection's state."""
    await conn.execute("DISCARD ALL")


async def session_state(conn: AsyncPostgresConnection) -> tuple[int, str, object]:
    """The backend PID, a session setting and whether a temporary table exists."""
    row = await conn.fetch_one(
        "SELECT pg_backend_pid(), current_setting('application_name'), to_regclass('pg_temp.t')"
    )
    pid, name, table = row.data
    assert isinstance(pid, int)
    assert isinstance(name, str)
    return pid, name, table


async def dirty_the_session(pool: ResourcePool[AsyncPostgresConnection]) -> int:
    """A holder that leaves state behind, as careless code does; returns its backend PID."""
    async with pool.acquire() as conn:
        await conn.execute("SET application_name = 'left_behind'")
        await conn.execute("CREATE TEMPORARY TABLE t (x int)")
        return await backend_pid(conn)


@postgres
async def test_reset_on_return_gives_the_next_holder_a_clean_session(
    postgres: Any, tracker: ConnectionTracker
) -> None:
    with trio.fail_after(20):
        # Without a reset the next holder of the same backend inherits the state ...
        async with make_pool(tracker, min=1, max=1) as pool:
            pid = await dirty_the_session(pool)
            async with pool.acquire() as conn:
                assert await session_state(conn) == (pid, "left_behind", "t")
        # ... with DISCARD ALL on every release it gets the same backend, clean.
        async with make_pool(tracker, min=1, max=1, reset=discard_all) as pool:
            pid = await dirty_the_session(pool)
            async with pool.acquire() as conn:
                again, name, table = await session_state(conn)
            assert (again, table) == (pid, None)
            assert name != "left_behind"
            assert pool.statistics().allocated == 1  # a reset that succeeds keeps it
    assert tracker.open_now == 0


@postgres
async def test_a_failing_reset_removes_the_connection(
    postgres: Any, tracker: ConnectionTracker
) -> None:
    async def broken_reset(conn: AsyncPostgresConnection) -> None:
        await conn.execute("SELECT * FROM no_such_table")

    with trio.fail_after(20):
        async with make_pool(tracker, min=0, max=1, reset=broken_reset) as pool:
            async with pool.acquire() as conn:
                first = await backend_pid(conn)
            await poll_until(lambda: tracker.closed == 1, "the failed reset's connection closed")
            async with pool.acquire() as conn:
                assert await backend_pid(conn) != first
    assert tracker.opened == 2
    assert tracker.open_now == 0


@postgres
async def test_max_lifetime_retires_idle_and_held_connections(
    postgres: Any, tracker: ConnectionTracker
) -> None:
    with trio.fail_after(20):
        async with make_pool(tracker, min=1, max=1, max_lifetime=0.3, sync_interval=0.05) as pool:
            async with pool.acquire() as conn:
                idle_one = await backend_pid(conn)
            # Idle past its lifetime: retired by housekeeping, and min brings a new backend.
            await poll_until(lambda: tracker.closed >= 1, "the idle connection retired")
            async with pool.acquire() as conn:
                held_one = await backend_pid(conn)
                assert held_one != idle_one
                # Held past its lifetime: a holder is never interrupted; it is retired on
                # release, and the next holder gets a new backend.
                await trio.sleep(0.4)
                assert await backend_pid(conn) == held_one
            async with pool.acquire() as conn:
                assert await backend_pid(conn) not in (idle_one, held_one)
            assert pool.statistics().allocated <= 1
    assert tracker.open_now == 0


@postgres
@IMMEDIATE_SHUTDOWN_WARNING
async def test_expire_all_after_a_server_restart_serves_no_stale_connection(
    postgres: Any, tracker: ConnectionTracker
) -> None:
    # No ping: nothing else would notice the stale connections before a query fails on one,
    # so every query below succeeding is expire_all()'s doing.
    async with make_pool(
        tracker, min=3, max=3, ping=None, backoff=Backoff(min=0.05, max=0.3), bail_after=None
    ) as pool:
        with trio.fail_after(20):

            async def one_query() -> int:
                async with pool.acquire() as conn:
                    return await backend_pid(conn)

            async def concurrent_pids() -> set[int]:
                pids: set[int] = set()

                async def task() -> None:
                    async with pool.acquire() as conn:
                        pids.add(await backend_pid(conn))
                        await trio.sleep(0.05)  # all three held at once

                async with trio.open_nursery() as nursery:
                    for _ in range(3):
                        nursery.start_soon(task)
                return pids

            before = await concurrent_pids()
            assert len(before) == 3
            await trio.to_thread.run_sync(postgres.stop, "immediate")
            await trio.to_thread.run_sync(postgres.start)
            pool.expire_all()  # the failover script's call: every connection is from before
            after = await concurrent_pids()
            assert len(after) == 3
            assert after.isdisjoint(before)
            assert pool.statistics().allocated == 3
            await one_query()
    assert tracker.open_now == 0
