"""``trio-pool bench`` end to end: against its embedded server and against a scripted one.

In-process runs call ``main()`` from synchronous tests (it runs its own ``trio.run``);
subprocess runs use ``python -m trio_pool`` exactly as a user would. The embedded server's
lifetime is checked from the outside: every child started here inherits a unique marker in
its environment, and ``/proc`` is searched for server processes that carry it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import h11
import pytest
import trio
import trustme
from _bench_run import check_json, command, env, run, table_rows

from trio_pool._cli import main
from trio_pool._cli._args import parse_args
from trio_pool._cli._load import progress_line

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inspects /proc")

MARKER_VARIABLE = "TRIO_POOL_BENCH_TEST_MARKER"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def marker(monkeypatch: pytest.MonkeyPatch) -> str:
    """A unique value in this process's environment, inherited by every child it starts."""
    value = uuid.uuid4().hex
    monkeypatch.setenv(MARKER_VARIABLE, value)
    return value


def _live_servers(marker: str) -> list[int]:
    """PIDs of live (not zombie) embedded-server processes carrying ``marker``."""
    needle = f"{MARKER_VARIABLE}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in environ.split(b"\0") and b"trio_pool._server" in cmdline and state != "Z":
            found.append(int(entry))
    return found


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# --------------------------------------------------------------------------- embedded server


def test_json_against_the_embedded_server(marker: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--json", "-n", "200", "-c", "3", "--concurrency", "5"]) == 0
    captured = capsys.readouterr()
    result = check_json(captured.out)
    assert (result["requests"], result["errors"]) == (200, 0)
    assert result["status_counts"] == {"200": 200}
    assert captured.err == ""  # stderr is not a terminal: no progress line
    assert _live_servers(marker) == []


def test_table_against_the_embedded_server(marker: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "-n", "150", "-m", "POST"]) == 0
    output = capsys.readouterr().out
    rows = table_rows(output)
    assert rows["target"].endswith("(embedded server)")
    assert "http://127.0.0.1:" in rows["target"]
    assert "POST, 150 requests" in rows["load"]
    assert rows["requests"].split() == ["requests", "150"]
    assert rows["errors"].split() == ["errors", "0"]
    assert float(rows["req/s"].split()[1].replace(",", "")) > 0
    assert [word for word in rows["latency"].split() if word.startswith("p")] == [
        "p50",
        "p90",
        "p99",
        "p99.9",
    ]
    assert "max" in rows["latency"]
    assert rows["statuses"].split(None, 1)[1] == "200: 150"
    # 150 responses of the embedded server's 12-byte body.
    assert rows["transfer"].startswith("transfer     1,800 bytes of bodies, ")
    assert re.fullmatch(r"cpu +client \d+% of a core, embedded server \d+%", rows["cpu"])
    # The histogram: a header, then one line per log bucket whose counts add up to 150.
    histogram = output.split("histogram    latency ms (upper edge), log buckets\n", 1)[1]
    counts = [
        int(line.split("|")[2].split()[0].replace(",", "")) for line in histogram.splitlines()
    ]
    assert sum(counts) == 150
    assert _live_servers(marker) == []


@pytest.mark.parametrize("pipelining", ["0", "4"])
def test_pipelining_options(pipelining: str, marker: str) -> None:
    # A bound on a stuck run, not a speed check: a loaded machine takes several times longer.
    argv = command("--json", "-n", "1000", "-c", "2", "--concurrency", "8", "-p", pipelining)
    completed = trio.run(run, argv, 60.0)
    assert completed.returncode == 0, completed.stderr
    result = check_json(completed.stdout.decode())
    assert (result["requests"], result["errors"]) == (1000, 0)
    assert _live_servers(marker) == []


