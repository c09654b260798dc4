"""Every ``bench`` flag of API.md section 10, run as the real command against hypercorn.

hypercorn (a server nobody here wrote) runs in the test's own Trio run on 127.0.0.1 and records
what it receives, so each test can compare what the bench says with what the server saw. The
bench itself is a subprocess (``python -m trio_pool bench``), so its timeouts and schedules run
on real time: they are kept to fractions of a second, with margins a busy machine can afford.
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import attrs
import jsonschema
import pytest
import trio
import trustme
from _bench_run import check_json, command, run, table_rows
from _helpers import asgi_lifespan
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPResponseStartEvent, Scope

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "bench-schema.json"


@attrs.define(eq=False)
class Seen:
    """One request as hypercorn received it."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


@attrs.define(eq=False)
class App:
    """An ASGI app whose routes misbehave on purpose; it records every request.

    Routes: ``/`` answers at once; ``/slow?s=X`` after X seconds; ``/every-other-hangs``
    never answers every second request; ``/trickle`` sends its body in 5 pieces 0.15 s
    apart; ``/stall`` answers at once, except that the ``stall_at``-th request stalls the
    whole server (every request waits) for ``stall_for`` seconds.
    """

    seen: list[Seen] = attrs.field(factory=list)
    stall_at: int = 100
    stall_for: float = 0.5
    stalled_until: float = 0.0

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await asgi_lifespan(receive, send)
            return
        assert scope["type"] == "http"
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message["body"]
            if not message["more_body"]:
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        self.seen.append(Seen(scope["method"], scope["path"], headers, bytes(body)))
        number = len(self.seen)
        query = dict(parse_qsl(scope["query_string"].decode()))
        path = scope["path"]
        if path == "/slow":
            await trio.sleep(float(query["s"]))
        elif path == "/every-other-hangs" and number % 2 == 0:
            await trio.sleep_forever()
        elif path == "/stall":
            if number == self.stall_at:
                self.stalled_until = trio.current_time() + self.stall_for
            await trio.sleep_until(self.stalled_until)
        if path == "/trickle":
            await send(_start([]))
            for _ in range(5):
                await trio.sleep(0.15)
                await send({"type": "http.response.body", "body": b"x" * 10, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        content = b"hello"
        await send(_start([(b"content-length", b"5")]))
        await send({"type": "http.response.body", "body": content, "more_body": False})


def _start(headers: list[tuple[bytes, bytes]]) -> HTTPResponseStartEvent:
    return HTTPResponseStartEvent(
        type="http.response.start", status=200, headers=headers, trailers=False
    )


async def _serve(nursery: trio.Nursery, app: App, certfile: Path | None = None) -> str:
    """hypercorn's trio worker on 127.0.0.1:0 serving ``app``; returns its origin."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 0.5
    if certfile is not None:
        config.certfile = config.keyfile = str(certfile)
    binds: list[str] = await nursery.start(partial(serve, app, config))
    return binds[0]


Bench = Callable[..., Any]


@pytest.fixture
async def server() -> AsyncIterator[tuple[App, str]]:
    """A recording hypercorn app and its origin, for the test's duration."""
    app = App()
    async with trio.open_nursery() as nursery:
        yield app, await _serve(nursery, app)
        nursery.cancel_scope.cancel()


def _json(completed: Any) -> dict[str, Any]:
    assert completed.returncode == 0, completed.stderr
    return check_json(completed.stdout.decode())


# --------------------------------------------------------------------------- the request


async def test_headers_and_body_reach_the_server(server: tuple[App, str]) -> None:
    app, origin = server
    argv = [f"{origin}/", "-n", "6", "--json", "--concurrency", "2"]
    argv += ["-H", "x-one: 1", "-H", "X-Two:  two words ", "-H", "Authorization: Bearer s3cr3t"]
    result = _json(await run(command(*argv, "--body", "héllo")))
    assert (result["requests"], result["errors"]) == (6, 0)
    assert len(app.seen) == 6
    for seen in app.seen:
        assert seen.method == "POST"  # a body and no -m: POST
        assert seen.body == "héllo".encode()
        assert ("x-one", "1") in seen.headers
        assert ("x-two", "two words") in seen.headers
        assert ("authorization", "Bearer s3cr3t") in seen.headers
    settings = result["settings"]
    assert settings["method"] == "POST"
    assert settings["body_bytes"] == len("héllo".encode())
    # The report never shows a credential.
    assert settings["headers"] == [
        ["x-one", "1"],
        ["X-Two", "two words"],
        ["Authorization", "<redacted>"],
    ]


async def test_body_file_and_method(server: tuple[App, str], tmp_path: Path) -> None:
    app, origin = server
    body = bytes(range(256)) * 40
    (tmp_path / "body.bin").write_bytes(body)
    argv = command(f"{origin}/", "-n", "3", "-m", "PUT", "--body-file", str(tmp_path / "body.bin"))
    completed = await run(argv)
    assert completed.returncode == 0, completed.stderr
    assert [(seen.method, seen.body) for seen in app.seen] == [("PUT", body)] * 3
    rows = table_rows(completed.stdout.decode())
    assert "body 10240 bytes" in rows["options"]
    assert rows["requests"].split() == ["requests", "3"]


# --------------------------------------------------------------------------- --timeout


async def test_a_hung_server_is_bounded_by_timeout(server: tuple[App, str]) -> None:
    _app, origin = server
    argv = command(f"{origin}/every-other-hangs", "-n", "6", "--timeout", "0.5", "--json")
    with trio.fail_after(20):  # not the pool's default 300 s headers timeout
        result = _json(await run([*argv, "-m", "POST", "--concurrency", "2", "-c", "2"]))
    assert (result["requests"], result["errors"]) == (3, 3)
    assert result["error_counts"] == {"timeout": 3}
    assert result["first_error"].startswith("HeadersTimeoutError: ")
    assert result["settings"]["timeout_s"] == 0.5


async def test_only_hung_requests_fail_with_one_line(server: tuple[App, str]) -> None:
    _app, origin = server
    completed = await run(command(f"{origin}/slow?s=60", "-n", "2", "--timeout", "0.3"))
    assert completed.returncode == 1
    assert completed.stdout == b""
    assert completed.stderr.decode().startswith(
        "trio-pool bench: error: no request got a response: HeadersTimeoutError: "
    )


async def test_a_response_slower_than_timeout_in_all_is_a_timeout(
    server: tuple[App, str],
) -> None:
    # Each gap of the body (0.15 s) is within --timeout, the whole (0.75 s) is not.
    _app, origin = server
    argv = command(f"{origin}/trickle", "-n", "2", "--timeout", "0.5", "--json")
    completed = await run(argv)
    assert completed.returncode == 1
    assert "no request got a response: no response within --timeout 0.5 s" in (
        completed.stderr.decode()
    )


# --------------------------------------------------------------------------- -d and --warmup


async def test_duration_finishes_requests_in_flight(server: tuple[App, str]) -> None:
    app, origin = server
    argv = command(f"{origin}/slow?s=1", "-d", "0.3", "--concurrency", "3", "--json")
    result = _json(await run(argv))
    # Every request started before the deadline was finished and counted.
    assert (result["requests"], result["errors"]) == (3, 0) == (len(app.seen), 0)
    assert result["duration_s"] >= 1.0
    assert result["latency_ms"]["p50"] >= 1000


async def test_duration_cuts_what_is_still_in_flight_at_timeout(server: tuple[App, str]) -> None:
    # One connection serves three queued requests of 1 s each: the first is done by the
    # deadline (0.1 s) + --timeout (1.5 s); the other two are cut there, as timeouts.
    _app, origin = server
    argv = command(f"{origin}/slow?s=1", "-d", "0.1", "-c", "1", "--concurrency", "3")
    result = _json(await run([*argv, "--timeout", "1.5", "--json"]))
    assert (result["requests"], result["errors"]) == (1, 2)
    assert result["error_counts"] == {"timeout": 2}
    assert result["first_error"] == "still in flight --timeout 1.5 s after the deadline"
    assert 1.6 <= result["duration_s"] < 4.0


async def test_warmup_is_not_counted(server: tuple[App, str]) -> None:
    app, origin = server
    argv = command(f"{origin}/", "-n", "50", "--warmup", "0.5", "--concurrency", "2", "--json")
    result = _json(await run(argv))
    assert result["requests"] == 50
    assert result["settings"]["warmup_s"] == 0.5
    assert len(app.seen) > 50  # the warm-up's requests reached the server too


# --------------------------------------------------------------------------- --rate


async def test_rate_shows_a_stall_in_the_percentiles(server: tuple[App, str]) -> None:
    # 100 requests/s for 2 s; the 50th stalls the server for 0.5 s. Latency counts from each
    # request's scheduled time: the ~50 requests due during the stall all show their wait.
    app, origin = server
    app.stall_at = 50
    argv = command(f"{origin}/stall", "-n", "200", "--rate", "100", "--concurrency", "10")
    result = _json(await run([*argv, "--json"]))
    assert (result["requests"], result["errors"]) == (200, 0)
    assert 50 <= result["rps"] <= 105  # never above the rate; a busy machine catches up late
    assert result["latency_ms"]["p99"] >= 350
    assert result["latency_ms"]["p50"] < 250
    assert result["settings"]["rate"] == 100
    # The same stall in a closed loop hides in 1 request of 200: p99 does not show it.
    app.seen.clear()
    closed = _json(
        await run(command(f"{origin}/stall", "-n", "200", "--concurrency", "1", "--json"))
    )
    assert closed["latency_ms"]["max"] >= 450
    assert closed["latency_ms"]["p99"] < 250


async def test_rate_paces_the_requests(server: tuple[App, str]) -> None:
    app, origin = server
    argv = command(f"{origin}/", "-d", "1", "--rate", "50", "--concurrency", "4", "--json")
    result = _json(await run(argv))
    assert result["requests"] == len(app.seen) == 50  # slots at 0, 20 ms, ... 980 ms


# --------------------------------------------------------------------------- TLS


@pytest.fixture
async def tls_origin(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """hypercorn over TLS with a certificate for 127.0.0.1 from a throwaway CA; its origin
    and the CA's PEM file."""
    ca = trustme.CA()
    certfile, cafile = tmp_path / "server.pem", tmp_path / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(certfile))
    ca.cert_pem.write_to_path(str(cafile))
    async with trio.open_nursery() as nursery:
        origin = await _serve(nursery, App(), certfile)
        yield origin.replace("http://", "https://"), cafile
        nursery.cancel_scope.cancel()


async def test_cacert_trusts_a_private_ca(tls_origin: tuple[str, Path]) -> None:
    origin, cafile = tls_origin
    assert origin.startswith("https://127.0.0.1:")
    result = _json(await run(command(f"{origin}/", "-n", "5", "--cacert", str(cafile), "--json")))
    assert (result["requests"], result["errors"]) == (5, 0)
    assert result["settings"]["cacert"] == str(cafile)
    # Without it the certificate is not trusted: one line, exit 2.
    refused = await run(command(f"{origin}/", "-n", "5"))
    assert refused.returncode == 2
    assert "certificate verify failed" in refused.stderr.decode()


async def test_insecure_skips_verification(tls_origin: tuple[str, Path]) -> None:
    origin, _ = tls_origin
    completed = await run(command(f"{origin}/", "-n", "5", "--insecure"))
    assert completed.returncode == 0, completed.stderr
    rows = table_rows(completed.stdout.decode())
    assert rows["requests"].split() == ["requests", "5"]
    assert "TLS unverified (--insecure)" in rows["options"]


# --------------------------------------------------------------------------- the report


async def test_upstreams_are_reported_one_by_one_and_match_the_schema() -> None:
    apps = [App(), App()]
    async with trio.open_nursery() as nursery:
        urls = [f"{await _serve(nursery, app)}/lb" for app in apps]
        argv = command(*urls, "-n", "200", "-c", "2", "--concurrency", "4", "--json")
        result = _json(await run(argv))
        table = await run(command(*urls, "-n", "20"))
        nursery.cancel_scope.cancel()
    jsonschema.validate(result, json.loads(SCHEMA.read_text()))
    assert result["settings"]["urls"] == urls
    upstreams = result["upstreams"]
    assert [upstream["url"] for upstream in upstreams] == urls
    # What each upstream reports is what that server saw (table run: 10 more each at most).
    for upstream, app in zip(upstreams, apps, strict=True):
        assert upstream["errors"] == 0
        assert upstream["requests"] >= 50
        assert upstream["status_counts"] == {"200": upstream["requests"]}
        assert len(app.seen) - 20 <= upstream["requests"] <= len(app.seen)
    assert sum(upstream["requests"] for upstream in upstreams) == 200
    assert table.returncode == 0, table.stderr
    lines = [line for line in table.stdout.decode().splitlines() if line.startswith("upstream")]
    assert [line.split()[1] for line in lines] == urls
    assert sum(int(line.split()[2]) for line in lines) == 20  # "N requests"
    assert all(", 0 errors, " in line and " ms p50 " in line for line in lines)


async def test_a_request_failed_over_is_reported_on_the_upstream_that_answered(
    server: tuple[App, str],
) -> None:
    """The bench reads the upstream from the dispatch's controller (``controller.origin``),
    which names the attempt that answered: the requests the refusing upstream passed on
    (BalancedPool's failover) are all on the live upstream's line, none on its own."""
    app, live = server
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
        urls = [f"{live}/lb", f"{dead}/lb"]
        result = _json(await run(command(*urls, "-n", "60", "-c", "1", "--json")))
    live_line, dead_line = result["upstreams"]
    assert [live_line["url"], dead_line["url"]] == urls
    assert (result["requests"], result["errors"]) == (60, 0)
    assert (live_line["requests"], live_line["errors"]) == (60, 0)
    assert (dead_line["requests"], dead_line["errors"]) == (0, 0)
    assert len(app.seen) == 60


async def test_the_schema_holds_for_errors_and_the_embedded_server(
    server: tuple[App, str],
) -> None:
    _app, origin = server
    schema = json.loads(SCHEMA.read_text())
    argv = command(f"{origin}/every-other-hangs", "-n", "4", "--timeout", "0.3", "--json")
    jsonschema.validate(_json(await run([*argv, "-m", "POST", "-c", "2"])), schema)
    embedded = _json(await run(command("-n", "100", "--json")))
    jsonschema.validate(embedded, schema)
    assert embedded["settings"]["embedded_server"] is True
    assert embedded["cpu"]["server"] is not None
    assert 0 < embedded["cpu"]["client"] < 2
    assert embedded["transfer"]["body_bytes"] == 100 * len(b"hello world\n")
    assert not math.isnan(embedded["transfer"]["body_bytes_per_s"])
