"""A throwaway PostgreSQL server for the example and the integration tests.

Theory of operation: :func:`find_postgres_bin_dir` locates Debian's server binaries
(``initdb``, ``pg_ctl``, ``postgres``) on ``PATH`` or under ``/usr/lib/postgresql/*/bin``.
:meth:`PostgresServer.create` makes a fresh temporary directory, runs ``initdb`` into it with
``trust`` authentication for a single superuser, and appends the settings a disposable cluster
wants (listen on 127.0.0.1 only, on a free port picked now and kept for every restart; the
Unix socket in the temporary directory instead of the system-wide one; ``fsync=off``).
:meth:`~PostgresServer.start` and :meth:`~PostgresServer.stop` drive ``pg_ctl`` so that a test
can kill the server (``-m immediate``) and bring it back on the same port and data directory.
:meth:`~PostgresServer.cleanup` stops whatever is still running (falling back to SIGKILL of the
postmaster) and removes the directory; :func:`throwaway_postgres` wraps the whole life cycle
in a context manager so it runs even when the body fails.

PostgreSQL refuses to run as root. When this process is root, every PostgreSQL binary runs as
the unprivileged ``postgres`` account that Debian's package creates (``nobody`` as a fallback),
through ``subprocess``'s ``user=``/``group=`` arguments (setuid after fork; no ``sudo`` or
``runuser`` needed), and the temporary directory is handed to that account. Otherwise the
binaries run as the current user.

:func:`quiet_pg_purepy` tames the client library's logging for both users of this module.

This module depends only on the standard library (structlog is imported lazily, by
:func:`quiet_pg_purepy`): the example imports it as a sibling module and the integration tests
load it by path, so the bootstrap logic exists exactly once.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "PostgresNotFoundError",
    "PostgresServer",
    "PostgresServerError",
    "find_postgres_bin_dir",
    "free_port",
    "quiet_pg_purepy",
    "throwaway_postgres",
]

#: The superuser that ``initdb`` creates; ``trust`` authentication means no password.
DEFAULT_USER = "trio_pool"

#: Bound on every ``pg_ctl``/``initdb`` invocation: a wedged server must not hang a test run.
_COMMAND_TIMEOUT = 60.0

#: Appended to ``postgresql.conf``. ``fsync=off`` skips the flushes to disk that only matter
#: when the *machine* crashes, which makes the server much faster to run and to recover.
#: ``synchronous_commit`` stays on on purpose: with it off, a commit is acknowledged before its
#: WAL leaves shared memory, so ``pg_ctl stop -m immediate`` (a simulated server crash) would
#: lose recently committed transactions, e.g. a role a test has just created.
_SETTINGS = """
# --- added by trio_pool's throwaway-server bootstrap ---
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
fsync = off
full_page_writes = off
max_connections = 50
shared_buffers = 16MB
"""


class PostgresServerError(RuntimeError):
    """A PostgreSQL command failed; the message carries its output and the server log."""


class PostgresNotFoundError(PostgresServerError):
    """The PostgreSQL server binaries (``initdb``, ``pg_ctl``, ``postgres``) are not installed."""


def find_postgres_bin_dir() -> Path | None:
    """Locates the directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    ``initdb`` on ``PATH`` wins (its symlinks are resolved, since Debian only puts a few
    wrappers on ``PATH`` and the rest live next to the real binary); otherwise the newest
    ``/usr/lib/postgresql/<version>/bin``.

    Returns:
        The directory, or ``None`` when no complete set of binaries is installed.
    """
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path))

    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True):
        candidates.append(Path(initdb).parent)
    for bin_dir in candidates:
        if all(os.access(bin_dir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return bin_dir
    return None


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that nothing listens on right now.

    Also used to get a port that is guaranteed closed (for connection-refused tests).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _unprivileged_account() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as, or ``None`` to run it as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresServerError("running as root and neither a 'postgres' nor a 'nobody' account")


def _temp_parent(account: pwd.struct_passwd | None) -> str:
    """Where to create the temporary directory: the usual place, unless the server account
    could not even reach it (a root-only ``TMPDIR`` such as ``/root/tmp``); then ``/tmp``."""
    parent = Path(tempfile.gettempdir()).resolve()
    if account is None:
        return str(parent)
    for directory in (parent, *parent.parents):
        if not directory.stat().st_mode & stat.S_IXOTH:  # others may not traverse it
            return "/tmp"
    return str(parent)


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temporary directory.

    Create it with :meth:`create` (or, better, :func:`throwaway_postgres`), then
    :meth:`start` it. Connection parameters: :attr:`host`, :attr:`port`, :attr:`user`,
    :attr:`database` (trust authentication, no password), or :attr:`socket_path` for the Unix
    socket. Every method blocks; from Trio, call them through ``trio.to_thread.run_sync``.
    """

    host = "127.0.0.1"
    database = "postgres"

    def __init__(
        self,
        *,
        bin_dir: Path,
        base_dir: Path,
        port: int,
        user: str,
        account: pwd.struct_passwd | None,
    ) -> None:
        """Wraps an already initialised cluster; use :meth:`create` instead."""
        self.bin_dir = bin_dir
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.log_file = base_dir / "postgres.log"
        self.port = port
        self.user = user
        self._account = account

    @property
    def socket_path(self) -> str:
        """The absolute path of the server's Unix socket (pg-purepy connects to it if given)."""
        return str(self.base_dir / f".s.PGSQL.{self.port}")

    @classmethod
    def create(cls, *, user: str = DEFAULT_USER, bin_dir: Path | None = None) -> PostgresServer:
        """Runs ``initdb`` into a fresh temporary directory; does not start the server.

        Args:
            user: Name of the superuser to create (trust authentication, no password).
            bin_dir: Where the PostgreSQL binaries are; found with
                :func:`find_postgres_bin_dir` if omitted.

        Raises:
            PostgresNotFoundError: The binaries are not installed.
            PostgresServerError: ``initdb`` failed (the directory is removed again).
        """
        bin_dir = bin_dir or find_postgres_bin_dir()
        if bin_dir is None:
            raise PostgresNotFoundError(
                "PostgreSQL server binaries not found (no initdb on PATH or in "
                "/usr/lib/postgresql/*/bin); install Debian's 'postgresql' package"
            )
        account = _unprivileged_account()
        base_dir = Path(tempfile.mkdtemp(prefix="trio_pool-pg-", dir=_temp_parent(account)))
        server = cls(
            bin_dir=bin_dir, base_dir=base_dir, port=free_port(), user=user, account=account
        )
        try:
            if account is not None:
                # mkdtemp made it 0700 root-owned; the server account must own it to create
                # the data directory, its socket and its log in there.
                os.chown(base_dir, account.pw_uid, account.pw_gid)
            server._run(
                "initdb",
                "--pgdata",
                str(server.data_dir),
                "--username",
                user,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",  # durability is pointless here and syncing costs seconds
                "--no-instructions",
            )
            settings = _SETTINGS.format(port=server.port, socket_dir=base_dir)
            # Appending as root keeps the file's owner: the server account can still read it.
            with open(server.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.write(settings)
        except BaseException:
            server.cleanup()
            raise
        return server

    def _run(self, program: str, *args: str) -> None:
        """Runs one PostgreSQL binary as the server account; raises with its output on failure."""
        # PG* variables of the caller (PGDATA, PGPORT, PGHOST...) must not leak into our cluster.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_ALL"] = "C"
        account = self._account
        if account is not None:
            env["HOME"] = account.pw_dir
        try:
            result = subprocess.run(
                [str(self.bin_dir / program), *args],
                # The base directory, not ours: the server account may not be allowed to read it.
                cwd=self.base_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_COMMAND_TIMEOUT,
                check=False,
                # setuid/setgid after fork when we are root; None = stay who we are.
                user=None if account is None else account.pw_uid,
                group=None if account is None else account.pw_gid,
                extra_groups=None if account is None else [],  # drop root's groups as well
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresServerError(f"{program} timed out{self._log_tail()}") from exc
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise PostgresServerError(
                f"{program} {' '.join(args)} exited with {result.returncode}: {output}"
                f"{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 20) -> str:
        """The end of the server log, for error messages."""
        try:
            tail = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\nserver log:\n" + "\n".join(tail[-lines:])

    def postmaster_pid(self) -> int | None:
        """The postmaster's PID from ``postmaster.pid``, or ``None`` when it is not running."""
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first_line)
        except (OSError, ValueError):
            return None

    @property
    def running(self) -> bool:
        """Whether a postmaster is alive for this data directory."""
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, but owned by another user (we are not root)
            return True
        return True

    def start(self) -> None:
        """Starts the server and waits until it accepts connections.

        After a :meth:`stop` with ``mode="immediate"`` this includes crash recovery, which is
        quick here because nothing is ever fsynced.
        """
        self._run(
            "pg_ctl",
            "start",
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.log_file),
            "--wait",
            "--timeout",
            str(int(_COMMAND_TIMEOUT)),
            "--silent",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stops the server and waits until it is gone.

        Args:
            mode: ``pg_ctl``'s shutdown mode: ``"smart"``, ``"fast"`` (disconnects clients
                cleanly) or ``"immediate"`` (SIGQUIT: every backend dies at once, like a crash).
        """
        self._run(
            "pg_ctl",
            "stop",
            "--pgdata",
            str(self.data_dir),
            "--mode",
            mode,
            "--wait",
            "--timeout",
            str(int(_COMMAND_TIMEOUT)),
            "--silent",
        )

    def cleanup(self) -> None:
        """Stops the server if it runs (SIGKILL as a last resort) and removes its directory.

        Never raises: it runs in ``finally`` blocks and fixture teardowns, where an error would
        hide the one that matters.
        """
        if self.running:
            try:
                self.stop("immediate")
            except PostgresServerError:
                pid = self.postmaster_pid()
                if pid is not None:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<PostgresServer {self.host}:{self.port} data={self.data_dir}>"


@contextlib.contextmanager
def throwaway_postgres(*, user: str = DEFAULT_USER) -> Iterator[PostgresServer]:
    """Creates and starts a throwaway server; stops and removes it on exit, whatever happens.

    Raises:
        PostgresNotFoundError: The binaries are not installed.
        PostgresServerError: ``initdb`` or the first start failed.
    """
    server = PostgresServer.create(user=user)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def quiet_pg_purepy() -> None:
    """Undoes pg-purepy's logging side effects; call it after importing pg-purepy.

    pg-purepy 0.10 runs ``logging.basicConfig(level=logging.DEBUG)`` when imported
    (``pg_purepy/messages.py``): the root logger then prints every DEBUG record of every
    library, trio_pool's included, to stderr. This removes that handler (only a plain
    ``StreamHandler`` on stderr; pytest's capture handlers are subclasses and stay) and puts the
    root level back to its default. It also limits pg-purepy's own structlog events, printed
    to stdout by structlog's default configuration, to warnings and worse.
    """
    import structlog  # a pg-purepy dependency; imported here to keep this module stdlib-only

    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler.stream is sys.stderr:
            root.removeHandler(handler)
    if root.level == logging.DEBUG:
        root.setLevel(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
