"""BalancedPool: spreading requests, upstreams, capabilities, arguments and every dispatcher
method, against real servers on 127.0.0.1 (ours and hypercorn)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from _upstreams import upstreams

import trio_pool
from trio_pool import (
    BalancedPool,
    BalancedPoolMissingUpstreamError,
    Headers,
    InvalidArgumentError,
    Pool,
    RequestOptions,
)
from trio_pool.interceptors import Controller
from trio_pool.testing import ServerConnection, ServerRequest, serve_h11


async def test_equal_upstreams_share_requests_evenly() -> None:
    async with upstreams(3) as ups, BalancedPool([up.origin for up in ups]) as pool:
        bodies = [(await pool.request("GET", "/")).body for _ in range(30)]
        assert bodies[:6] == [b"A", b"B", b"C", b"A", b"B", b"C"]
        assert [up.served for up in ups] == [10, 10, 10]

        async def one() -> None:
            await pool.request("GET", "/")

        async with trio.open_nursery() as nursery:
            for _ in range(60):
                nursery.start_soon(one)
        assert [up.served for up in ups] == [30, 30, 30]
        stats = pool.statistics()
        assert (stats.size, stats.queued, stats.running) == (0, 0, 0)
        assert stats.connected == stats.free >= 3


@asynccontextmanager
async def hypercorn_server(name: str) -> AsyncIterator[str]:
    """A hypercorn (trio worker) server on 127.0.0.1:0 answering ``name``; yields its origin."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rpartition(".")[2]  # "startup" or "shutdown"
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": name.encode()})

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config)
        yield binds[0]
        nursery.cancel_scope.cancel()


async def test_spread_over_hypercorn_upstreams() -> None:
    async with hypercorn_server("one") as one, hypercorn_server("two") as two:
        async with BalancedPool([one, two]) as pool:
            seen: Counter[bytes] = Counter()

            async def get() -> None:
                seen[(await pool.request("GET", "/")).body] += 1

            async with trio.open_nursery() as nursery:
                for _ in range(40):
                    nursery.start_soon(get)
            assert seen == {b"one": 20, b"two": 20}  # routed in turn as they were called
            assert pool.statistics().size == 0
        async with BalancedPool([one, two], connections=2) as pool:
            seen.clear()
            async with trio.open_nursery() as nursery:
                for _ in range(40):
                    nursery.start_soon(get)
            # Saturated Pools: waiting requests go to whichever upstream frees up first.
            assert seen[b"one"] + seen[b"two"] == 40
            assert min(seen.values()) >= 10
            assert pool.statistics().size == 0


def test_upstreams_are_normalised_listed_in_order_and_added_once() -> None:
    pool = BalancedPool("HTTP://Example.com:80")
    assert pool.upstreams == ["http://example.com"]
    pool.add_upstream("http://example.com/")
    pool.add_upstream("http://b.example:8080")
    pool.add_upstream("http://a.example:8080")
    assert pool.upstreams == [
        "http://example.com",
        "http://b.example:8080",
        "http://a.example:8080",
    ]
    first = pool.get_upstream("http://example.com")
    assert isinstance(first, Pool)
    pool.add_upstream("http://EXAMPLE.com")
    assert pool.get_upstream("http://example.com:80") is first
    assert pool.get_upstream("http://missing.example") is None
    pool.remove_upstream("http://b.example:8080")
    pool.remove_upstream("http://missing.example")  # absent: nothing happens
    assert pool.upstreams == ["http://example.com", "http://a.example:8080"]
    assert pool.get_upstream("http://b.example:8080") is None
    assert BalancedPool([]).upstreams == []


def test_factory_makes_each_pool_with_the_options() -> None:
    made: list[tuple[str, dict[str, Any]]] = []

    def factory(origin: str, **options: Any) -> Pool:
        made.append((origin, options))
        return Pool(origin, **options)

    pool = BalancedPool(
        ["http://a.example", "http://b.example"], factory=factory, connections=3, pipelining=2
    )
    assert made == [
        ("http://a.example", {"connections": 3, "pipelining": 2}),
        ("http://b.example", {"connections": 3, "pipelining": 2}),
    ]
    assert pool.get_upstream("http://a.example") is not None
    with pytest.raises(InvalidArgumentError, match="factory"):
        # Deliberately ill-typed factory: the check under test is the runtime one.
        BalancedPool("http://a.example", factory=lambda origin, **options: object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"upstreams": 42}, "upstreams"),
        ({"upstreams": ["http://a.example/path"]}, "origin"),
        ({"upstreams": ["ftp://a.example"]}, "origin"),
        ({"factory": "nope"}, "factory"),
        ({"error_penalty": -1}, "error_penalty"),
        ({"error_penalty": 1.5}, "error_penalty"),
        ({"max_weight_per_server": 0}, "max_weight_per_server"),
        ({"connections": -1}, "connections"),
        ({"client_ttl": -2}, "client_ttl"),
        ({"pipelining": -1}, "pipelining"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict[str, Any], named: str) -> None:
    kwargs = dict(kwargs)  # the case is shared by both read modes: do not consume it
    upstreams_arg = kwargs.pop("upstreams", [])
    with pytest.raises(InvalidArgumentError, match=named):
        BalancedPool(upstreams_arg, **kwargs)


