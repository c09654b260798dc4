"""Fixtures for the PostgreSQL and Redis integration tests.

Theory of operation: ``postgres_server`` runs one throwaway cluster per test module (initdb
costs about a second; a cluster per test would dominate the run time). It is bootstrapped by
``examples/_pgserver.py`` (loaded by ``availability.py``), which runs the PostgreSQL binaries as the
unprivileged ``postgres`` account when we are root, binds 127.0.0.1 on a free port and keeps
that port and data directory across restarts, so a test can kill the server and bring it back.
The function-scoped ``postgres`` fixture restarts the server if an earlier test left it down,
and ``pool_role`` gives each test its own login role, so that counting that role's backends in
``pg_stat_activity`` sees exactly the test's own connections.

Missing binaries or pg-purepy skip these tests, unless ``TRIO_POOL_REQUIRE_POSTGRES=1`` (set by
CI): then they fail, so that CI cannot go green by silently skipping the integration suite.
That rule lives in ``availability.py``, shared with the test that runs the PostgreSQL example.
``redis_server`` runs one Debian ``redis-server`` per test (it starts in milliseconds); see
``redis.py`` and its ``TRIO_POOL_REQUIRE_REDIS=1``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .availability import import_pg_purepy, pgserver, require_postgres, required
from .redis import RedisServer, require_redis

_import_error = import_pg_purepy()
if _import_error is not None:  # pg-purepy needs Python >= 3.11, trio_pool supports 3.10
    if required():
        raise _import_error
    collect_ignore_glob = ["test_postgres*.py"]

    def pytest_report_header() -> str:
        return "PostgreSQL integration tests: not collected, pg-purepy cannot be imported"

else:
    from .pg import ConnectionTracker, superuser_fetch

_role_numbers = itertools.count()


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[Any]:
    """A running throwaway PostgreSQL server, shared by the tests of one module."""
    require_postgres()  # skips, or fails under TRIO_POOL_REQUIRE_POSTGRES=1
    # Stopped (SIGKILL as a last resort) and removed at teardown, whatever the tests did.
    with pgserver.throwaway_postgres() as server:
        yield server


@pytest.fixture
def postgres(postgres_server: Any) -> Any:
    """The module's server, guaranteed to be running when the test starts."""
    if not postgres_server.running:  # an earlier test killed it and failed before restarting
        postgres_server.start()
    return postgres_server


@pytest.fixture
async def pool_role(postgres: Any) -> str:
    """A fresh login role for this test's pool; its backends are the test's connections only."""
    role = f"pool_test_{os.getpid()}_{next(_role_numbers)}"
    # Identifiers cannot be bound parameters; the name is ours and plain ASCII.
    await superuser_fetch(postgres, f'CREATE ROLE "{role}" LOGIN')
    return role


@pytest.fixture
def tracker(postgres: Any, pool_role: str) -> ConnectionTracker:
    """An ``open=`` callable for the pool that connects as ``pool_role`` and counts connections."""
    return ConnectionTracker(
        address=postgres.host, port=postgres.port, user=pool_role, database=postgres.database
    )


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    """A ``redis-server`` child process on a free loopback port, killed after the test."""
    server = RedisServer(require_redis(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
