"""ResourcePool on a real database: PostgreSQL through pg-purepy, Trio all the way down.

Theory of operation: every pool here is ``ResourcePool(open=<pg-purepy connection context
manager>, ping=<SELECT 1>)``, so each connection lives in its own task inside the pool's
nursery, exactly as pg-purepy's structured API requires. Each test connects as its own role
(the ``pool_role`` fixture), which lets the server-side check ``pg_stat_activity`` count that
test's connections and nothing else; the ``tracker`` fixture counts the same thing from the
client side. Waiting is bounded everywhere (``trio.fail_after``) and real time only passes
where a real server has to stop, restart or let a backend exit.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
import trio.testing
from pg_purepy import AsyncPostgresConnection, open_database_connection
from pg_purepy.messages import BaseDatabaseError, RecoverableDatabaseError

from trio_pool import (
    AcquireTimeoutError,
    Backoff,
    Cluster,
    NoCapablePoolError,
    PoolBailedError,
    PoolDestroyedError,
    PoolEndingError,
    RequestTimeoutError,
    ResourcePool,
)

from .pg import (
    ConnectionTracker,
    free_port,
    ping,
    poll_until,
    superuser_fetch,
    wait_for_backend_count,
)

postgres = pytest.mark.postgres

# Errors pg-purepy raises when the server is gone: the server's own FATAL message, the socket
# closing under a query (anyio's EndOfStream / BrokenResourceError / ClosedResourceError) or a
# refused connection (OSError). Deliberately not trio_pool's errors: a pool that turns a dead
# server into, say, PoolBailedError after it has been live is a bug these tests must show.
SERVER_GONE_ERRORS = (
    BaseDatabaseError,
    OSError,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
)

# On `pg_ctl stop -m immediate` every backend sends a WARNING (57P01, "terminating connection
# due to immediate shutdown command") before dying, and pg-purepy turns a WARNING notice into
# `warnings.warn`. The suite runs with warnings as errors; here it is expected noise.
IMMEDIATE_SHUTDOWN_WARNING = pytest.mark.filterwarnings(
    r"ignore:WARNING. \[code 57P01\]:UserWarning"  # "." stands for ":", the field separator
)


def make_pool(tracker: ConnectionTracker, **options: Any) -> ResourcePool[AsyncPostgresConnection]:
    """The pool every test uses: min=2, max=5, pinged with SELECT 1; options override."""
    settings: dict[str, Any] = {"min": 2, "max": 5, "ping": ping, "ping_timeout": 5.0}
    settings.update(options)
    return ResourcePool(open=tracker, **settings)


async def run_queries(
    pool: ResourcePool[AsyncPostgresConnection], count: int
) -> tuple[dict[int, int], set[int], int]:
    """Runs ``count`` concurrent tasks that each acquire a connection and run one query.

    Returns:
        The results by task number, the backend PIDs that served them, and the highest
        ``allocated`` seen in ``statistics()`` while a connection was held.
    """
    results: dict[int, int] = {}
    pids: set[int] = set()
    most_allocated = 0

    async def one(number: int) -> None:
        nonlocal most_allocated
        async with pool.acquire() as conn:
            most_allocated = max(most_allocated, pool.statistics().allocated)
            row = await conn.fetch_one("SELECT :n::int * 2, pg_backend_pid()", n=number)
            doubled, pid = row.data
            assert isinstance(doubled, int)
            assert isinstance(pid, int)
            results[number] = doubled
            pids.add(pid)

    async with trio.open_nursery() as nursery:
        for number in range(count):
            nursery.start_soon(one, number)
    return results, pids, most_allocated


async def backend_pid(conn: AsyncPostgresConnection) -> int:
    """The PID of the server process behind ``conn``: tells connections apart."""
    pid = (await conn.fetch_one("SELECT pg_backend_pid()")).data[0]
    assert isinstance(pid, int)
    return pid


async def sleeping_backends(server: Any, role: str) -> int:
    """How many backends of ``role`` are inside a ``pg_sleep`` right now."""
    rows = await superuser_fetch(
        server,
        "SELECT count(*) FROM pg_stat_activity WHERE usename = :role"
        " AND state = 'active' AND query LIKE '%pg_sleep%'",
        role=role,
    )
    count: int = rows[0][0]
    return count


async def hold_connection(pool: ResourcePool[AsyncPostgresConnection], seconds: float) -> None:
    """Holds a pooled connection inside a server-side sleep, so that holders overlap."""
    async with pool.acquire() as conn:
        await conn.execute(f"SELECT 1 FROM pg_sleep({seconds})")


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    """Freezes a server process (SIGSTOP) for the block: a hung server, not a dead one. The
    kernel still completes TCP handshakes and buffers what we send; nothing ever answers."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