async def test_invalid_capabilities_and_capability() -> None:
    pool = BalancedPool([])
    with pytest.raises(InvalidArgumentError, match="capabilities"):
        pool.add_upstream("http://a.example", capabilities="read")
    with pytest.raises(InvalidArgumentError, match="capabilities"):
        pool.add_upstream("http://a.example", capabilities=[1])  # type: ignore[list-item]
    assert pool.upstreams == []
    async with upstreams(1) as (a,), BalancedPool(a.origin) as pool:
        with pytest.raises(InvalidArgumentError, match="capability"):
            await pool.request("GET", "/", capability=7)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="options"):
            await pool.dispatch("GET /", object())  # type: ignore[arg-type]
        assert (await pool.request("GET", "/")).body == b"A"


async def test_missing_upstream_errors_name_the_capability() -> None:
    async with BalancedPool([]) as pool:
        with pytest.raises(BalancedPoolMissingUpstreamError, match="no upstream"):
            await pool.request("GET", "/")
        with pytest.raises(BalancedPoolMissingUpstreamError, match="'write'"):
            await pool.request("GET", "/", capability="write")
        pool.add_upstream("http://127.0.0.1:9", capabilities=["read"])
        with pytest.raises(BalancedPoolMissingUpstreamError, match="'write'"):
            async with pool.stream("GET", "/", capability="write"):
                pass  # pragma: no cover
        assert issubclass(BalancedPoolMissingUpstreamError, trio_pool.TrioPoolError)


async def test_capabilities_route_requests() -> None:
    async with upstreams(3) as (primary, r1, r2), BalancedPool([]) as pool:
        pool.add_upstream(primary.origin, capabilities=("read", "write"))
        pool.add_upstream(r1.origin, capabilities=("read",))
        pool.add_upstream(r2.origin, capabilities=["read"])
        for _ in range(9):
            assert (await pool.request("POST", "/", capability="write")).body == b"A"
        reads = [(await pool.request("GET", "/", capability="read")).body for _ in range(9)]
        assert Counter(reads) == {b"A": 3, b"B": 3, b"C": 3}
        # Interleaved, each capability keeps its own turn: reads still reach every replica.
        mixed: Counter[bytes] = Counter()
        for _ in range(6):
            mixed[(await pool.request("GET", "/", capability="read")).body] += 1
            assert (await pool.request("PUT", "/", capability="write")).body == b"A"
        assert mixed == {b"A": 2, b"B": 2, b"C": 2}
        untagged = [(await pool.request("GET", "/")).body for _ in range(3)]
        assert sorted(untagged) == [b"A", b"B", b"C"]
        with pytest.raises(BalancedPoolMissingUpstreamError, match="'admin'"):
            await pool.request("GET", "/", capability="admin")


async def test_stream_pipeline_and_dispatch_go_through_the_rotation() -> None:
    async with upstreams(2) as (a, b), BalancedPool([a.origin, b.origin]) as pool:
        async with pool.stream("GET", "/") as response:
            assert response.status == 200
            assert await response.read() == b"A"

        async def body() -> AsyncIterator[bytes]:
            yield b"x"

        async with pool.pipeline("POST", "/", body=body()) as response:
            assert await response.read() == b"B"

        class Collect:
            def __init__(self) -> None:
                self.chunks: list[bytes] = []
                self.origins: list[str | None] = []

            def on_request_start(self, controller: Controller) -> None:
                self.origins.append(controller.origin)

            def on_response_start(
                self, controller: object, status: int, headers: Headers, reason: str
            ) -> None:
                pass

            def on_response_data(self, controller: object, chunk: bytes) -> None:
                self.chunks.append(chunk)

            def on_response_end(self, controller: Controller, trailers: Headers) -> None:
                self.origins.append(controller.origin)

            def on_response_error(self, controller: object, error: BaseException) -> None:
                raise AssertionError(error)  # pragma: no cover

        handler = Collect()
        await pool.dispatch(RequestOptions("GET", "/"), handler)
        assert handler.chunks == [b"A"]
        # The controller names the upstream that ran the request (the CLI's per-upstream
        # report relies on it); its own Pool's dispatch names the same origin.
        assert handler.origins == [a.origin, a.origin]
        assert pool.statistics().size == 0
        upstream = pool.get_upstream(b.origin)
        assert upstream is not None
        direct = Collect()
        await upstream.dispatch(RequestOptions("GET", "/"), direct)
        assert (direct.chunks, direct.origins) == ([b"B"], [b.origin, b.origin])


async def switching(request: ServerRequest, conn: ServerConnection) -> None:
    """Upgrades or tunnels, then echoes upper-cased."""
    if request.method == "CONNECT":
        await conn.switch_protocols(200)
    else:
        await conn.switch_protocols(101, [("upgrade", "echo"), ("connection", "upgrade")])
    while data := await conn.stream.receive_some():
        await conn.send_raw(bytes(data).upper())  # receive_some may give a bytearray


async def test_upgrade_and_connect() -> None:
    async with serve_h11(switching) as one, serve_h11(switching) as two:
        async with BalancedPool([one.origin, two.origin]) as pool:
            async with pool.upgrade("/ws", protocol="echo") as up:
                assert up.status == 101
                await up.stream.send_all(b"abc")
                assert await up.stream.receive_some() == b"ABC"
            async with pool.connect("example.com:443") as tunnel:
                assert tunnel.status == 200
                await tunnel.stream.send_all(b"xyz")
                assert await tunnel.stream.receive_some() == b"XYZ"
            assert (len(one.requests), len(two.requests)) == (1, 1)
            assert pool.statistics().size == 0
