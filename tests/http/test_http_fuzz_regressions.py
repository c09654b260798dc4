"""Focused regression tests for defects the response fuzzer (tests/fuzz/test_response_fuzz.py)
found in the HTTP client: a request pipelined behind a response after which the server hangs
up must be re-sent, not failed."""

from __future__ import annotations

import trio
import trio.testing

import trio_pool
from trio_pool import Client
from trio_pool.testing import Script, ServerConnection, ServerRequest, serve_memory


def hang_up_after_first(first: bytes, behind_written: trio.Event) -> Script:
    """A server that answers the first connection's first request with the raw ``first``
    once the request pipelined behind it is on the wire, then hangs up without answering
    that one (its keep-alive limit, say); later connections answer normally."""

    async def script(request: ServerRequest, conn: ServerConnection) -> None:
        if request.connection == 0:
            await behind_written.wait()
            await conn.send_raw(first)
            await conn.close()
        else:
            await conn.respond(200, body=request.target.encode())

    return script


async def pipelined_pair(client: Client, behind_written: trio.Event) -> tuple[object, object]:
    """GET /first, then GET /behind pipelined behind it; what each gave."""
    outcomes: dict[str, object] = {}

    async def run(path: str) -> None:
        try:
            outcomes[path] = (await client.request("GET", path)).body
        except trio_pool.TrioPoolError as exc:
            outcomes[path] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "/first")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(run, "/behind")
        await trio.testing.wait_all_tasks_blocked()
        assert client.statistics().running == 2  # both written, no response yet
        behind_written.set()
    return outcomes["/first"], outcomes["/behind"]


KEEP_ALIVE = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst"
TO_EOF = b"HTTP/1.1 200 OK\r\n\r\nfirst"  # no framing: the body runs to the EOF


async def test_an_unanswered_idempotent_pipelined_request_is_retried() -> None:
    """Fuzzer example (valid keep-alive response, ``close_after``, pipelined): the request
    behind it failed with SocketError("other side closed") when the server hung up without
    answering it. It was written before any response had arrived, so it did not count as
    sent on a reused connection; but by its turn to read, the response before it had
    completed: the keep-alive race RFC 9112 9.3.2 says to retry (API.md 1.6)."""
    behind_written = trio.Event()
    async with serve_memory(hang_up_after_first(KEEP_ALIVE, behind_written)) as server:
        async with Client(server.origin, connector=server.connector, pipelining=2) as client:
            first, behind = await pipelined_pair(client, behind_written)
            assert first == b"first"
            assert behind == b"/behind"  # re-sent on a new connection
            assert server.connections == 2
            # (the server never read the first copy: it hung up after answering /first)
            assert [(r.target, r.connection) for r in server.requests] == [
                ("/first", 0),
                ("/behind", 1),
            ]


async def test_an_unanswered_pipelined_request_is_not_retried_when_retries_are_off() -> None:
    behind_written = trio.Event()
    async with serve_memory(hang_up_after_first(KEEP_ALIVE, behind_written)) as server:
        async with Client(
            server.origin, connector=server.connector, pipelining=2, retry_idempotent=False
        ) as client:
            first, behind = await pipelined_pair(client, behind_written)
            assert first == b"first"
            assert isinstance(behind, trio_pool.SocketError)


async def test_a_request_pipelined_behind_a_body_ended_by_eof_is_re_sent() -> None:
    """Fuzzer example ``HTTP/1.1 200 OK\\r\\n\\r\\n`` (no framing: the body runs to the EOF),
    pipelined: the connection was given back as reusable, since h11 saw both sides DONE, so
    the request behind it read on a closed connection and failed with SocketError (never
    retried: the EOF counted as bytes left over). A connection whose peer closed is now
    never kept, and what was pipelined behind it is re-sent (API.md 1.6)."""
    behind_written = trio.Event()
    disconnects: list[BaseException] = []
    async with serve_memory(hang_up_after_first(TO_EOF, behind_written)) as server:
        async with Client(
            server.origin, connector=server.connector, pipelining=2, retry_idempotent=False
        ) as client:
            client.on("disconnect", lambda origin, targets, error: disconnects.append(error))
            first, behind = await pipelined_pair(client, behind_written)
            assert first == b"first"
            assert behind == b"/behind"  # re-sent, not retried: retries are off
            assert server.connections == 2
            assert isinstance(disconnects[0], trio_pool.InformationalError)
            assert "closed" in str(disconnects[0])