# --- A healthy server: sharing, limits, housekeeping ---


@postgres
async def test_superuser_connection_helper_works(postgres: Any) -> None:
    """Guards the fixture itself: the bootstrap's server is reachable as its superuser, over
    both TCP and the Unix socket in its temporary directory."""
    for address in (postgres.host, postgres.socket_path):
        async with open_database_connection(
            address, postgres.user, port=postgres.port, database=postgres.database
        ) as conn:
            row = await conn.fetch_one("SELECT current_user")
            assert row.data == [postgres.user]


@postgres
async def test_concurrent_queries_share_at_most_max_connections(
    postgres: Any, pool_role: str, tracker: ConnectionTracker
) -> None:
    server_side_peak = 0

    async with make_pool(tracker) as pool:
        with trio.fail_after(30):
            results, pids, most_allocated = await run_queries(pool, 50)

            # The server's view while the pool is warm: the backends of this test's role.
            async with pool.acquire() as conn:
                row = await conn.fetch_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = current_user"
                )
                server_side_peak = int(str(row.data[0]))

        assert results == {number: 2 * number for number in range(50)}
        assert 1 <= len(pids) <= 5, pids
        assert most_allocated <= 5
        assert 1 <= server_side_peak <= 5
        stats = pool.statistics()
        assert (stats.min, stats.max) == (2, 5)
        assert 2 <= stats.allocated <= 5
        assert stats.available == stats.allocated  # everything is back and idle
        assert stats.queued == 0
        assert stats.live
        assert pool.live
        assert tracker.open_now == stats.allocated

    # Leaving the block is a graceful end: every connection is closed, on both sides.
    assert tracker.open_now == 0
    await wait_for_backend_count(postgres, pool_role, 0)


@postgres
async def test_sql_error_propagates_and_connection_stays_usable(tracker: ConnectionTracker) -> None:
    async with make_pool(tracker, min=1, max=1) as pool:
        with trio.fail_after(10):
            with pytest.raises(RecoverableDatabaseError, match="division by zero"):
                async with pool.acquire() as conn:
                    await conn.fetch_one("SELECT 1 / 0")
            # The error was the query's, not the connection's: the same single connection is
            # released, passes its ping and serves the next query.
            async with pool.acquire() as conn:
                row = await conn.fetch_one("SELECT 41 + 1")
                assert row.data == [42]
        assert tracker.opened == 1


@postgres
async def test_idle_connections_age_out_down_to_min(
    postgres: Any, pool_role: str, tracker: ConnectionTracker
) -> None:
    async with make_pool(tracker, idle_timeout=0.3, sync_interval=0.05) as pool:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(hold_connection, pool, 0.1)
        assert pool.statistics().allocated == 5
        # Real time: idle_timeout is about the server's connections, which age in real time.
        await poll_until(lambda: pool.statistics().allocated == 2, "eviction down to min=2")
        await wait_for_backend_count(postgres, pool_role, 2)
        assert tracker.open_now == 2
        # Never below min, however long it stays idle.
        await trio.sleep(0.4)
        assert pool.statistics().allocated == 2
        assert tracker.open_now == 2


