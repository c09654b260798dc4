"""Security: nothing a caller passes can inject a line or address another server, credentials
never show in logs, reprs or error messages, and TLS verifies the host it connected to."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import pytest
import trio
import trustme

import trio_pool
from trio_pool import BalancedPool, Headers, InvalidArgumentError, Pool, RequestOptions
from trio_pool.testing import ServerConnection, ServerRequest, serve_h11, serve_memory

SECRETS = {"authorization": "Bearer SECRET-A", "cookie": "session=SECRET-C"}


async def ok(request: ServerRequest, conn: ServerConnection) -> None:
    await conn.respond(200, [("set-cookie", "session=SECRET-S")], body=b"ok")


async def assert_rejected_before_writing(kwargs: dict[str, Any], word: str) -> None:
    """``kwargs`` (method, path and request() options) raise ``InvalidArgumentError`` naming
    ``word`` at call time, on a pool with an open connection: no byte reaches the server,
    and the same connection then serves the next request as its second."""
    args = {"method": "GET", "path": "/", **kwargs}
    method, path = args.pop("method"), args.pop("path")
    async with serve_memory(ok) as server, Pool(server.origin, connector=server.connector) as pool:
        await pool.request("GET", "/first")
        with pytest.raises(InvalidArgumentError, match=word):
            await pool.request(method, path, **args)
        await pool.request("GET", "/next")
        assert [(r.target, r.connection, r.index) for r in server.requests] == [
            ("/first", 0, 0),
            ("/next", 0, 1),
        ]
        assert pool.statistics().size == 0


# --------------------------------------------------------------------------- injection


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        # A trailing "\n" once slipped through a "^...$" token pattern ("$" matches before it).
        ({"method": "GET\n"}, "method"),
        ({"method": "GET /evil HTTP/1.1\r\nx-a:"}, "method"),
        ({"headers": {"x-a\n": "1"}}, "header name"),
        ({"headers": {"x-a\r\nx-injected": "1"}}, "header name"),
        ({"headers": {"x-a:": "1"}}, "header name"),
        ({"headers": {"x-a": "1\r\nx-injected: 1"}}, "x-a"),
        ({"headers": {"x-a": "1\nx-injected: 1"}}, "x-a"),
        ({"headers": {"x-a": "1\r"}}, "x-a"),
        # Leading/trailing CR LF are rejected too, not silently stripped.
        ({"headers": {"x-a": "1\r\n"}}, "x-a"),
        ({"headers": {"x-a": "\r\nx-injected: 1"}}, "x-a"),
        ({"headers": [(b"x-a", b"1\x00")]}, "x-a"),
        # Other controls used to pass here and fail inside h11 while writing, as the wrong
        # error (RequestContentLengthMismatchError) or not at all (DEL, \x01).
        ({"headers": {"x-a": "a\x0bb"}}, "x-a"),
        ({"headers": {"x-a": "a\x01b"}}, "x-a"),
        ({"headers": {"x-a": "a\x7fb"}}, "x-a"),
        ({"path": "/a\r\nx-injected: 1"}, "path"),
        ({"path": "/a HTTP/1.1\r\n"}, "path"),
        ({"path": "/a\n"}, "path"),
        ({"path": "/a#fragment"}, "path"),
        ({"query": "a=1\r\nx-injected: 1"}, "query"),
        ({"query": "a=1 HTTP/1.1"}, "query"),
        ({"query": "a=1\n"}, "query"),
        ({"query": "a=1#fragment"}, "query"),
    ],
    ids=repr,
)
async def test_injection_is_rejected_before_anything_is_written(
    kwargs: dict[str, Any], word: str
) -> None:
    await assert_rejected_before_writing(kwargs, word)


async def test_encoded_queries_and_tabs_in_values_are_fine() -> None:
    async with serve_memory(ok) as server, Pool(server.origin, connector=server.connector) as pool:
        await pool.request("GET", "/", query={"q": "a b\r\n#"}, headers={"x-a": "\t1\t2 "})
        assert server.requests[0].target == "/?q=a+b%0D%0A%23"
        assert server.requests[0].header("x-a") == "1\t2"


# --------------------------------------------------------------------------- other origins


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"path": "http://evil.example/"}, "path"),
        ({"path": "https://evil.example/x"}, "path"),
        ({"path": "//evil.example/"}, "path"),
        ({"path": "//evil.example"}, "path"),
        ({"path": "evil.example/"}, "path"),
        ({"path": "http://testserver:8080/"}, "path"),
        ({"path": "https://testserver/"}, "path"),
        ({"path": "http://user@testserver/"}, "path"),
        # urlsplit would delete these silently (bpo-43882): refused, not stripped.
        ({"path": "http://testserver/a\r\nx-injected: 1"}, "path"),
        ({"path": "http://testserver/a\tb"}, "path"),
        # A Host header may name a virtual host, but one, and a well-formed authority.
        ({"headers": [("host", "testserver"), ("host", "evil.example")]}, "host"),
        ({"headers": {"host": ""}}, "host"),
        ({"headers": {"host": "a b"}}, "host"),
        ({"headers": {"host": "a\r\nx-injected: 1"}}, "host"),
        ({"headers": {"host": "evil.example/path"}}, "host"),
        ({"headers": {"host": "user@evil.example"}}, "host"),
        ({"headers": {"host": "evil.example:99999"}}, "host"),
        ({"headers": {"host": "evil.example:x"}}, "host"),
        ({"headers": {"host": "::1"}}, "host"),
        ({"headers": {"host": "[zz::1]"}}, "host"),
    ],
    ids=repr,
)
async def test_another_origin_is_never_addressed(kwargs: dict[str, Any], word: str) -> None:
    await assert_rejected_before_writing(kwargs, word)


async def test_an_absolute_url_of_another_origin_names_both_origins() -> None:
    async with serve_memory(ok) as server, Pool(server.origin, connector=server.connector) as pool:
        with pytest.raises(InvalidArgumentError) as info:
            await pool.request("GET", "http://evil.example/x")
        assert "http://evil.example" in str(info.value)
        assert server.origin in str(info.value)
        assert server.requests == []


@pytest.mark.parametrize(
    "host",
    [
        "testserver",
        "TestServer",
        "testserver:80",
        # Issue 12 item 7: a virtual host behind an IP origin (the connection still goes
        # to the pool's origin).
        "evil.example",
        "vhost.internal:8080",
        "[::1]:8443",
        "10.0.0.1",
    ],
)
async def test_a_valid_host_header_is_kept_and_the_origin_is_still_the_target(
    host: str,
) -> None:
    async with serve_h11(ok) as server, Pool(server.origin) as pool:
        response = await pool.request("GET", "/", headers={"host": host})
        assert response.status == 200
        assert response.url == f"{server.origin}/"
        assert [v for n, v in server.requests[0].headers if n == "host"] == [host]
        assert pool.statistics().connected == 1


async def test_a_connect_host_header_may_name_the_tunnel_target() -> None:
    async def tunnel(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.switch_protocols(200)

    async with (
        serve_memory(tunnel) as server,
        Pool(server.origin, connector=server.connector) as pool,
    ):
        async with pool.connect("db.internal:5432", headers={"host": "db.internal:5432"}) as up:
            assert up.status == 200
        with pytest.raises(InvalidArgumentError, match="host"):
            async with pool.connect("db.internal:5432", headers={"host": "evil example"}):
                pass
        # A trailing "\n" in the authority: rejected, not written.
        with pytest.raises(InvalidArgumentError, match="authority"):
            async with pool.connect("db.internal:5432\n"):
                pass
        assert [r.target for r in server.requests] == ["db.internal:5432"]


# --------------------------------------------------------------------------- credentials


async def test_error_messages_never_quote_a_header_value() -> None:
    async with Pool("http://testserver") as pool:
        for headers in (
            {"authorization": "Bearer SECRET-\u20ac"},  # not latin-1
            {"authorization": ["SECRET-LIST"]},  # not str or bytes
            [("authorization", "SECRET-TRIPLE", "x")],  # not a pair
            {"authorization": "SECRET-CRLF\r\n"},
        ):
            with pytest.raises(InvalidArgumentError) as info:
                await pool.request("GET", "/", headers=headers)  # type: ignore[arg-type]
            assert "SECRET" not in str(info.value)
            assert "SECRET" not in repr(info.value)


def test_reprs_redact_credentials() -> None:
    options = RequestOptions("POST", "/", headers=SECRETS, body=b"password=SECRET-B")
    assert "SECRET" not in repr(options)
    assert "<17 bytes>" in repr(options)
    as_pairs = RequestOptions("GET", "/", headers=[(b"Authorization", b"SECRET-A")])
    assert "SECRET" not in repr(as_pairs)
    assert "Authorization" in repr(as_pairs)
    headers = Headers(
        [("authorization", "SECRET-A"), ("set-cookie", "SECRET-S"), ("x-ok", "visible")]
    )
    assert "SECRET" not in repr(headers)
    assert "visible" in repr(headers)


async def test_credentials_never_logged_or_shown_through_a_whole_lifecycle(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """Success, a stale keep-alive retry, a timeout, a server hanging up mid-body, a 4xx,
    destroy(): DEBUG logs and the reprs of everything the user sees stay clean."""

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        if request.target == "/stale" and request.index > 0:
            await conn.close()  # the keep-alive race: the GET is retried on a new connection
        elif request.target == "/slow":
            await trio.sleep_forever()
        elif request.target == "/cut":
            await conn.send_head(200, [("content-length", "10"), ("set-cookie", "SECRET-S")])
            await conn.close()
        else:
            await conn.respond(403 if request.target == "/denied" else 200, [("set-cookie", "S")])

    caplog.set_level(logging.DEBUG, logger="trio_pool")
    seen: list[object] = []
    async with serve_memory(script) as server:
        options: dict[str, Any] = {"connector": server.connector, "headers_timeout": 5}
        async with BalancedPool([server.origin], **options) as pool:
            seen.append(pool)
            for path in ("/stale", "/stale", "/slow", "/cut", "/denied"):
                try:
                    response = await pool.request("GET", path, headers=SECRETS)
                    seen += [response, response.headers]
                    response.raise_for_status()
                except trio_pool.TrioPoolError as exc:
                    seen += [exc, exc.__cause__, exc.__context__]
            async with pool.stream("GET", "/", headers=SECRETS) as streamed:
                seen.append(streamed)
                await pool.destroy()
            seen.append(pool)
    assert len(server.requests) == 7  # the stale GET was sent twice
    assert any(isinstance(s, trio_pool.HeadersTimeoutError) for s in seen)
    assert any(isinstance(s, trio_pool.ResponseStatusError) for s in seen)
    assert any(r.name.startswith("trio_pool.") for r in caplog.records)
    assert "SECRET" not in caplog.text
    for thing in seen:
        assert "SECRET" not in repr(thing), thing
        assert "SECRET" not in str(thing), thing


# --------------------------------------------------------------------------- TLS


async def test_tls_checks_the_origins_host_name() -> None:
    """The certificate is for 127.0.0.1 and trusted; asked for as ``localhost`` it must
    fail: verification is against the origin's host, not just the chain. (An untrusted CA
    and a certificate for another name: tests/http/test_http_tls.py, tests/interop.)"""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with serve_h11(ok, ssl_context=server_context) as server:
        port = server.origin.rsplit(":", 1)[1]
        async with Pool(f"https://localhost:{port}", ssl_context=client_context) as pool:
            with pytest.raises(trio_pool.ConnectError) as info:
                await pool.request("GET", "/")
            assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
            assert "localhost" in str(info.value.__cause__)
        async with Pool(server.origin, ssl_context=client_context) as pool:
            assert (await pool.request("GET", "/")).status == 200
        assert len(server.requests) == 1
