"""A throwaway Redis server for the Redis integration tests: Debian's ``redis-server`` run as a
child process on a free loopback port, with its config in a temporary directory.

Theory of operation
-------------------
:class:`RedisServer` owns one child process at a time. :meth:`RedisServer.start` picks the port
once (a free loopback port, bound and released) and writes ``redis.conf`` (no persistence, no
protected mode, loopback only) into its directory; a restart reuses both, so clients reconnect
to the same address, as after a failover behind a fixed name. :meth:`RedisServer.kill` sends
SIGKILL: the server dies without closing its connections gracefully, as a crash would.

When ``redis-server`` or coredis is missing the tests are skipped, unless
``TRIO_POOL_REQUIRE_REDIS=1`` (set by CI), which makes them fail instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["REQUIRE_VARIABLE", "RedisServer", "require_redis"]

#: Set to ``1`` to turn "Redis is not available here" from a skip into a failure.
REQUIRE_VARIABLE = "TRIO_POOL_REQUIRE_REDIS"

_START_TIMEOUT = 10.0  # real seconds for a child server to accept connections


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
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if binary is None:
        _skip_or_fail("redis-server not found")
    return binary


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` child process on 127.0.0.1 (see the module docstring)."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.config = directory / "redis.conf"
        self.config.write_text(
            f'bind {self.host}\nport {self.port}\nprotected-mode no\nsave ""\n'
            f"appendonly no\ndir {directory}\nlogfile {directory / 'redis.log'}\n"
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait (in real time, bounded) until it accepts connections."""
        assert not self.running
        self._process = subprocess.Popen(
            [self.binary, str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self._process.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        log = self.directory / "redis.log"
        raise RuntimeError(f"redis-server did not start: {log.read_text() if log.exists() else ''}")

    def kill(self) -> None:
        """SIGKILL the server (a crash) and reap it."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
        if process is not None:
            process.wait(10)