@postgres
async def test_cluster_routes_by_capability(postgres: Any) -> None:
    """Two pools on one server, as two roles (think primary and replica); a Cluster picks
    the pool by capability, which the server confirms through ``current_user``."""
    roles = {"writer": f"writer_{os.getpid()}", "reader": f"reader_{os.getpid()}"}
    for role in roles.values():
        await superuser_fetch(
            postgres,
            f'DO $$ BEGIN CREATE ROLE "{role}" LOGIN; EXCEPTION WHEN duplicate_object'
            " THEN NULL; END $$",
        )

    def tracker_for(role: str) -> ConnectionTracker:
        return ConnectionTracker(
            address=postgres.host, port=postgres.port, user=role, database=postgres.database
        )

    writer_pool = make_pool(tracker_for(roles["writer"]), capabilities=("read", "write"))
    reader_pool = make_pool(tracker_for(roles["reader"]), capabilities=("read",))
    async with writer_pool, reader_pool:
        cluster = Cluster([writer_pool, reader_pool])
        with trio.fail_after(10):
            for _ in range(3):
                async with cluster.acquire("write") as conn:
                    row = await conn.fetch_one("SELECT current_user::text")
                    assert row.data == [roles["writer"]]
            seen: set[str] = set()
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    async with cluster.acquire("read") as conn:
                        row = await conn.fetch_one(
                            "SELECT current_user::text, pg_sleep(0.05)::text"
                        )
                        seen.add(str(row.data[0]))

                for _ in range(12):  # more than one pool's max: both pools must serve reads
                    nursery.start_soon(read)
            assert seen == set(roles.values())
            with pytest.raises(NoCapablePoolError, match="admin"):
                async with cluster.acquire("admin"):
                    pass
            assert await cluster.end() == []


# --- A live pool whose server or connections fail ---


@postgres
@IMMEDIATE_SHUTDOWN_WARNING
async def test_recovers_after_server_killed_and_restarted(
    postgres: Any, pool_role: str, tracker: ConnectionTracker
) -> None:
    async with make_pool(
        tracker,
        backoff=Backoff(min=0.05, max=0.5),
        bail_after=None,  # a pool that has been live retries forever
        sync_interval=0.1,  # refill to min quickly after the restart
    ) as pool:
        with trio.fail_after(20):
            await run_queries(pool, 20)
        assert pool.live

        # Hold five connections inside long queries, then kill the server under them.
        query_errors: list[BaseException] = []

        async def long_query() -> None:
            try:
                async with pool.acquire() as conn:
                    await conn.fetch_one("SELECT 1 FROM pg_sleep(30)")
            except SERVER_GONE_ERRORS as exc:
                query_errors.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(long_query)

            async def all_sleeping() -> bool:
                return await sleeping_backends(postgres, pool_role) == 5

            # Polling the server is the only way to know the queries are running.
            await poll_until(all_sleeping, "five backends inside pg_sleep")
            opened_before_kill = tracker.opened
            await trio.to_thread.run_sync(postgres.stop, "immediate")
        # Every query in flight failed with an error (and the pool did not crash).
        assert len(query_errors) == 5, query_errors

        # While the server is down, no query succeeds: the dead idle connections fail their
        # pings and are removed, new connections are refused. Each attempt either raises or
        # is still waiting (the pool retries on its backoff) when we give up on it.
        outcomes: list[str] = []
        for _ in range(3):
            with trio.move_on_after(0.5):
                try:
                    async with pool.acquire() as conn:
                        await conn.fetch_one("SELECT 1")
                except SERVER_GONE_ERRORS as exc:
                    outcomes.append(type(exc).__name__)
                else:
                    pytest.fail("a query succeeded while the server was down")
                continue
            outcomes.append("timed out")
        assert len(outcomes) == 3, outcomes
        stats = pool.statistics()
        assert stats.available == 0, stats  # no dead connection is left idle
        assert stats.allocated <= 5, stats
        # Client side: every connection opened before the kill has been closed (its context
        # manager was left; for a dead socket that raises, which the pool must absorb).
        assert tracker.opened == opened_before_kill
        assert tracker.open_now == 0, (tracker.opened, tracker.closed)

        # Bring the server back on the same port and data directory: the pool recovers on its
        # backoff (<= 0.5 s between attempts) without being told.
        await trio.to_thread.run_sync(postgres.start)
        with trio.fail_after(20):
            async with pool.acquire() as conn:
                row = await conn.fetch_one("SELECT 1")
                assert row.data == [1]
            results, _, most_allocated = await run_queries(pool, 20)
        assert results == {number: 2 * number for number in range(20)}
        assert most_allocated <= 5

        # And min is kept: the pool refills to two open connections by itself.
        await poll_until(
            lambda: pool.statistics().allocated >= 2 and tracker.open_now >= 2,
            "the pool to refill to min=2",
        )
        await wait_for_backend_count(postgres, pool_role, lambda: tracker.open_now)

    assert tracker.open_now == 0


