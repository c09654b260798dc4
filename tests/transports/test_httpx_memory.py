"""httpx and httpx2 over trio_pool on in-memory servers: timeouts on the autojump clock, the
error mapping, and what a response carries. Every test runs with both packages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import pytest
import trio
import trio.testing
from _helpers import assert_idle

import trio_pool
from trio_pool.testing import ServerConnection, ServerRequest, serve_memory

from .conftest import Flavour


async def script(request: ServerRequest, conn: ServerConnection) -> None:
    """``/stall`` never answers, ``/trickle`` sends a head and one chunk then stalls,
    ``/slow`` answers after 0.8 s, ``/garbage`` is not HTTP, ``/cut`` ends the connection
    mid-body; anything else: 200."""
    if request.target == "/stall":
        await trio.sleep_forever()
    elif request.target == "/trickle":
        await conn.send_head(200, [("content-length", "100")])
        await conn.send_data(b"x" * 10)
        await trio.sleep_forever()
    elif request.target == "/garbage":
        await conn.send_raw(b"this is not http\r\n\r\n")
    elif request.target == "/slow":
        await trio.sleep(0.8)
        await conn.respond(200)
    elif request.target == "/cut":
        await conn.send_head(200, [("content-length", "100")])
        await conn.send_data(b"x" * 10)
        await conn.close()
    else:
        await conn.respond(200, body=b"ok:" + request.body, reason=b"Fine")


async def elapsed(call: Callable[[], Awaitable[object]]) -> tuple[float, BaseException | None]:
    """How long ``call()`` ran (virtual seconds) and what it raised."""
    start = trio.current_time()
    try:
        await call()
    except Exception as exc:
        return trio.current_time() - start, exc
    return trio.current_time() - start, None


async def test_response_fields(flavour: Flavour) -> None:
    async with serve_memory(script) as server:
        async with trio_pool.Pool(server.origin, connector=server.connector) as pool:
            async with flavour.client(pool, base_url=server.origin) as client:
                r = await client.post("/", content=b"body")
                assert (r.status_code, r.reason_phrase, r.http_version) == (
                    200,
                    "Fine",
                    "HTTP/1.1",
                )
                assert r.extensions["reason_phrase"] == b"Fine"
                assert r.content == b"ok:body"
            assert_idle(pool)


async def test_read_timeout_on_the_head(
    flavour: Flavour, autojump_clock: trio.testing.MockClock
) -> None:
    timeout = flavour.module.Timeout(None, read=2.0)
    async with serve_memory(script) as server:
        async with trio_pool.Pool(server.origin, connector=server.connector) as pool:
            async with flavour.client(pool, base_url=server.origin, timeout=timeout) as client:
                took, error = await elapsed(lambda: client.get("/stall"))
                assert isinstance(error, flavour.module.ReadTimeout), error
                assert 2.0 <= took < 2.1
                assert_idle(pool)
                # After a streamed body, the read deadline starts once the body is written.
                took, error = await elapsed(lambda: client.post("/stall", content=_chunks(3)))
                assert isinstance(error, flavour.module.ReadTimeout), error
                assert 2.0 <= took < 2.1
                assert_idle(pool)
                assert (await client.get("/")).status_code == 200


async def _chunks(count: int) -> AsyncIterator[bytes]:
    for i in range(count):
        yield b"chunk %d;" % i


async def test_read_timeout_on_the_body(
    flavour: Flavour, autojump_clock: trio.testing.MockClock
) -> None:
    timeout = flavour.module.Timeout(None, read=3.0)
    async with serve_memory(script) as server:
        async with trio_pool.Pool(server.origin, connector=server.connector) as pool:
            async with flavour.client(pool, base_url=server.origin, timeout=timeout) as client:
                async with client.stream("GET", "/trickle") as r:
                    chunks = r.aiter_raw()
                    assert await chunks.__anext__() == b"x" * 10
                    took, error = await elapsed(chunks.__anext__)
                    assert isinstance(error, flavour.module.ReadTimeout), error
                    assert 3.0 <= took < 3.1
                assert_idle(pool)
                assert (await client.get("/")).status_code == 200


def _slow_connector(
    connector: Callable[[object], Awaitable[trio.abc.Stream]], seconds: float
) -> Callable[[object], Awaitable[trio.abc.Stream]]:
    """``connector``, each connect taking ``seconds`` (virtual) first."""

    async def slow(origin: object) -> trio.abc.Stream:
        await trio.sleep(seconds)
        return await connector(origin)

    return slow


async def test_pool_timeout(flavour: Flavour, autojump_clock: trio.testing.MockClock) -> None:
    async with serve_memory(script) as server:
        async with trio_pool.Pool(server.origin, connections=1, connector=server.connector) as pool:
            async with flavour.client(pool, base_url=server.origin) as client:
                async with client.stream("GET", "/") as held:  # the only connection
                    # ``pool`` alone bounds the wait for a connection, with or without a
                    # request body, streamed or not (the other timeouts do not add to it).
                    for content in (None, b"body", _chunks(2)):
                        timeout = flavour.module.Timeout(5.0, pool=1.0)
                        took, error = await elapsed(
                            partial(client.post, "/", content=content, timeout=timeout)
                        )
                        assert isinstance(error, flavour.module.PoolTimeout), (content, error)
                        assert 1.0 <= took < 1.1
                        assert pool.statistics().queued == 0
                    await held.aread()
                assert_idle(pool)
                r = await client.post("/", content=_chunks(2), timeout=flavour.module.Timeout(1.0))
                assert r.content == b"ok:chunk 0;chunk 1;"

                # The wait for a connection does not eat into the rest: queued 0.8 s, then a
                # 0.8 s answer, under 1 s timeouts.
                async def get_slow() -> None:
                    r = await client.get("/slow", timeout=flavour.module.Timeout(1.0))
                    assert r.status_code == 200

                start = trio.current_time()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(get_slow)
                    await trio.lowlevel.checkpoint()  # the first one has the connection
                    nursery.start_soon(get_slow)
                assert 1.59 < trio.current_time() - start < 1.7
            assert_idle(pool)


async def test_connect_timeout(flavour: Flavour, autojump_clock: trio.testing.MockClock) -> None:
    async with serve_memory(script) as server:
        slow = _slow_connector(server.connector, 3.0)
        # ``connect`` alone bounds the connect opened for the request.
        for content in (None, b"body", _chunks(2)):
            async with trio_pool.Pool(server.origin, connections=1, connector=slow) as pool:
                async with flavour.client(pool, base_url=server.origin) as client:
                    timeout = flavour.module.Timeout(10.0, connect=2.0)
                    took, error = await elapsed(
                        partial(client.post, "/", content=content, timeout=timeout)
                    )
                    assert isinstance(error, flavour.module.ConnectTimeout), (content, error)
                    assert 2.0 <= took < 2.1
                    assert_idle(pool)
                    assert (await client.get("/", timeout=10.0)).status_code == 200
                assert_idle(pool)
        # ... and not ``pool``: a 3 s connect under a 1 s pool timeout.
        async with trio_pool.Pool(server.origin, connections=1, connector=slow) as pool:
            async with flavour.client(pool, base_url=server.origin) as client:
                timeout = flavour.module.Timeout(1.0, connect=4.0)
                took, error = await elapsed(lambda: client.get("/", timeout=timeout))
                assert error is None
                assert 3.0 <= took < 3.1
            assert_idle(pool)


async def test_exact_timeouts_through_an_agent(
    flavour: Flavour, autojump_clock: trio.testing.MockClock
) -> None:
    # The agent runs its pool's requests in the caller's task: the pool still tells the
    # transport where a request is, so ``connect`` and ``pool`` stay exact.
    async with serve_memory(script) as server:
        slow = _slow_connector(server.connector, 3.0)
        async with trio_pool.Agent(connections=1, connector=slow) as agent:
            async with flavour.client(agent, base_url=server.origin) as client:
                timeout = flavour.module.Timeout(10.0, connect=2.0)
                took, error = await elapsed(partial(client.get, "/", timeout=timeout))
                assert isinstance(error, flavour.module.ConnectTimeout), error
                assert 2.0 <= took < 2.1
                async with client.stream("GET", "/", timeout=10.0) as held:
                    timeout = flavour.module.Timeout(10.0, pool=1.0)
                    took, error = await elapsed(partial(client.get, "/", timeout=timeout))
                    assert isinstance(error, flavour.module.PoolTimeout), error
                    assert 1.0 <= took < 1.1
                    await held.aread()
                assert (await client.get("/")).status_code == 200
            assert_idle(agent)


# httpx wraps the content in an async generator of its own and never closes it (nor the
# test's generator inside) when the write fails: freed at once by reference counting (no
# cycle keeps the failed request any more, issue #16), Trio warns about both.
@pytest.mark.filterwarnings("ignore:Async generator .* was garbage collected:ResourceWarning")
async def test_write_timeout(flavour: Flavour, autojump_clock: trio.testing.MockClock) -> None:
    async def read_head_then_stop(stream: trio.abc.Stream) -> None:
        # Reads the request head, then nothing more: the body cannot be written.
        received = b""
        while b"\r\n\r\n" not in received:
            received += await stream.receive_some()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:

        async def connector(origin: object) -> trio.abc.Stream:
            client_end, server_end = trio.testing.lockstep_stream_pair()
            nursery.start_soon(read_head_then_stop, server_end)
            return client_end

        origin = "http://stuck.test"
        async with trio_pool.Pool(origin, connector=connector) as pool:
            timeout = flavour.module.Timeout(None, write=2.0)
            async with flavour.client(pool, base_url=origin, timeout=timeout) as client:
                took, error = await elapsed(lambda: client.post("/", content=_chunks(5)))
                assert isinstance(error, flavour.module.WriteTimeout), error
                assert 2.0 <= took < 2.1
            assert_idle(pool)
        nursery.cancel_scope.cancel()


async def test_error_mapping(flavour: Flavour, autojump_clock: trio.testing.MockClock) -> None:
    errors = flavour.module
    async with serve_memory(script) as server:
        async with trio_pool.Pool(server.origin, connector=server.connector) as pool:
            async with flavour.client(pool, base_url=server.origin) as client:
                with pytest.raises(errors.RemoteProtocolError) as caught:
                    await client.get("/garbage")
                assert isinstance(caught.value.__cause__, trio_pool.HTTPParserError)
                with pytest.raises(errors.TransportError) as caught:
                    await client.get("/cut")
                assert isinstance(caught.value, errors.ReadError | errors.RemoteProtocolError)
                with pytest.raises(errors.LocalProtocolError, match="keep-alive"):
                    await client.get("/", headers={"keep-alive": "timeout=5"})
                assert_idle(pool)
                assert (await client.get("/")).status_code == 200
            server.hang = True  # connections are never opened: the pool's connect_timeout
            async with trio_pool.Pool(
                server.origin, connector=server.connector, connect_timeout=4.0
            ) as slow:
                async with flavour.client(slow, base_url=server.origin) as client:
                    took, error = await elapsed(lambda: client.get("/"))
                    assert isinstance(error, errors.ConnectTimeout), error
                    assert 4.0 <= took < 4.1
                assert_idle(slow)
        await pool.close()
        async with flavour.client(pool, base_url=server.origin) as client:
            with pytest.raises(errors.TransportError) as caught:
                await client.get("/")
            assert isinstance(caught.value.__cause__, trio_pool.ClientClosedError)


def test_missing_package_names_the_extra(flavour: Flavour) -> None:
    # The adapter's import guard, run in a child where the package cannot be imported.
    import subprocess
    import sys

    code = (
        f"import sys; sys.modules[{flavour.name!r}] = None\n"
        f"try:\n    import trio_pool.{flavour.name}\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"pip install 'trio_pool[{flavour.name}]'" in out.stdout


def test_a_dispatcher_is_required(flavour: Flavour) -> None:
    with pytest.raises(trio_pool.InvalidArgumentError, match="dispatcher"):
        flavour.transport("http://127.0.0.1:1")  # type: ignore[arg-type]


async def test_repr_names_the_dispatcher(flavour: Flavour) -> None:
    async with serve_memory(script) as server:
        async with trio_pool.Pool(server.origin, connector=server.connector) as pool:
            assert repr(flavour.transport(pool)).startswith(
                f"<trio_pool.{flavour.name}.AsyncTransport over <Pool {server.origin}"
            )


async def test_network_stream(flavour: Flavour, autojump_clock: trio.testing.MockClock) -> None:
    async def upgrade(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.switch_protocols(101, [("upgrade", "echo"), ("connection", "upgrade")])
        data = await conn.stream.receive_some()
        await conn.stream.send_all(data.upper())
        await trio.sleep(10)  # then silence, then hang up
        await conn.stream.aclose()

    errors = flavour.module
    async with serve_memory(upgrade) as server:
        async with trio_pool.Pool(server.origin, connector=server.connector) as pool:
            async with flavour.client(pool, base_url=server.origin) as client:
                headers = {"upgrade": "echo", "connection": "upgrade"}
                async with client.stream("GET", "/", headers=headers) as r:
                    assert (r.status_code, r.headers["upgrade"]) == (101, "echo")
                    stream = r.extensions["network_stream"]
                    assert stream.get_extra_info("stream") is not None
                    await stream.write(b"")  # nothing to send: no I/O
                    await stream.write(b"ping")
                    assert await stream.read(100) == b"PING"
                    took, error = await elapsed(lambda: stream.read(100, timeout=2.0))
                    assert isinstance(error, errors.ReadTimeout), error
                    assert 2.0 <= took < 2.1
                    assert await stream.read(100) == b""  # the server hung up
                    await stream.aclose()
                    with pytest.raises(errors.ReadError):
                        await stream.read(100)
                    with pytest.raises(errors.WriteError):
                        await stream.write(b"late")
                assert_idle(pool)
                with pytest.raises(errors.LocalProtocolError, match="upgrade method"):
                    await client.post("/", headers=headers, content=b"x")
                assert pool.statistics().connected == 0


async def test_over_a_mock_pool(flavour: Flavour) -> None:
    # Application code written against httpx, tested with trio_pool's MockPool underneath.
    from trio_pool.testing import MockPool

    async with MockPool("https://api.example") as mock:
        mock.intercept("GET", "/items", query={"page": "2"}).reply(
            200, b'{"items": []}', headers={"content-type": "application/json"}
        )
        mock.intercept("DELETE", "/items/1").reply_with_error(
            trio_pool.SocketError("connection reset")
        )
        async with flavour.client(mock, base_url="https://api.example") as client:
            r = await client.get("/items", params={"page": 2})
            assert r.json() == {"items": []}
            with pytest.raises(flavour.module.ReadError, match="connection reset"):
                await client.delete("/items/1")
        [get, delete] = mock.calls
        assert (get.method, get.target, delete.method) == ("GET", "/items?page=2", "DELETE")


async def test_cancelled_while_upgrading(
    flavour: Flavour, autojump_clock: trio.testing.MockClock
) -> None:
    async with serve_memory(script) as server:  # /stall never answers the upgrade
        async with trio_pool.Pool(server.origin, connector=server.connector) as pool:
            async with flavour.client(pool, base_url=server.origin) as client:
                with trio.move_on_after(5) as scope:
                    await client.get("/stall", headers={"upgrade": "websocket"})
                assert scope.cancelled_caught
                assert_idle(pool)
                # A deadline of the request's own: a timeout, not a cancellation.
                timeout = flavour.module.Timeout(None, read=2.0)
                took, error = await elapsed(
                    lambda: client.get("/stall", headers={"upgrade": "x"}, timeout=timeout)
                )
                assert isinstance(error, flavour.module.ReadTimeout), error
                assert 2.0 <= took < 2.1
                assert_idle(pool)
                assert (await client.get("/")).status_code == 200
