"""Shared test configuration.

Being here (the first directory of the test tree without an ``__init__.py``), this file
makes pytest put ``tests/`` on ``sys.path``, so every test module, in any subdirectory, can
``from _helpers import assert_idle`` (mypy finds it the same way, from ``tests/*.py``).

The HTTP suites run under both read modes of the request runner (``_dispatcher.py``):
``request()``'s fast mode (no cancel scope, socket-interrupted waits) and the general one.

Every test under ``tests/http``, ``tests/balanced``, ``tests/chaos`` (the HTTP soak) and
``tests/fuzz`` is parametrised with ``read_mode`` (``fast``/``general``); the fixture clears
``FAST_READS`` for the general mode before any dispatcher of the test is made.

The https tests share ``ca`` (a throwaway trustme CA per module) and ``server_context`` (a
server certificate for 127.0.0.1 issued by it); a module may define its own instead.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from trio_pool.http import _dispatcher

_BOTH_MODES = frozenset({"http", "balanced", "chaos", "fuzz"})


@pytest.fixture(autouse=True)
def read_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The read mode of ``request()`` in this test (``fast`` unless parametrised)."""
    mode: str = getattr(request, "param", "fast")
    monkeypatch.setattr(_dispatcher, "FAST_READS", mode == "fast")
    return mode


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    path = Path(metafunc.definition.path)
    if (
        "read_mode" in metafunc.fixturenames
        and path.parent.name in _BOTH_MODES
        and "resource" not in path.name
    ):
        metafunc.parametrize("read_mode", ["fast", "general"], indirect=True)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context
