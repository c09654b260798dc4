"""``ProxyAgent`` and ``EnvHttpProxyAgent`` (API.md 5) against a proxy nobody here wrote:
Debian's tinyproxy, started per test from a config in a temp dir on a free loopback port.
(The scripted server stands in as the proxy where the test must see the request's wire form.)

Without tinyproxy these tests skip, unless ``TRIO_POOL_REQUIRE_TINYPROXY`` is set (CI sets it
and installs the package): then its absence fails them.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme

import trio_pool
from trio_pool import EnvHttpProxyAgent, ProxyAgent, ProxyError
from trio_pool.http._noproxy import NoProxy
from trio_pool.testing import ServerConnection, ServerRequest, serve_h11

USER, PASSWORD = "proxyuser", "s3cret-pw"
Start = Callable[..., str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[Start]:
    """``start(auth=False, extra=())`` runs a tinyproxy and returns its ``http://`` URL."""
    binary = shutil.which("tinyproxy") or shutil.which("tinyproxy", path="/usr/sbin:/usr/bin")
    if binary is None:
        if os.environ.get("TRIO_POOL_REQUIRE_TINYPROXY"):
            pytest.fail("tinyproxy is required (TRIO_POOL_REQUIRE_TINYPROXY) but not installed")
        pytest.skip("tinyproxy is not installed (apt-get install tinyproxy)")
    children: list[subprocess.Popen[bytes]] = []

    def start(*, auth: bool = False, extra: tuple[str, ...] = ()) -> str:
        port = _free_port()
        folder = tmp_path / f"tinyproxy-{port}"
        folder.mkdir()
        lines = [
            f"Port {port}",
            "Listen 127.0.0.1",
            "Timeout 30",
            "MaxClients 50",
            "LogLevel Info",
            f'LogFile "{folder / "log"}"',
            "Allow 127.0.0.1",
            "DisableViaHeader Yes",
            *([f"BasicAuth {USER} {PASSWORD}"] if auth else []),
            *extra,
        ]
        config = folder / "tinyproxy.conf"
        config.write_text("\n".join(lines) + "\n")
        child = subprocess.Popen(
            [binary, "-d", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        children.append(child)
        deadline = time.monotonic() + 10
        while True:  # bounded: until it listens, it exits, or 10 s
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("tinyproxy did not start") from None
                time.sleep(0.02)
        return f"http://127.0.0.1:{port}"

    yield start
    for child in children:
        child.terminate()
        child.wait(10)


def authed(url: str, password: str = PASSWORD) -> str:
    return url.replace("http://", f"http://{USER}:{password}@")


async def echo(request: ServerRequest, conn: ServerConnection) -> None:
    await conn.respond(200, body=f"{request.target} host={request.header('host')}".encode())


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_pair(ca: trustme.CA, name: str = "127.0.0.1") -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


# ---------------------------------------------------------------------------- http targets


async def test_http_targets_through_tinyproxy(tinyproxy: Start) -> None:
    proxy = tinyproxy()
    async with serve_h11(echo) as target, ProxyAgent(proxy) as agent:
        for path in ("/a?b=c", "/d"):
            response = await agent.request("GET", f"{target.origin}{path}")
            assert response.status == 200
            assert response.body == f"{path} host={target.origin[7:]}".encode()
        posted = await agent.request("POST", f"{target.origin}/p", body=b"xyz")
        assert posted.status == 200
        assert target.requests[-1].body == b"xyz"
        assert agent.origins == [target.origin]
        stats = agent.statistics()
        assert (stats.pending, stats.running) == (0, 0)


async def test_http_targets_are_requested_in_absolute_form() -> None:
    """The wire form, seen by a scripted server standing in as the proxy."""
    async with serve_h11(echo) as proxy:
        url = proxy.origin.replace("http://", "http://u%40x:p%3Aw@")
        async with ProxyAgent(url, proxy_headers={"x-proxy": "1"}) as agent:
            await agent.request("GET", "http://service.test:8080/path?q=1")
            await agent.request("GET", "http://service.test:8080/two", headers={"x-a": "b"})
        first, second = proxy.requests
        assert first.target == "http://service.test:8080/path?q=1"
        assert second.target == "http://service.test:8080/two"
        assert first.header("host") == "service.test:8080"
        secret = base64.b64encode(b"u@x:p:w").decode()
        assert first.header("proxy-authorization") == f"Basic {secret}"
        assert first.header("x-proxy") == "1"
        assert second.header("x-a") == "b"
        assert first.header("user-agent") == f"trio_pool/{trio_pool.__version__}"
        assert second.connection == first.connection  # pooled, kept alive


async def test_an_https_proxy_with_its_own_ssl_context(ca: trustme.CA) -> None:
    """``https://`` proxy: TLS to the proxy (``proxy_ssl_context``), then the same requests."""
    server_ctx, client_ctx = tls_pair(ca)
    async with serve_h11(echo, ssl_context=server_ctx) as proxy:
        async with ProxyAgent(proxy.origin, proxy_ssl_context=client_ctx) as agent:
            response = await agent.request("GET", "http://service.test/over-tls")
            assert response.body == b"http://service.test/over-tls host=service.test"
        async with ProxyAgent(proxy.origin) as agent:  # the default trust store: refused
            with pytest.raises(ProxyError, match="certificate") as caught:
                await agent.request("GET", "http://service.test/")
            assert caught.value.status is None


# ---------------------------------------------------------------------------- https targets


async def test_https_targets_through_a_connect_tunnel(tinyproxy: Start, ca: trustme.CA) -> None:
    proxy = tinyproxy()
    server_ctx, client_ctx = tls_pair(ca)
    async with (
        serve_h11(echo, ssl_context=server_ctx) as target,
        ProxyAgent(proxy, ssl_context=client_ctx) as agent,
    ):
        response = await agent.request("GET", f"{target.origin}/secure")
        assert response.body == f"/secure host={target.origin[8:]}".encode()
        assert (await agent.request("GET", f"{target.origin}/again")).status == 200
        assert len(target.requests) == 2


async def test_the_target_certificate_is_verified(tinyproxy: Start, ca: trustme.CA) -> None:
    proxy = tinyproxy()
    server_ctx, client_ctx = tls_pair(ca, "someone-else.test")
    async with (
        serve_h11(echo, ssl_context=server_ctx) as target,
        ProxyAgent(proxy, ssl_context=client_ctx) as agent,
    ):
        with pytest.raises(trio_pool.ConnectError) as caught:
            await agent.request("GET", f"{target.origin}/")
        assert not isinstance(caught.value, ProxyError)  # the proxy did its part
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
        assert target.requests == []
    # And with the default trust store, trustme's CA is not trusted at all.
    server_ctx, _ = tls_pair(ca)
    async with serve_h11(echo, ssl_context=server_ctx) as target, ProxyAgent(proxy) as agent:
        with pytest.raises(trio_pool.ConnectError, match="certificate"):
            await agent.request("GET", f"{target.origin}/")


# ---------------------------------------------------------------------------- auth, refusals


async def test_basic_proxy_auth(tinyproxy: Start, ca: trustme.CA) -> None:
    proxy = tinyproxy(auth=True)
    server_ctx, client_ctx = tls_pair(ca)
    async with serve_h11(echo) as plain, serve_h11(echo, ssl_context=server_ctx) as secure:
        async with ProxyAgent(authed(proxy), ssl_context=client_ctx) as agent:
            assert (await agent.request("GET", f"{plain.origin}/")).status == 200
            assert (await agent.request("GET", f"{secure.origin}/")).status == 200
        async with ProxyAgent(proxy, ssl_context=client_ctx) as agent:
            # http: the proxy's answer is the response; https: the tunnel is refused
            # (tinyproxy says 401 to a CONNECT without credentials, 407 otherwise).
            assert (await agent.request("GET", f"{plain.origin}/")).status == 407
            with pytest.raises(ProxyError) as caught:
                await agent.request("GET", f"{secure.origin}/")
            assert caught.value.status in (401, 407)
            assert isinstance(caught.value, trio_pool.ConnectError)
            stats = agent.statistics()
            assert (stats.pending, stats.running) == (0, 0)
        async with ProxyAgent(authed(proxy, "wrong"), ssl_context=client_ctx) as agent:
            with pytest.raises(ProxyError) as caught:
                await agent.request("GET", f"{secure.origin}/")
            assert caught.value.status in (401, 407)


async def test_credentials_never_show(
    tinyproxy: Start, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_pool")
    proxy = tinyproxy(auth=True)
    wrong = "wr0ng-Secret"
    encoded = base64.b64encode(f"{USER}:{wrong}".encode()).decode()
    server_ctx, client_ctx = tls_pair(ca)
    shown: list[str] = []
    async with serve_h11(echo, ssl_context=server_ctx) as secure:
        agent = ProxyAgent(authed(proxy, wrong), ssl_context=client_ctx)
        shown.append(repr(agent))
        async with agent:
            with pytest.raises(ProxyError) as caught:
                await agent.request("GET", f"{secure.origin}/")
            shown += [repr(agent), str(caught.value), repr(caught.value)]
            shown += [repr(agent.get_pool(secure.origin)), repr(agent.statistics())]
        pool = agent._proxy  # the record that holds them
        shown.append(repr(pool))
    shown.append(caplog.text)
    for text in shown:
        assert wrong not in text
        assert encoded not in text
    assert caught.value.status in (401, 407)
    assert proxy in str(caught.value)  # it does name the proxy
    # Bad proxy URLs are refused without quoting them.
    with pytest.raises(trio_pool.InvalidArgumentError) as bad:
        ProxyAgent("http://user:pw-in-url@/nohost")
    assert "pw-in-url" not in str(bad.value)


async def test_refused_connect_is_a_proxy_error_with_its_status(tinyproxy: Start) -> None:
    forbidding = tinyproxy(extra=("ConnectPort 1",))  # CONNECT to any other port: 403
    async with serve_h11(echo) as target:
        https_origin = target.origin.replace("http://", "https://")
        async with ProxyAgent(forbidding) as agent:
            with pytest.raises(ProxyError) as caught:
                await agent.request("GET", f"{https_origin}/")
            assert caught.value.status == 403
        # A tunnel to a port where nothing listens: tinyproxy answers 5xx.
        async with ProxyAgent(tinyproxy()) as agent:
            with pytest.raises(ProxyError) as caught:
                await agent.request("GET", f"https://127.0.0.1:{_free_port()}/")
            assert caught.value.status is not None
            assert 500 <= caught.value.status < 600
            assert (await agent.request("GET", f"{target.origin}/ok")).status == 200


async def test_a_dead_proxy_is_a_proxy_error() -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    async with ProxyAgent(dead) as agent:
        for url in ("http://service.test/", "https://service.test/"):
            with pytest.raises(ProxyError, match="cannot connect to the proxy") as caught:
                await agent.request("GET", url)
            assert caught.value.status is None
            assert isinstance(caught.value.__cause__, OSError)
        stats = agent.statistics()
        assert (stats.pending, stats.running, stats.connected) == (0, 0, 0)


async def test_cancelled_while_tunnelling_leaves_everything_idle(tinyproxy: Start) -> None:
    """Cancelled while the proxy has not answered the CONNECT (a scripted stand-in that never
    does): the connection attempt is dropped, and the next request works."""
    answered = trio.Event()

    async def silent(request: ServerRequest, conn: ServerConnection) -> None:
        answered.set()
        await trio.sleep_forever()

    async with serve_h11(silent) as proxy, ProxyAgent(proxy.origin) as agent:
        with trio.move_on_after(5) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(agent.request, "GET", "https://service.test/")
                await answered.wait()
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught
        assert proxy.requests[0].method == "CONNECT"
        assert proxy.requests[0].target == "service.test:443"
        stats = agent.statistics()
        assert (stats.pending, stats.queued, stats.running) == (0, 0, 0)
        # The attempt itself goes on in the pool (until connect_timeout): a graceful
        # close would wait for it, so end it now.
        await agent.destroy()
    async with serve_h11(echo) as target, ProxyAgent(tinyproxy()) as agent:
        assert (await agent.request("GET", f"{target.origin}/")).status == 200


async def test_agent_connect_opens_a_tunnel_through_a_proxy(tinyproxy: Start) -> None:
    """``Agent.connect(url)``: the URL's origin is the proxy, its path the tunnel's target."""
    proxy = tinyproxy()
    async with serve_h11(echo) as target, trio_pool.Agent() as agent:
        authority = target.origin.removeprefix("http://")
        async with agent.connect(f"{proxy}/{authority}") as tunnel:
            assert tunnel.status == 200
            await tunnel.stream.send_all(
                f"GET /inside HTTP/1.1\r\nhost: {authority}\r\n\r\n".encode()
            )
            answer = b""
            with trio.fail_after(10):
                while b"/inside" not in answer:
                    answer += await tunnel.stream.receive_some(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        assert agent.origins == [proxy]


def test_proxy_arguments_are_checked() -> None:
    for bad in ("ftp://h:1", "http://h:1/path", "not a url", 3):
        with pytest.raises(trio_pool.InvalidArgumentError, match="proxy"):
            ProxyAgent(bad)  # type: ignore[arg-type]
    with pytest.raises(trio_pool.InvalidArgumentError, match="connector"):
        ProxyAgent("http://h:1", connector=lambda origin: None)
    with pytest.raises(trio_pool.InvalidArgumentError, match="proxy_ssl_context"):
        ProxyAgent("http://h:1", proxy_ssl_context="no")  # type: ignore[arg-type]
    assert repr(ProxyAgent("http://u:p@h:1")).startswith("<ProxyAgent proxy=http://h:1 ")


# ---------------------------------------------------------------------------- from the env


async def no_tunnels(request: ServerRequest, conn: ServerConnection) -> None:
    if request.method == "CONNECT":
        await conn.respond(403)
    else:
        await echo(request, conn)


async def test_env_proxy_routes_by_scheme_and_no_proxy(
    monkeypatch: pytest.MonkeyPatch, tinyproxy: Start
) -> None:
    async with serve_h11(no_tunnels) as proxy, serve_h11(echo) as direct:
        for name in ("http_proxy", "https_proxy", "no_proxy", "HTTPS_PROXY", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.origin)
        monkeypatch.setenv("NO_PROXY", "localhost, .internal.test,127.0.0.1")
        agent = EnvHttpProxyAgent()
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")  # read once: too late
        async with agent:
            await agent.request("GET", "http://service.test/via")
            assert proxy.requests[-1].target == "http://service.test/via"
            await agent.request("GET", f"{direct.origin}/direct")  # NO_PROXY: 127.0.0.1
            assert direct.requests[-1].target == "/direct"
            # HTTPS_PROXY unset: https goes through HTTP_PROXY (CONNECT).
            with pytest.raises(ProxyError) as caught:
                await agent.request("GET", "https://service.test/")
            assert caught.value.status == 403
            assert proxy.requests[-1].method == "CONNECT"
            assert len(proxy.requests) == 2
        assert "proxies=" in repr(agent)
    # Lower case wins over upper case; HTTPS_PROXY has its own proxy.
    real = tinyproxy()
    monkeypatch.setenv("http_proxy", real)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:1")
    monkeypatch.delenv("NO_PROXY")
    async with serve_h11(echo) as target, EnvHttpProxyAgent() as agent:
        assert (await agent.request("GET", f"{target.origin}/x")).status == 200
        with pytest.raises(ProxyError):
            await agent.request("GET", "https://service.test/")
    monkeypatch.setenv("HTTPS_PROXY", "not a url")
    with pytest.raises(trio_pool.InvalidArgumentError, match="HTTPS_PROXY") as bad:
        EnvHttpProxyAgent()
    assert "not a url" not in str(bad.value)


NO_PROXY_TABLE = [
    # (NO_PROXY, host, port, bypass)
    ("", "example.com", 80, False),
    ("*", "anything.test", 443, True),
    ("example.com", "example.com", 80, True),
    ("example.com", "api.example.com", 80, True),
    ("example.com", "notexample.com", 80, False),
    ("example.com", "example.com.evil.test", 80, False),
    (".example.com", "example.com", 80, True),
    (".example.com", "a.b.example.com", 80, True),
    ("*.example.com", "a.example.com", 80, True),
    ("EXAMPLE.com", "Example.COM", 80, True),
    ("example.com:8080", "example.com", 8080, True),
    ("example.com:8080", "example.com", 80, False),
    ("127.0.0.1", "127.0.0.1", 80, True),
    ("127.0.0.1", "127.0.0.2", 80, False),
    ("127.0.0.1:9000", "127.0.0.1", 9000, True),
    ("127.0.0.1:9000", "127.0.0.1", 9001, False),
    ("10.0.0.0/8", "10.20.30.40", 80, True),
    ("10.0.0.0/8", "11.0.0.1", 80, False),
    ("10.0.0.0/8", "ten.example", 80, False),  # names are not resolved
    ("::1", "::1", 80, True),
    ("[::1]", "::1", 80, True),
    ("[::1]:8443", "::1", 8443, True),
    ("[::1]:8443", "::1", 80, False),
    ("fd00::/8", "fd12::1", 80, True),
    ("fd00::/8", "127.0.0.1", 80, False),
    ("a.test, b.test  c.test", "c.test", 80, True),
    ("garbage:port, b.test", "b.test", 80, True),
    ("host:99999", "host", 99999, False),
    ("example.com.", "example.com", 80, False),
]


@pytest.mark.parametrize(("no_proxy", "host", "port", "bypass"), NO_PROXY_TABLE)
def test_no_proxy_matching(no_proxy: str, host: str, port: int, bypass: bool) -> None:
    assert NoProxy(no_proxy).bypass(host, port) is bypass
