"""ResourcePool's production knobs on a real PostgreSQL server (API.md section 9, issue 17):
``max_lifetime`` replaces connections (new backend PIDs), ``reset`` with ``DISCARD ALL`` keeps
one holder's session state from the next, ``expire_all()`` after a server restart gives working
connections without a failed acquire, and a connection killed under its holder is detected (its
reset fails) and replaced.

Same setup as ``test_postgres_pool.py``: ``open=`` over pg-purepy, one login role per test
(``pool_role``) so ``pg_stat_activity`` sees only the test's own connections. Real time, every
wait bounded by ``trio.fail_after``.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from pg_purepy import AsyncPostgresConnection

from trio_pool import Backoff, ResourcePool

from .pg import ConnectionTracker, ping, poll_until, superuser_fetch, wait_for_backend_count

pytestmark = pytest.mark.postgres

# On `pg_ctl stop -m immediate` backends send a WARNING that pg-purepy turns into a warning.
IMMEDIATE_SHUTDOWN_WARNING = pytest.mark.filterwarnings(
    r"ignore:WARNING. \[code 57P01\]:UserWarning"
)


async def discard_all(conn: AsyncPostgresConnection) -> None:
    """The pool's ``reset``: forget every session state the last holder left."""
    await conn.execute("DISCARD ALL")


async def backend_pid(conn: AsyncPostgresConnection) -> int:
    pid = (await conn.fetch_one("SELECT pg_backend_pid()")).data[0]
    assert isinstance(pid, int)
    return pid


async def session_state(conn: AsyncPostgresConnection) -> tuple[str, bool]:
    """What a holder may leave behind: its ``statement_timeout`` and a temporary table."""
    timeout = (await conn.fetch_one("SHOW statement_timeout")).data[0]
    table = (await conn.fetch_one("SELECT to_regclass('leaky') IS NOT NULL")).data[0]
    assert isinstance(timeout, str)
    assert isinstance(table, bool)
    return timeout, table


async def dirty(conn: AsyncPostgresConnection) -> None:
    """Leave session state behind, as a careless holder does."""
    await conn.execute("SET statement_timeout = '4321ms'")
    await conn.execute("CREATE TEMPORARY TABLE leaky (x int)")


async def test_max_lifetime_replaces_connections_held_and_idle(
    tracker: ConnectionTracker,
) -> None:
    async with ResourcePool(
        open=tracker, min=1, max=1, max_lifetime=0.5, sync_interval=0.1, ping=ping
    ) as pool:
        with trio.fail_after(20):
            async with pool.acquire() as conn:
                first = await backend_pid(conn)
                await trio.sleep(0.6)  # past its lifetime while held: retired on release
            async with pool.acquire() as conn:
                second = await backend_pid(conn)
            assert second != first
            # Idle past its lifetime: the sweep retires it and refills min with a new one.
            await poll_until(lambda: tracker.opened >= 3, "the idle connection to be renewed")
            await poll_until(lambda: pool.statistics().available == 1, "min to be refilled")
            async with pool.acquire() as conn:
                third = await backend_pid(conn)
        assert third not in (first, second)
        assert pool.statistics().allocated <= 1
    assert tracker.open_now == 0


async def test_reset_runs_discard_all_so_session_state_does_not_leak(
    tracker: ConnectionTracker,
) -> None:
    async with ResourcePool(open=tracker, max=1, reset=discard_all) as pool:
        with trio.fail_after(20):
            async with pool.acquire() as conn:
                pid = await backend_pid(conn)
                default = await session_state(conn)
                await dirty(conn)
                assert await session_state(conn) == ("4321ms", True)
            async with pool.acquire() as conn:
                assert await backend_pid(conn) == pid  # the same connection...
                assert await session_state(conn) == default  # ...with nothing left over
                assert default == ("0", False)
        assert pool.statistics().reset_failures_total == 0
        assert tracker.opened == 1


async def test_without_reset_session_state_reaches_the_next_holder(
    tracker: ConnectionTracker,
) -> None:
    # The control for the test above: the state it clears is real.
    async with ResourcePool(open=tracker, max=1) as pool:
        with trio.fail_after(20):
            async with pool.acquire() as conn:
                await dirty(conn)
            async with pool.acquire() as conn:
                assert await session_state(conn) == ("4321ms", True)


async def test_a_connection_killed_under_its_holder_fails_its_reset_and_is_replaced(
    postgres: Any, tracker: ConnectionTracker
) -> None:
    async with ResourcePool(open=tracker, max=1, reset=discard_all, ping_timeout=5.0) as pool:
        with trio.fail_after(20):
            async with pool.acquire() as conn:
                victim = await backend_pid(conn)
                await superuser_fetch(postgres, "SELECT pg_terminate_backend(:pid)", pid=victim)
                await poll_until(lambda: _gone(postgres, victim), "the backend to exit")
            # The reset on release found it dead: removed, never handed out again.
            await poll_until(
                lambda: pool.statistics().reset_failures_total == 1, "the reset to fail"
            )
            async with pool.acquire() as conn:
                assert await backend_pid(conn) != victim
                assert (await conn.fetch_one("SELECT 1")).data == [1]
        assert tracker.opened == 2


async def _gone(postgres: Any, pid: int) -> bool:
    rows = await superuser_fetch(
        postgres, "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid", pid=pid
    )
    return bool(rows[0][0] == 0)


@IMMEDIATE_SHUTDOWN_WARNING
async def test_expire_all_after_a_server_restart_gives_working_connections_at_once(
    postgres: Any, pool_role: str, tracker: ConnectionTracker
) -> None:
    # No ping: without expire_all() the next acquire would get a dead connection.
    async with ResourcePool(
        open=tracker,
        min=2,
        max=5,
        reset=discard_all,
        backoff=Backoff(min=0.05, max=0.5),
        bail_after=None,
    ) as pool:
        with trio.fail_after(30):
            await poll_until(lambda: pool.statistics().available == 2, "min=2 to be open")
            async with pool.acquire() as conn:
                before = await backend_pid(conn)
            await trio.to_thread.run_sync(postgres.stop, "immediate")
            await trio.to_thread.run_sync(postgres.start)
            pool.expire_all()  # the failover signal: nothing opened before is reused

            pids: set[int] = set()

            async def query() -> None:
                async with pool.acquire() as conn:  # never fails: every connection is new
                    pids.add(await backend_pid(conn))

            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(query)
        assert before not in pids
        assert 1 <= len(pids) <= 5
        assert pool.statistics().allocated <= 5
        await wait_for_backend_count(postgres, pool_role, lambda: tracker.open_now)
