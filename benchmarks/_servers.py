"""The HTTP benchmark's server: nginx from a generated config, or the embedded Python one.

Theory of operation
-------------------
The clients must be measured against a server that is not the bottleneck, in another
process, on loopback. nginx (Debian's package) is that server when its binary is present:
:func:`nginx` writes a config into a fresh temporary directory (one worker process, no access
log, keep-alive effectively unlimited, files and pid under that directory) and runs
``nginx -p DIR -c DIR/nginx.conf -e DIR/error.log`` in the foreground (``daemon off``), so
nothing outside the directory is read or written. nginx cannot listen on port 0, so the ports
are picked by binding four sockets to port 0 and closing them; if another process takes one in
between, nginx exits with "address already in use" and the start is retried with new ports.

Without nginx, :func:`embedded` runs ``python -m trio_pool._server`` twice (once plain, once
with ``--certfile``), each listening on two ports; that server is pure Python, so on a small
machine it is usually the limit, which the CPU columns of the report show.

Either way the server offers two upstreams (ports) per scheme, ``/`` answered with a 12-byte
body and ``/64k`` with a 64 KiB one, and HTTPS with a certificate from a throwaway ``trustme``
CA. nginx also serves ``/64k.gz``: :func:`gzip_body` (64 KiB of text), gzip-compressed, with
``content-encoding: gzip`` (the decoding benchmark; the embedded server has no such path).
Every child process dies with this one: nginx's master gets ``SIGTERM`` from the kernel
when its parent dies (``PR_SET_PDEATHSIG``, Linux), the embedded server exits when its stdin
closes.
"""

from __future__ import annotations

import ctypes
import gzip
import os
import random
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from _common import now

SMALL_PATH = "/"
LARGE_PATH = "/64k"
SMALL_SIZE = 12
LARGE_SIZE = 65536
GZIP_PATH = "/64k.gz"
START_TIMEOUT = 10.0
STOP_GRACE = 5.0
PORT_ATTEMPTS = 5

NGINX_CONFIG = """\
worker_processes 1;
worker_rlimit_nofile 16384;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 8192;
    multi_accept on;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    tcp_nodelay on;
    sendfile on;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{http0} backlog=4096;
        listen 127.0.0.1:{http1} backlog=4096;
        listen 127.0.0.1:{https0} ssl backlog=4096;
        listen 127.0.0.1:{https1} ssl backlog=4096;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        root {dir}/www;
        location = / {{
            return 200 "hello world\\n";
        }}
        location = /64k {{
        }}
        location = /64k.gz {{
            add_header Content-Encoding gzip;
        }}
    }}
}}
"""


def gzip_body() -> bytes:
    """What ``/64k.gz`` decodes to: 64 KiB of words in lines, the same every run (10 KiB
    gzipped)."""
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
        "dog",
        "pool",
        "request",
        "trio",
        "nursery",
    ]
    rng = random.Random(14)
    lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(1200)]
    return "\n".join(lines).encode()[:LARGE_SIZE]


@dataclass(frozen=True)
class Server:
    """A running benchmark server: its ports, its processes, and how to trust its TLS."""

    kind: str
    """``"nginx"`` or ``"embedded"``."""
    ports: dict[str, tuple[int, int]]
    """Two ports (upstreams) per scheme: ``{"http": (a, b), "https": (c, d)}``."""
    pids: tuple[int, ...]
    """Every process of the server (nginx's master and workers), for CPU accounting."""
    cafile: str

    def origins(self, scheme: str) -> tuple[str, str]:
        a, b = self.ports[scheme]
        return f"{scheme}://127.0.0.1:{a}", f"{scheme}://127.0.0.1:{b}"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (Linux ``/proc``), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit (C=1000 needs ~2,000); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def nginx_binary() -> str | None:
    """nginx's path: on ``PATH``, or in ``/usr/sbin`` (not on a normal user's ``PATH``)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


@contextmanager
def start(kind: str) -> Iterator[Server]:
    """``kind``: ``"nginx"``, ``"embedded"`` or ``"auto"`` (nginx when installed)."""
    if kind == "auto":
        kind = "nginx" if nginx_binary() else "embedded"
    with tempfile.TemporaryDirectory(prefix="trio-pool-bench-") as tmp:
        directory = Path(tmp)
        cafile = _write_tls_files(directory)
        if kind == "nginx":
            with nginx(directory, cafile) as server:
                yield server
        else:
            with embedded(directory, cafile) as server:
                yield server


def _write_tls_files(directory: Path) -> str:
    """A throwaway CA and a certificate for 127.0.0.1: ``cert.pem``/``key.pem``; the CA path."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    return str(directory / "ca.pem")


