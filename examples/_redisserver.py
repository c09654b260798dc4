"""A throwaway Redis server: Debian's ``redis-server`` run as a child process on a free
loopback port, with its config in a directory of the caller's (``examples/redis_pool.py`` and
the integration tests share it; the tests load it by path, as they do ``_pgserver.py``).

Theory of operation
-------------------
:class:`RedisServer` owns one child process at a time. The port is picked once (a free loopback
port, bound and released) and ``redis.conf`` (no persistence, no protected mode, loopback only)
is written once into the directory; a restart reuses both, so clients reconnect to the same
address, as after a failover behind a fixed name. :meth:`RedisServer.kill` sends SIGKILL: the
server dies without closing its connections gracefully, as a crash would.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisServer", "find_redis_server"]

_START_TIMEOUT = 10.0  # real seconds for a child server to accept connections


def find_redis_server() -> str | None:
    """The path of ``redis-server``, or None if it is not installed."""
    found = shutil.which("redis-server")
    if found is None and os.access("/usr/bin/redis-server", os.X_OK):
        found = "/usr/bin/redis-server"
    return found


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
