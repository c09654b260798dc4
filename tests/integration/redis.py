"""Whether the Redis tests can run here, and the throwaway server they use.

The server is ``examples/_redisserver.py`` (shared with ``examples/redis_pool.py``), loaded by
path: ``examples/`` is not a package. When ``redis-server`` or coredis is missing the tests are
skipped, unless ``TRIO_POOL_REQUIRE_REDIS=1`` (set by CI), which makes them fail instead.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

import pytest

from .availability import load_example_helper

__all__ = ["REQUIRE_VARIABLE", "RedisServer", "require_redis"]

#: Set to ``1`` to turn "Redis is not available here" from a skip into a failure.
REQUIRE_VARIABLE = "TRIO_POOL_REQUIRE_REDIS"


_server: Any = load_example_helper("_redisserver")
#: ``examples/_redisserver.py``'s server class.
RedisServer: Any = _server.RedisServer


def _skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{REQUIRE_VARIABLE}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def require_redis() -> str:
    """Return the path of ``redis-server``; skip (or fail) if it or coredis is missing."""
    try:
        import coredis  # noqa: F401
    except ImportError as exc:
        _skip_or_fail(f"coredis cannot be imported ({exc})")
    binary = _server.find_redis_server()
    if binary is None:
        _skip_or_fail("redis-server not found")
    return str(binary)