# ---------------------------------------------------------------------------------- nginx


def _free_ports(count: int) -> list[int]:
    """Ports that were free a moment ago (all bound at once, so they are distinct)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (nginx's workers), from ``/proc``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


@contextmanager
def nginx(directory: Path, cafile: str) -> Iterator[Server]:
    """nginx serving the two bodies on two http and two https ports, for the block."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (apt-get install nginx)")
    www = directory / "www"
    www.mkdir()
    (www / "64k").write_bytes(bytes(range(256)) * (LARGE_SIZE // 256))
    (www / "64k.gz").write_bytes(gzip.compress(gzip_body(), mtime=0))
    # nginx's workers run as an unprivileged user when started by root: let them read.
    for path in (directory, www):
        path.chmod(0o755)
    (www / "64k").chmod(0o644)
    (www / "64k.gz").chmod(0o644)
    error_log = ["-e", str(directory / "error.log")]
    for attempt in range(PORT_ATTEMPTS):
        http0, http1, https0, https1 = _free_ports(4)
        (directory / "nginx.conf").write_text(
            NGINX_CONFIG.format(
                dir=directory, http0=http0, http1=http1, https0=https0, https1=https1
            )
        )
        process = subprocess.Popen(
            [binary, "-p", str(directory), "-c", str(directory / "nginx.conf"), *error_log],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches this process only; we stop nginx
            preexec_fn=_die_with_parent,
        )
        try:
            deadline = now() + START_TIMEOUT
            ports = (http0, http1, https0, https1)
            while process.poll() is None and now() < deadline:
                if all(_accepts(port) for port in ports):
                    break
                select.select([], [], [], 0.05)
            else:
                log = (directory / "error.log").read_text(errors="replace")
                if "in use" in log and attempt + 1 < PORT_ATTEMPTS:
                    continue  # a port was taken between picking it and nginx binding it
                raise RuntimeError(f"nginx did not start:\n{log}")
            yield Server(
                kind="nginx",
                ports={"http": (http0, http1), "https": (https0, https1)},
                pids=(process.pid, *_children(process.pid)),
                cafile=cafile,
            )
            return
        finally:
            _stop_nginx(process)
    raise AssertionError("unreachable")  # pragma: no cover


def _stop_nginx(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # nginx's fast shutdown
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# ---------------------------------------------------------------------------------- embedded


@contextmanager
def _embedded_process(*args: str) -> Iterator[tuple[int, tuple[int, int]]]:
    """``python -m trio_pool._server --port 0 --port 0 ARGS``; yield (pid, ports)."""
    import trio_pool

    package_parent = str(Path(trio_pool.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    two_ports = ["--port", "0", "--port", "0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "trio_pool._server", "--host", "127.0.0.1", *two_ports, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        line = b""
        deadline = now() + START_TIMEOUT
        while not line.endswith(b"\n") and now() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - now()))
            chunk = os.read(fd, 256) if ready else b""
            if not chunk:
                break
            line += chunk
        fields = line.split()
        if len(fields) != 4 or fields[0] != b"listening" or not fields[3].isdigit():
            raise RuntimeError(f"the embedded server did not start (said {line!r})")
        yield process.pid, (int(fields[2]), int(fields[3]))
    finally:
        assert process.stdin is not None
        process.stdin.close()  # the server's cue to exit
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@contextmanager
def embedded(directory: Path, cafile: str) -> Iterator[Server]:
    """Two embedded server processes (http and https), two ports each, for the block."""
    tls = ["--certfile", str(directory / "cert.pem"), "--keyfile", str(directory / "key.pem")]
    with _embedded_process() as (http_pid, http), _embedded_process(*tls) as (https_pid, https):
        yield Server(
            kind="embedded",
            ports={"http": http, "https": https},
            pids=(http_pid, https_pid),
            cafile=cafile,
        )
