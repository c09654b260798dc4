"""Whether the PostgreSQL tests can run here, and what to do when they cannot.

One rule for every test that needs PostgreSQL (the integration suite, and the test that runs
``examples/postgres_pool.py``): it needs pg-purepy to be importable and Debian's server
binaries (``initdb``, ``pg_ctl``, ``postgres``) to be installed. When either is missing the
test is skipped, unless ``TRIO_POOL_REQUIRE_POSTGRES=1`` (set by CI), which makes it fail
instead, so that CI cannot go green by silently skipping them.

This module imports neither pg-purepy nor anything that does, so it can be imported to find
out whether pg-purepy is there. It also loads the throwaway-server bootstrap,
``examples/_pgserver.py``, by path: ``examples/`` is not a package and must not be put on
``sys.path`` for the whole test session.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

__all__ = [
    "import_pg_purepy",
    "load_example_helper",
    "pgserver",
    "require_postgres",
    "required",
    "skip_or_fail",
]

#: Set to ``1`` to turn "PostgreSQL is not available here" from a skip into a failure.
REQUIRE_VARIABLE = "TRIO_POOL_REQUIRE_POSTGRES"


def load_example_helper(name: str) -> ModuleType:
    """Load ``examples/<name>.py`` by path (``examples/`` is not a package)."""
    if name in sys.modules:  # already loaded (e.g. by a second conftest import)
        return sys.modules[name]
    path = Path(__file__).resolve().parents[2] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered before exec, as a normal import would do
    spec.loader.exec_module(module)
    return module


#: ``examples/_pgserver.py``.
pgserver: Any = load_example_helper("_pgserver")


def required() -> bool:
    """Whether a missing PostgreSQL must fail the run rather than skip its tests."""
    return os.environ.get(REQUIRE_VARIABLE) == "1"


def import_pg_purepy() -> ImportError | None:
    """Imports pg-purepy (undoing its logging side effects); returns the error if it cannot.

    pg-purepy needs Python >= 3.11 while trio_pool supports 3.10, so it may legitimately be
    absent. An ``ImportError`` is what ``import`` raises, not just a missing distribution:
    a pg-purepy too new for this Python also fails to import.
    """
    if "pg_purepy" in sys.modules:  # imported and tamed already
        return None
    try:
        import pg_purepy  # noqa: F401
    except ImportError as exc:
        return exc
    # Importing pg-purepy switched the root logger to DEBUG and pointed it at stderr, and
    # pg-purepy prints each query through structlog; undo both for the whole session.
    pgserver.quiet_pg_purepy()
    return None


def skip_or_fail(reason: str) -> NoReturn:
    """Skips the current test, or fails it when PostgreSQL is :func:`required`."""
    if required():
        pytest.fail(f"{REQUIRE_VARIABLE}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def require_postgres() -> None:
    """Skips (or fails) the current test unless pg-purepy imports and the binaries exist."""
    error = import_pg_purepy()
    if error is not None:
        skip_or_fail(f"pg-purepy cannot be imported ({error})")
    if pgserver.find_postgres_bin_dir() is None:
        skip_or_fail("PostgreSQL server binaries not found (initdb, pg_ctl, postgres)")
