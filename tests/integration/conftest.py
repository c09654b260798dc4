"""Fixtures for the PostgreSQL integration tests.

Theory of operation: ``postgres_server`` runs one throwaway cluster per test module (initdb
costs about a second; a cluster per test would dominate the run time). It is bootstrapped by
``examples/_pgserver.py`` (loaded through ``.pg``), which runs the PostgreSQL binaries as the
unprivileged ``postgres`` account when we are root, binds 127.0.0.1 on a free port and keeps
that port and data directory across restarts, so a test can kill the server and bring it back.
The function-scoped ``postgres`` fixture restarts the server if an earlier test left it down,
and ``pool_role`` gives each test its own login role, so that counting that role's backends in
``pg_stat_activity`` sees exactly the test's own connections.

Missing binaries skip these tests, unless ``TRIO_POOL_REQUIRE_POSTGRES=1`` (set by CI): then
they fail, so that CI cannot go green by silently skipping the integration suite.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest

try:
    import pg_purepy  # noqa: F401
except ImportError:  # pg-purepy needs Python >= 3.11, trio_pool supports 3.10
    if os.environ.get("TRIO_POOL_REQUIRE_POSTGRES") == "1":
        raise
    collect_ignore_glob = ["test_*.py"]

    def pytest_report_header() -> str:
        return "integration tests: not collected, pg-purepy is not installed"

else:
    from .pg import ConnectionTracker, pgserver, superuser_fetch

    # Importing pg-purepy switched the root logger to DEBUG and pointed it at stderr, and
    # pg-purepy prints each query through structlog; undo both for the whole session.
    pgserver.quiet_pg_purepy()

_role_numbers = itertools.count()


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[Any]:
    """A running throwaway PostgreSQL server, shared by the tests of one module."""
    if pgserver.find_postgres_bin_dir() is None:
        reason = "PostgreSQL server binaries not found (initdb, pg_ctl, postgres)"
        if os.environ.get("TRIO_POOL_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"TRIO_POOL_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
        pytest.skip(reason)
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
