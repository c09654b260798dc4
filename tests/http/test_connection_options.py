"""The connection options of API.md 4: ``socket_path``, ``local_address``,
``happy_eyeballs_delay``, ``user_agent`` — on real sockets (loopback, a Unix socket in a
temp dir), through ``Pool`` and ``Agent``."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

import trio_pool
from trio_pool import Agent, Client, InvalidArgumentError, Pool
from trio_pool.testing import H11Server, ServerConnection, ServerRequest, serve_h11


async def echo(request: ServerRequest, conn: ServerConnection) -> None:
    await conn.respond(200, body=f"{request.target} host={request.header('host')}".encode())


@asynccontextmanager
async def serve_unix(
    path: Path, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[H11Server]:
    """The scripted server on a Unix socket at ``path``."""
    async with serve_h11(echo) as server:  # its supervisor runs our listener too
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(str(path))
        sock.listen()
        listener: trio.abc.Listener[Any] = trio.SocketListener(sock)
        if ssl_context is not None:
            listener = trio.SSLListener(listener, ssl_context)
        server.nursery.start_soon(trio.serve_listeners, server.serve_stream, [listener])
        yield server


async def test_socket_path_plain_and_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("docker.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    plain_path, tls_path = tmp_path / "plain.sock", tmp_path / "tls.sock"
    async with serve_unix(plain_path) as plain, serve_unix(tls_path, server_ctx) as secure:
        async with Pool("http://docker.test", socket_path=str(plain_path)) as pool:
            response = await pool.request("GET", "/v1.43/containers/json")
            assert response.body == b"/v1.43/containers/json host=docker.test"
            assert (await pool.request("GET", "/again")).status == 200
            assert plain.connections == 1  # kept alive over the Unix socket
        # https: the TLS server name (and certificate check) is the origin's host.
        async with Client(
            "https://docker.test:2376", socket_path=tls_path, ssl_context=client_ctx
        ) as client:
            response = await client.request("GET", "/info")
            assert response.body == b"/info host=docker.test:2376"
        async with Client(
            "https://wrong.test", socket_path=tls_path, ssl_context=client_ctx
        ) as client:
            with pytest.raises(trio_pool.ConnectError) as caught:
                await client.request("GET", "/")
            assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
        assert len(secure.requests) == 1
    async with Pool("http://docker.test", socket_path=str(tmp_path / "absent.sock")) as pool:
        with pytest.raises(trio_pool.ConnectError, match="No such file"):
            await pool.request("GET", "/")


async def test_socket_path_through_an_agent(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    async with serve_unix(path), Agent(socket_path=path) as agent:
        response = await agent.request("GET", "http://api.test/x")
        assert response.body == b"/x host=api.test"


async def test_local_address_binds_the_source() -> None:
    peers: list[str] = []

    async def handler(stream: trio.SocketStream) -> None:
        peers.append(stream.socket.getpeername()[0])
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        for source in ("127.0.0.2", "127.0.0.3"):
            async with Pool(f"http://127.0.0.1:{port}", local_address=source) as pool:
                assert (await pool.request("GET", "/")).status == 200
        nursery.cancel_scope.cancel()
    assert peers == ["127.0.0.2", "127.0.0.3"]


async def test_happy_eyeballs_delay_reaches_the_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passed to ``trio.open_tcp_stream`` as is (None: one address at a time)."""
    seen: list[object] = []
    real = trio.open_tcp_stream

    async def recording(host: str, port: int, **kwargs: Any) -> trio.SocketStream:
        seen.append(kwargs["happy_eyeballs_delay"])
        return await real(host, port, **kwargs)

    monkeypatch.setattr(trio, "open_tcp_stream", recording)
    async with serve_h11(echo) as server:
        for options in ({}, {"happy_eyeballs_delay": None}, {"happy_eyeballs_delay": 0.05}):
            async with Pool(server.origin, **options) as pool:
                assert (await pool.request("GET", "/")).status == 200
    assert seen == [0.25, None, 0.05]


async def test_user_agent() -> None:
    async with serve_h11(echo) as server:
        async with Pool(server.origin) as pool:
            await pool.request("GET", "/")
            await pool.request("GET", "/", headers={"User-Agent": "mine/1"})
        async with Pool(server.origin, user_agent=None) as pool:
            await pool.request("GET", "/")
        async with Agent(user_agent="fleet/2") as agent:
            await agent.request("GET", f"{server.origin}/")
    agents = [request.header("user-agent") for request in server.requests]
    assert agents == [f"trio_pool/{trio_pool.__version__}", "mine/1", None, "fleet/2"]


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"socket_path": 3}, "socket_path"),
        ({"socket_path": ""}, "socket_path"),
        ({"local_address": 1}, "local_address"),
        ({"happy_eyeballs_delay": -1}, "happy_eyeballs_delay"),
        ({"happy_eyeballs_delay": float("inf")}, "happy_eyeballs_delay"),
        ({"happy_eyeballs_delay": True}, "happy_eyeballs_delay"),
        ({"user_agent": "bad\r\nx: y"}, "user_agent"),
        ({"user_agent": ""}, "user_agent"),
        ({"user_agent": b"bytes"}, "user_agent"),
        ({"_proxy_formx": ()}, "_proxy_formx"),
    ],
)
def test_bad_connection_options(kwargs: dict[str, Any], word: str) -> None:
    with pytest.raises(InvalidArgumentError, match=word):
        Pool("http://h", **kwargs)
    with pytest.raises(InvalidArgumentError, match=word):
        Agent(**kwargs)
