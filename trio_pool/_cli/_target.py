"""The embedded benchmark server's child process, and CPU accounting for the report.

Theory of operation
-------------------
:func:`embedded_server` starts :mod:`trio_pool._server` in a child process and reads back its
port. The child sits in its own session (a terminal's Ctrl-C reaches only the benchmark,
which decides how to stop it) and exits when its stdin closes: the parent closes that pipe on
the way out, and the kernel closes it if the parent dies, so the child can never outlive the
benchmark.

:class:`CpuMeter` samples CPU time (user + system) of this process (``getrusage``) and of the
embedded server (``/proc/PID/stat``, Linux) at the start and the end of the measured run, so
the report can say which side was busy. Where ``/proc`` is missing the server's share is
unknown (None), never guessed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

if sys.platform != "win32":
    import resource

__all__ = ["SERVER_START_TIMEOUT", "CpuMeter", "EmbeddedServer", "embedded_server"]

#: How long the embedded server may take to start, and to stop before it is killed.
SERVER_START_TIMEOUT = 10.0
SERVER_STOP_GRACE = 2.0

# Put first on the embedded server's PYTHONPATH, so that the child imports this very copy of
# trio_pool, installed or not (a source checkout).
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent.parent)


class ServerFailed(Exception):
    """The embedded server did not start (reported as one line, exit status 1)."""


@attrs.frozen
class EmbeddedServer:
    """A running embedded server."""

    origin: str
    pid: int


@asynccontextmanager
async def embedded_server() -> AsyncIterator[EmbeddedServer]:
    """Run :mod:`trio_pool._server` in a child process for the block. Entering and leaving
    are checkpoints.

    The child is stopped on the way out however the block ends: its stdin is closed (its
    signal to exit), and it is killed if it has not exited within :data:`SERVER_STOP_GRACE`.

    Raises:
        ServerFailed: The child did not report a port within :data:`SERVER_START_TIMEOUT`.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_PARENT, env.get("PYTHONPATH")]))
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_pool._server", "--host", "127.0.0.1", "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.move_on_after(SERVER_START_TIMEOUT):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(256)
                if not chunk:
                    break
                line += chunk
        fields = line.split()
        if len(fields) != 3 or fields[0] != b"listening" or not fields[2].isdigit():
            raise ServerFailed("the embedded server did not start")
        yield EmbeddedServer(f"http://127.0.0.1:{int(fields[2])}", process.pid)
    finally:
        # Shielded: the child must be stopped however the block is left, Ctrl-C included.
        with trio.CancelScope(shield=True):
            await _stop(process)


async def _stop(process: trio.Process) -> None:
    """Close the child's stdin (its cue to exit), wait for it, kill it if it lingers."""
    assert process.stdin is not None
    assert process.stdout is not None
    await process.stdin.aclose()
    with trio.move_on_after(SERVER_STOP_GRACE):
        await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
    await process.stdout.aclose()


def _own_cpu() -> float:
    """CPU seconds (user + system) of this process, every thread included."""
    if sys.platform == "win32":  # pragma: no cover - no getrusage there
        return time.process_time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of another process, from ``/proc``; None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


@attrs.define(eq=False)
class CpuMeter:
    """CPU used by this process and by the embedded server between :meth:`start` and
    :meth:`stop`, as a share of one core (1.0 = one core busy all the time)."""

    server_pid: int | None = None
    _wall: float = attrs.field(default=0.0, init=False)
    _own: float = attrs.field(default=0.0, init=False)
    _server_start: float | None = attrs.field(default=None, init=False)
    #: Set by :meth:`stop`.
    client: float = attrs.field(default=0.0, init=False)
    server: float | None = attrs.field(default=None, init=False)

    def start(self) -> None:
        """Take the first sample. Not a checkpoint."""
        self._wall = time.perf_counter()
        self._own = _own_cpu()
        self._server_start = None if self.server_pid is None else _process_cpu(self.server_pid)

    def stop(self) -> None:
        """Take the second sample and set :attr:`client` and :attr:`server`. Not a
        checkpoint."""
        wall = max(time.perf_counter() - self._wall, 1e-9)
        self.client = (_own_cpu() - self._own) / wall
        if self.server_pid is not None and self._server_start is not None:
            now = _process_cpu(self.server_pid)
            self.server = None if now is None else (now - self._server_start) / wall