@postgres
async def test_backend_terminated_by_admin_is_replaced_transparently(
    postgres: Any, tracker: ConnectionTracker
) -> None:
    async with make_pool(tracker, min=1, max=1) as pool:
        with trio.fail_after(10):
            async with pool.acquire() as conn:
                victim_pid = await backend_pid(conn)
            # An administrator (or a failover script) kills that one backend; the client
            # side only learns it at its next round trip: the ping.
            await superuser_fetch(postgres, "SELECT pg_terminate_backend(:pid)", pid=victim_pid)
            async with pool.acquire() as conn:
                new_pid = await backend_pid(conn)
        assert new_pid != victim_pid
        assert tracker.opened == 2
        await poll_until(lambda: tracker.closed == 1, "the terminated connection to be closed")


@postgres
async def test_hung_connection_is_replaced_after_ping_timeout(
    postgres: Any, tracker: ConnectionTracker
) -> None:
    async with make_pool(tracker, min=1, max=2, ping_timeout=0.3) as pool:
        with trio.fail_after(10):
            async with pool.acquire() as conn:
                hung_pid = await backend_pid(conn)
        # That connection is idle now; freeze its backend. Its ping will never be answered.
        with frozen(hung_pid):
            start = trio.current_time()
            with trio.fail_after(10):
                async with pool.acquire() as conn:
                    new_pid = await backend_pid(conn)
            assert new_pid != hung_pid  # a fresh connection, not the hung one
            assert trio.current_time() - start >= 0.3  # it did wait for the ping timeout
        assert tracker.opened == 2
        await poll_until(lambda: tracker.closed == 1, "the hung connection to be closed")


@postgres
async def test_acquire_cancelled_during_ping_discards_the_connection(
    tracker: ConnectionTracker,
) -> None:
    async def slow_ping(conn: AsyncPostgresConnection) -> None:
        await conn.fetch_one("SELECT 1 FROM pg_sleep(0.3)")

    async with make_pool(tracker, min=1, max=1, ping=slow_ping) as pool:
        with trio.fail_after(10):
            async with pool.acquire() as conn:
                first_pid = await backend_pid(conn)
        # Cancel the next acquire while its ping is on the wire: the connection is in an
        # unknown protocol state (a reply is still coming), so the pool must not reuse it.
        with trio.move_on_after(0.1) as scope:
            async with pool.acquire():
                pytest.fail("the ping cannot have finished")
        assert scope.cancelled_caught
        assert pool.statistics().queued == 0
        with trio.fail_after(10):
            async with pool.acquire() as conn:
                new_pid = await backend_pid(conn)
        assert new_pid != first_pid
        assert tracker.opened == 2
        await poll_until(lambda: tracker.closed == 1, "the pinged connection to close")


@postgres
@IMMEDIATE_SHUTDOWN_WARNING
async def test_request_timeout_while_the_server_is_down(
    postgres: Any, tracker: ConnectionTracker
) -> None:
    try:
        async with make_pool(
            tracker, request_timeout=0.3, backoff=Backoff(min=0.05, max=0.1), bail_after=None
        ) as pool:
            with trio.fail_after(10):
                await run_queries(pool, 5)
            await trio.to_thread.run_sync(postgres.stop, "immediate")
            start = trio.current_time()
            with trio.fail_after(10), pytest.raises(RequestTimeoutError):
                async with pool.acquire():
                    pytest.fail("acquired a connection while the server is down")
            assert trio.current_time() - start >= 0.3
            assert pool.statistics().queued == 0
            assert pool.statistics().available == 0  # the dead ones were pinged and removed
    finally:
        await trio.to_thread.run_sync(postgres.start)


# --- A server that never comes up: bail_after ---


