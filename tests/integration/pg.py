"""Small helpers for the PostgreSQL integration tests, and the throwaway-server bootstrap.

The bootstrap lives once, in ``examples/_pgserver.py``: the example imports it as a sibling
module (``python examples/postgres_pool.py`` puts ``examples/`` on ``sys.path``), and the
tests use that same file, loaded by path in ``availability.py`` and re-exported here as
``pgserver``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from pg_purepy import AsyncPostgresConnection, open_database_connection

from .availability import pgserver

#: Re-exported for the tests.
free_port = pgserver.free_port


async def ping(conn: AsyncPostgresConnection) -> None:
    """The pool's ``ping``: a round trip that raises when the connection is dead."""
    row = await conn.fetch_one("SELECT 1")
    if row.data != [1]:
        raise RuntimeError(f"SELECT 1 returned {row.data!r}")


class ConnectionTracker:
    """An ``open=`` callable that counts the connections it opened and closed.

    Test-side bookkeeping that does not trust the pool's own statistics: ``open_now`` is the
    number of pg-purepy connections whose context manager has been entered and not yet left.
    """

    def __init__(self, *, address: str, port: int, user: str, database: str) -> None:
        self.address = address
        self.port = port
        self.user = user
        self.database = database
        self.opened = 0
        self.closed = 0
        #: Exceptions that left a connection's context manager (a dead connection's close).
        self.close_errors: list[BaseException] = []

    @property
    def open_now(self) -> int:
        return self.opened - self.closed

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[AsyncPostgresConnection]:
        entered = False
        try:
            async with open_database_connection(
                self.address, self.user, port=self.port, database=self.database
            ) as conn:
                entered = True
                self.opened += 1
                yield conn
        except BaseException as exc:
            if entered:
                self.close_errors.append(exc)
            raise
        finally:
            if entered:
                self.closed += 1


async def superuser_fetch(server: Any, query: str, **params: Any) -> list[Any]:
    """Runs one query on a fresh superuser connection (never a pooled one) and returns the rows'
    values. A fresh connection each time: it must work right after a server restart."""
    async with open_database_connection(
        server.host, server.user, port=server.port, database=server.database
    ) as conn:
        return [row.data for row in await conn.fetch(query, **params)]


async def backend_count(server: Any, role: str) -> int:
    """How many server processes currently serve connections of ``role``."""
    rows = await superuser_fetch(
        server,
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE usename = :role AND backend_type = 'client backend'",
        role=role,
    )
    count: int = rows[0][0]
    return count


async def poll_until(
    check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 10
) -> None:
    """Polls ``check`` (sync or async) every 20 ms until it is true; fails naming ``what``.

    Only for state outside the pool that offers no notification (a server's backends, the pool
    refilling on its own timer); the pool's own events are awaited, never polled.
    """
    deadline = trio.current_time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if trio.current_time() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await trio.sleep(0.02)


async def wait_for_backend_count(
    server: Any, role: str, expected: int | Callable[[], int], timeout: float = 10
) -> None:
    """Waits until ``role`` has ``expected`` backends (a number, or a callable re-read at every
    poll, e.g. the tracker's live count). A backend exits asynchronously after its client sent
    Terminate or hung up, so the server's count lags the client side by a few milliseconds."""
    last: tuple[int, int] = (-1, -1)

    async def check() -> bool:
        nonlocal last
        want = expected() if callable(expected) else expected
        last = (await backend_count(server, role), want)
        return last[0] == last[1]

    try:
        await poll_until(check, f"the backends of role {role!r} to match", timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: last seen {last[0]}, expected {last[1]}") from None