def test_duration_bounds_the_run(marker: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--json", "-d", "0.5", "--concurrency", "4"]) == 0
    result = check_json(capsys.readouterr().out)
    assert 0.45 <= result["duration_s"] < 2.0
    assert result["requests"] > 0
    assert result["errors"] == 0
    assert _live_servers(marker) == []


class _FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_only_on_a_terminal(
    marker: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = _FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["bench", "--json", "-d", "0.7"]) == 0
    progress = terminal.getvalue()
    assert "req/s" in progress
    assert re.search(r"\[[#.]{24}\] +\d+% ", progress)  # the bar, then its percentage
    assert progress.startswith("\r\x1b[K")
    assert progress.endswith("\r\x1b[K")  # the line is cleared before the report
    assert "\n" not in progress
    check_json(capsys.readouterr().out)


def test_subprocess_json_end_to_end(marker: str) -> None:
    completed = trio.run(
        run, command("--json", "-n", "200"), 30.0
    )  # its own trio.run: this test is synchronous like a user's shell
    assert completed.returncode == 0, completed.stderr
    result = check_json(completed.stdout.decode())
    assert (result["requests"], result["errors"]) == (200, 0)
    assert completed.stderr == b""
    assert _live_servers(marker) == []


async def _poll(condition: Callable[[], bool], limit: float, what: str) -> None:
    # Polling, because nothing signals another process's child appearing or disappearing.
    for _ in range(int(limit / 0.05)):
        if condition():
            return
        await trio.sleep(0.05)
    raise AssertionError(f"{what} within {limit} s")


async def _wait_for_server(marker: str) -> int:
    # One listing, kept: listing twice could see the process list change in between (on a
    # busy machine the poll and a second look have failed to agree).
    found: list[int] = []

    def exactly_one() -> bool:
        found[:] = _live_servers(marker)
        return len(found) == 1

    await _poll(exactly_one, 15, "no embedded server started (or more than one)")
    return found[0]


async def _wait_until_gone(pid: int, marker: str) -> None:
    await _poll(lambda: pid not in _live_servers(marker), 10, "the server did not stop")


@pytest.mark.parametrize("as_json", [False, True])
async def test_ctrl_c_reports_what_ran_and_stops_the_server(marker: str, as_json: bool) -> None:
    argv = command("-d", "30", *(["--json"] if as_json else []))
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            partial(
                trio.run_process,
                argv,
                check=False,
                env=env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
        server = await _wait_for_server(marker)
        await _poll(lambda: _sockets(server) > 1, 15, "the load did not start")
        await trio.sleep(0.5)  # let some requests finish
        process.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            out, err = await _read_all(process.stdout), await _read_all(process.stderr)
            assert await process.wait() == 130
    await _wait_until_gone(server, marker)
    assert err.decode().endswith("trio-pool bench: interrupted\n")
    if as_json:
        result = check_json(out.decode())
        assert result["interrupted"] is True
        assert result["requests"] > 0
        assert result["duration_s"] < 30
    else:
        rows = table_rows(out.decode())
        assert int(rows["requests"].split()[1]) > 0
        assert rows["interrupted"].startswith("interrupted  Ctrl-C")


def _sockets(pid: int) -> int:
    """How many sockets process ``pid`` has open (its listener, then its connections)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    found = 0
    for fd in fds:
        with contextlib.suppress(OSError):
            found += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return found


async def _read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


async def test_killed_bench_leaves_no_server(marker: str) -> None:
    process = await trio.lowlevel.open_process(command("-d", "30"), env=env())
    try:
        server = await _wait_for_server(marker)
    finally:
        process.kill()  # SIGKILL: no cleanup code runs in the CLI at all
        with trio.CancelScope(shield=True):
            await process.wait()
    # The server notices its stdin (the lifeline) closing and exits by itself.
    await _wait_until_gone(server, marker)


# --------------------------------------------------------------------------- bad targets


def test_unreachable_server_is_one_line_and_status_2(
    refused_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", f"http://127.0.0.1:{refused_port}/", "-n", "1000"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    # The root cause, said once (not the same text again as each wrapper's message).
    assert captured.err == (
        f"trio-pool bench: error: cannot reach http://127.0.0.1:{refused_port}: "
        "Connection refused\n"
    )


@pytest.mark.parametrize("upstreams", [1, 2])
async def test_a_request_the_pool_refuses_is_one_line_and_status_2(
    refused_port: int, upstreams: int
) -> None:
    # A non-ASCII path passes URL parsing; the pool refuses it before anything is sent (so
    # before the refused port matters), and the load stops at the first refusal.
    urls = [f"http://127.0.0.{n}:{refused_port}/caf\u00e9" for n in range(1, upstreams + 1)]
    completed = await run(command(*urls, "-n", "1000"))
    assert completed.returncode == 2
    assert completed.stdout == b""
    stderr = completed.stderr.decode()
    assert stderr.count("\n") == 1
    assert stderr.startswith("trio-pool bench: error: InvalidArgumentError: invalid path '/caf")


def test_untrusted_certificate_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)  # the hang guard of the thread

        def handshake_once() -> None:
            with contextlib.suppress(OSError):  # the client gives up on the handshake
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(10)
                    context.wrap_socket(conn, server_side=True)

        thread = threading.Thread(target=handshake_once)
        thread.start()
        port = listener.getsockname()[1]
        status = main(["bench", f"https://127.0.0.1:{port}/", "-n", "5"])
        thread.join()
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(
        f"trio-pool bench: error: cannot reach https://127.0.0.1:{port}: "
    )
    assert "certificate verify failed" in captured.err


# --------------------------------------------------------------------------- scripted server


@attrs.define
class ScriptedServer:
    """An h11 server answering ``statuses`` in turn and dropping every ``drop_every``-th request
    (closing its connection without an answer)."""

    statuses: tuple[int, ...] = (200,)
    drop_every: int | None = None
    requests: list[h11.Request] = attrs.field(factory=list)

    async def start(self, nursery: trio.Nursery) -> int:
        """Serve on 127.0.0.1 in ``nursery``; return the port."""
        serve = partial(trio.serve_tcp, host="127.0.0.1")
        listeners = await nursery.start(serve, self.handle, 0)
        port: int = listeners[0].socket.getsockname()[1]
        return port

    def status_of(self, number: int) -> int | None:
        """The status of request ``number`` (counted from 0), None if it is dropped."""
        if self.drop_every is not None and number % self.drop_every == self.drop_every - 1:
            return None
        return self.statuses[number % len(self.statuses)]

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                event = await self._next(conn, stream)
                if not isinstance(event, h11.Request):
                    return
                number = len(self.requests)
                self.requests.append(event)
                while not isinstance(await self._next(conn, stream), h11.EndOfMessage):
                    pass
                status = self.status_of(number)
                if status is None:
                    return  # drop the connection without answering
                body = b"scripted %d" % status
                for out in (
                    h11.Response(status_code=status, headers=[("content-length", str(len(body)))]),
                    h11.Data(data=body),
                    h11.EndOfMessage(),
                ):
                    await stream.send_all(conn.send(out) or b"")
                if conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()

    @staticmethod
    async def _next(conn: h11.Connection, stream: trio.SocketStream) -> Any:
        while (event := conn.next_event()) is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        return event


async def test_json_against_a_scripted_server() -> None:
    server = ScriptedServer(statuses=(200, 404, 503), drop_every=10)
    async with trio.open_nursery() as nursery:
        port = await server.start(nursery)
        url = f"http://127.0.0.1:{port}/path?x=1&y=2"
        argv = command(url, "--json", "-n", "30", "-c", "3", "--concurrency", "3")
        completed = await run([*argv, "-m", "POST"], 30.0)
        nursery.cancel_scope.cancel()
    assert completed.returncode == 0, completed.stderr
    result = check_json(completed.stdout.decode())
    # POST is not idempotent, so a dropped request is an error, never silently retried.
    assert (result["requests"], result["errors"]) == (27, 3)
    expected = Counter(str(server.status_of(n)) for n in range(30) if server.status_of(n))
    assert result["status_counts"] == expected
    assert len(server.requests) == 30
    for request in server.requests:
        assert (request.method, request.target) == (b"POST", b"/path?x=1&y=2")
        assert (b"host", f"127.0.0.1:{port}".encode()) in list(request.headers)


async def test_several_urls_are_balanced() -> None:
    servers = [ScriptedServer(), ScriptedServer()]
    async with trio.open_nursery() as nursery:
        urls = [f"http://127.0.0.1:{await server.start(nursery)}/lb" for server in servers]
        argv = command(*urls, "--json", "-n", "200", "-c", "2", "--concurrency", "4")
        completed = await run(argv, 30.0)
        nursery.cancel_scope.cancel()
    assert completed.returncode == 0, completed.stderr
    result = check_json(completed.stdout.decode())
    assert result["status_counts"] == {"200": 200}
    served = [len(server.requests) for server in servers]
    assert sum(served) == 200
    assert min(served) >= 50, served  # weighted round-robin over two healthy upstreams
    assert {request.target for server in servers for request in server.requests} == {b"/lb"}


async def test_no_response_at_all_is_a_failure() -> None:
    server = ScriptedServer(drop_every=1)
    async with trio.open_nursery() as nursery:
        port = await server.start(nursery)
        argv = command(f"http://127.0.0.1:{port}/", "-n", "20", "-m", "POST", "--json")
        completed = await run(argv, 30.0)
        nursery.cancel_scope.cancel()
    assert completed.returncode == 1
    assert completed.stdout == b""
    stderr = completed.stderr.decode()
    assert stderr.count("\n") == 1
    assert stderr.startswith("trio-pool bench: error: no request got a response: ")
    assert len(server.requests) == 20


async def test_table_reports_the_kinds_of_errors() -> None:
    server = ScriptedServer(drop_every=2)
    async with trio.open_nursery() as nursery:
        port = await server.start(nursery)
        argv = command(f"http://127.0.0.1:{port}/t?a=b", "-n", "10", "-m", "POST")
        completed = await run(argv, 30.0)
        nursery.cancel_scope.cancel()
    assert completed.returncode == 0, completed.stderr
    rows = table_rows(completed.stdout.decode())
    assert rows["target"].split() == ["target", f"http://127.0.0.1:{port}/t?a=b"]
    assert rows["requests"].split() == ["requests", "5"]
    assert rows["errors"].split() == ["errors", "5"]
    assert rows["statuses"].split(None, 1)[1] == "200: 5"
    # A connection dropped before the response is a SocketError (API.md 1.6).
    assert rows["error"].startswith("error kinds  SocketError: 5")
    assert "first error  SocketError: " in completed.stdout.decode()


@pytest.mark.parametrize(
    ("argv", "done", "elapsed", "expected"),
    [
        # -n: the bar fills with requests done.
        (["-n", "1000"], 0, 0.0, "[........................]   0% 0/1,000 requests"),
        (["-n", "1000"], 500, 1.0, "[############............]  50% 500/1,000 requests"),
        (["-n", "1000"], 1000, 2.0, "[########################] 100% 1,000/1,000 requests"),
        # -d: the bar fills with time; a late sample never overflows it.
        (["-d", "4"], 300, 1.0, "[######..................]  25% 300 requests"),
        (["-d", "4"], 900, 4.5, "[########################] 100% 900 requests"),
    ],
)
def test_progress_bar(argv: list[str], done: int, elapsed: float, expected: str) -> None:
    line = progress_line(parse_args(["bench", *argv]), done, 3, elapsed)
    assert line.startswith(expected)
    assert "3 errors" in line
    assert line.endswith(f"{done / elapsed if elapsed else 0:,.0f} req/s, {elapsed:.1f} s")


def test_progress_bar_of_the_warmup() -> None:
    # The warm-up's bar fills with time, whatever -n says, and says it is the warm-up.
    config = parse_args(["bench", "-n", "1000", "--warmup", "2"])
    line = progress_line(config, 400, 0, 1.0, warmup=True)
    assert line.startswith("warm-up [############............]  50% 400 requests, 0 errors")