@postgres
@pytest.mark.parametrize("bail_after", [0.0, 0.3])
@pytest.mark.parametrize("target", ["closed-tcp-port", "missing-unix-socket"])
async def test_bail_after_fails_fast_when_server_never_comes_up(
    target: str, bail_after: float, tmp_path: Path
) -> None:
    # No server is needed: nothing listens on the port / the socket file does not exist.
    if target == "closed-tcp-port":
        tracker = ConnectionTracker(
            address="127.0.0.1", port=free_port(), user="nobody", database="postgres"
        )
        expected_cause: type[BaseException] = OSError  # anyio: "All connection attempts failed"
    else:
        socket_path = str(tmp_path / ".s.PGSQL.5432")
        tracker = ConnectionTracker(address=socket_path, port=5432, user="nobody", database="x")
        expected_cause = FileNotFoundError

    backoff = Backoff(min=0.05, max=0.1)
    before_start = trio.current_time()
    async with make_pool(tracker, backoff=backoff, bail_after=bail_after) as pool:
        with trio.fail_after(10), pytest.raises(PoolBailedError) as caught:
            async with pool.acquire():
                pytest.fail("acquired a connection from a server that does not exist")
        elapsed = trio.current_time() - before_start
        assert isinstance(caught.value.__cause__, expected_cause), repr(caught.value.__cause__)
        assert elapsed >= bail_after  # not before bail_after: it retried until then
        assert elapsed < bail_after + 2.0, elapsed  # but promptly after it
        assert not pool.live
        # A bailed pool stays bailed: the next acquire fails at once, with the same cause type.
        with trio.fail_after(1), pytest.raises(PoolBailedError) as again:
            await pool.checkout()
        assert isinstance(again.value.__cause__, expected_cause)
    assert tracker.opened == 0


@postgres
async def test_bail_after_when_server_rejects_every_connection(postgres: Any) -> None:
    # The server is up, but the database does not exist: the cause is the server's FATAL.
    tracker = ConnectionTracker(
        address=postgres.host, port=postgres.port, user=postgres.user, database="no_such_db"
    )
    async with make_pool(tracker, backoff=Backoff(min=0.05, max=0.1), bail_after=0.2) as pool:
        with trio.fail_after(10), pytest.raises(PoolBailedError) as caught:
            await pool.checkout()
    cause = caught.value.__cause__
    assert isinstance(cause, BaseDatabaseError), repr(cause)
    assert "no_such_db" in str(cause)


@postgres
async def test_hung_server_bails_with_acquire_timeout_cause(postgres: Any) -> None:
    tracker = ConnectionTracker(
        address=postgres.host, port=postgres.port, user=postgres.user, database=postgres.database
    )
    postmaster = postgres.postmaster_pid()
    assert postmaster is not None
    with frozen(postmaster):
        async with make_pool(tracker, acquire_timeout=0.3, bail_after=0) as pool:
            with trio.fail_after(10), pytest.raises(PoolBailedError) as caught:
                await pool.checkout()
            assert isinstance(caught.value.__cause__, AcquireTimeoutError), caught.value.__cause__
            # min=2 started two creations at once; the one still hanging when the first one
            # bailed the pool gives up at its own acquire_timeout, and no new one starts.
            await poll_until(lambda: pool.statistics().allocated == 0, "no creation in flight")
    assert tracker.opened == 0


# --- Shutdown: end(), remove/destroy, leaving the block ---


@postgres
async def test_end_closes_every_connection(
    postgres: Any, pool_role: str, tracker: ConnectionTracker
) -> None:
    async with make_pool(tracker) as pool:
        # Five tasks holding a connection at once: the pool grows to max.
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(hold_connection, pool, 0.2)
        assert pool.statistics().allocated == 5
        await wait_for_backend_count(postgres, pool_role, 5)

        with trio.fail_after(20):
            errors = await pool.end()
        assert errors == []
        assert tracker.open_now == 0
        assert tracker.close_errors == []
        # The server agrees: every backend of this pool is gone (they exit asynchronously).
        await wait_for_backend_count(postgres, pool_role, 0)
        assert pool.statistics().allocated == 0
        with pytest.raises((PoolDestroyedError, PoolEndingError)):
            await pool.checkout()
        # Idempotent: a second end() waits for the same shutdown and returns [].
        assert await pool.end() == []


@postgres
async def test_end_waits_for_checked_out_connection(
    postgres: Any, pool_role: str, tracker: ConnectionTracker
) -> None:
    async with make_pool(tracker) as pool:
        conn = await pool.checkout()
        ended = trio.Event()

        async def end() -> None:
            await pool.end()
            ended.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(end)
            # Everything, end() included, is now parked: end() waits for conn to come back.
            await trio.testing.wait_all_tasks_blocked()
            assert not ended.is_set()
            # The checked-out connection is still fully usable while the pool is ending.
            row = await conn.fetch_one("SELECT 7")
            assert row.data == [7]
            pool.release(conn)
            with trio.fail_after(10):
                await ended.wait()
    assert tracker.open_now == 0
    await wait_for_backend_count(postgres, pool_role, 0)


@postgres
@IMMEDIATE_SHUTDOWN_WARNING
async def test_end_while_the_server_is_down(postgres: Any, tracker: ConnectionTracker) -> None:
    try:
        async with make_pool(tracker) as pool:
            with trio.fail_after(10):
                await run_queries(pool, 10)
            opened = tracker.opened
            await trio.to_thread.run_sync(postgres.stop, "immediate")
            # Disposing a connection whose server is gone may fail (Terminate cannot be sent);
            # end() must still finish, close everything and report only such errors.
            with trio.fail_after(10):
                errors = await pool.end()
            assert all(isinstance(error, SERVER_GONE_ERRORS) for error in errors), errors
            assert tracker.opened == opened
            assert tracker.open_now == 0
            assert pool.statistics().allocated == 0
    finally:
        await trio.to_thread.run_sync(postgres.start)


@postgres
@pytest.mark.parametrize("how", ["remove", "destroy"])
async def test_remove_and_destroy_close_the_connection(
    postgres: Any, pool_role: str, tracker: ConnectionTracker, how: str
) -> None:
    async with make_pool(tracker, min=1, max=1) as pool:
        with trio.fail_after(10):
            async with pool.acquire() as conn:
                victim_pid = await backend_pid(conn)
                # remove: graceful, pg-purepy sends Terminate; destroy: the connection's task
                # is cancelled, its context manager closes the socket. Either way, the block's
                # exit must not release it, and its slot frees up at once.
                getattr(pool, how)(conn)
                assert pool.statistics().allocated <= 1
            # max=1, so this acquire can only succeed with a new connection.
            async with pool.acquire() as conn:
                new_pid = await backend_pid(conn)
        assert new_pid != victim_pid
        assert tracker.opened == 2
        await poll_until(lambda: tracker.closed == 1, "the removed connection to close")

        async def victim_gone() -> bool:
            rows = await superuser_fetch(
                postgres, "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid", pid=victim_pid
            )
            return bool(rows[0][0] == 0)

        await poll_until(victim_gone, "the server to see the connection close")
        await wait_for_backend_count(postgres, pool_role, 1)


@postgres
async def test_exception_in_block_destroys_connections(
    postgres: Any, pool_role: str, tracker: ConnectionTracker
) -> None:
    class Boom(Exception):
        pass

    async def use_pool_then_fail() -> None:
        async with make_pool(tracker) as pool:
            with trio.fail_after(20):
                await run_queries(pool, 10)
                await wait_for_backend_count(postgres, pool_role, lambda: tracker.open_now)
            assert tracker.open_now >= 2
            raise Boom

    with pytest.raises(Boom):  # as itself, not wrapped in an ExceptionGroup
        await use_pool_then_fail()
    # Destroyed promptly: the connections' context managers were exited (under cancellation)
    # and the server sees the sockets close.
    assert tracker.open_now == 0
    await wait_for_backend_count(postgres, pool_role, 0)


@postgres
async def test_cancelling_the_block_destroys_connections_in_use(
    tracker: ConnectionTracker,
) -> None:
    """An outer cancel scope fires while five tasks are inside queries on pooled connections.

    The cancellation must unwind the block as a cancellation, absorbed by ``move_on_after``.
    The pool's connection tasks are cancelled by the same scope at the same time as the
    borrowers; if a connection task closes its socket before its borrower has unwound, anyio
    turns the borrower's Cancelled into ClosedResourceError (its socket stream reports "closed"
    when the socket is gone by the time an exception reaches it), which escapes the scope.
    Whether that happens depends on Trio's (random) scheduling order, so ten borrowers make
    the race all but certain to show if the pool closes connections that are still in use.
    """
    start = trio.current_time()
    try:
        with trio.move_on_after(0.5) as scope:  # the "abort signal", from outside the pool
            async with make_pool(tracker, max=10) as pool, trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(hold_connection, pool, 10)
    except BaseException as exc:
        pytest.fail(
            f"the cancellation escaped as {exc!r}: the pool closed connections that were "
            "still checked out, before their borrowers had unwound"
        )
    assert scope.cancelled_caught
    assert trio.current_time() - start < 5  # promptly, not after the 10 s queries
    # Every connection is closed client side. The server only notices a vanished client when
    # its pg_sleep ends, so there is no server-side check here.
    assert tracker.opened == 10
    assert tracker.open_now == 0
