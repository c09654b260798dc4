"""A fault-injecting HTTP/1.1 server for the chaos soak, reproducible from a seed.

Theory of operation
-------------------
:class:`FaultyServer` is a ``trio_pool.testing`` *script*, so the same faults run over real
sockets on 127.0.0.1 (``serve_h11``, port 0) and over in-memory streams (``serve_memory``,
where the autojump clock makes long stalls free). Every request carries a unique id in its
path (``/<id>``); the server counts how many times each id *arrived* (so a test can prove a
non-idempotent request was never sent twice) and picks the fault for that arrival from a
``random.Random`` seeded with ``(seed, id, arrival number)``. The fault a request meets
therefore depends on the seed alone, not on how the scheduler interleaved the tasks: a
failing run is replayed by giving its seed back.

The server runs with ``streaming=True``: a request has *arrived* once its head has, and
some faults strike before its body was read (the client may still be writing it).

A successful answer's body is the request id repeated (``"<id>;" * n``), so a caller can
check that it got *its* response (a crossed pipelined response would show).

Refused and slow connections are the connector's business (:func:`faulty_connector`): a
connect attempt is refused with the configured probability, by a real closed port on
loopback or, in memory, by raising ``ConnectionRefusedError`` as a real connect would;
another is delayed (past ``connect_timeout`` in memory).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import random
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from trio_pool.testing import ServerConnection, ServerRequest

__all__ = ["Fault", "FaultyServer", "closed_port", "faulty_connector", "is_own_body"]


class Fault(enum.Enum):
    """What the server does with one arrival (or a connector with one connect)."""

    ANSWER = "answer"  # a normal response (content-length or chunked)
    ANSWER_CLOSE = "answer with connection: close"  # pipelined requests behind are re-sent
    # Answer, then act on the idle connection a moment later (the keep-alive race):
    IDLE_CLOSE = "answer, then close the idle connection"
    IDLE_BYTES = "answer, then send unsolicited bytes and close"
    CLOSE_BEFORE = "close before responding (and before reading the request body)"
    EARLY_ANSWER = "answer before reading the request body, then close"
    CLOSE_MID_LENGTH = "close mid-body (content-length)"
    CLOSE_MID_CHUNKED = "close mid-body (chunked)"
    GARBAGE = "garbage bytes"
    STALL_HEAD = "stall before the head"  # the client's headers_timeout must end it
    STALL_BODY = "stall mid-body"  # the client's body_timeout must end it
    SLOW = "slow answer (dribbled)"  # gaps shorter than the timeouts: must succeed
    # (sometimes after a ``100 Continue``)
    REFUSED = "connection refused"
    SLOW_CONNECT = "slow connect"  # (by the connector) past connect_timeout, or just slow


# Bytes nobody asked for, on an idle connection. Not a valid response: one would be
# indistinguishable from the answer to a request the client wrote as they were on their way.
UNSOLICITED = b"\x00unsolicited\r\n\r\n"


def is_own_body(rid: str, body: bytes) -> bool:
    """Whether ``body`` is a successful answer to request ``rid`` (its id, repeated)."""
    piece = f"{rid};".encode()
    return body == piece * (len(body) // len(piece))


@attrs.define(eq=False)
class FaultyServer:
    """The script of a faulty server (see the module docstring).

    Attributes:
        seed: decides every fault.
        weights: relative frequency of each fault the server injects (ANSWER included).
        gap: the pause, in seconds, between the pieces of a slow answer (keep it under
            the client's timeouts).
        healthy: while True, every arrival is answered normally (for the after-run check).
        arrivals: how many times each request id reached the server.
        faults: how many times each fault was injected.
    """

    seed: int
    weights: Mapping[Fault, float]
    gap: float
    healthy: bool = False
    arrivals: Counter[str] = attrs.Factory(Counter)
    faults: Counter[Fault] = attrs.Factory(Counter)

    def _plan(self, rid: str, method: str) -> tuple[Fault, random.Random]:
        self.arrivals[rid] += 1
        rng = random.Random(f"{self.seed}/{rid}/{self.arrivals[rid]}")
        if self.healthy:
            return Fault.ANSWER, rng
        kinds = [kind for kind in self.weights if kind not in _CONNECT_FAULTS]
        fault = rng.choices(kinds, [self.weights[kind] for kind in kinds])[0]
        if method == "HEAD" and fault in _BODY_FAULTS:
            fault = Fault.CLOSE_BEFORE  # a response to HEAD has no body to cut
        self.faults[fault] += 1
        return fault, rng

    async def __call__(self, request: ServerRequest, conn: ServerConnection) -> None:
        rid = request.target.lstrip("/")
        fault, rng = self._plan(rid, request.method)
        # Mostly small bodies; some larger than what an unread stream may drain cheaply.
        repeat = rng.randrange(0, 200) if rng.random() < 0.85 else rng.randrange(5000, 12000)
        body = b"" if request.method == "HEAD" else f"{rid};".encode() * repeat
        framing = [("transfer-encoding", "chunked")] if rng.random() < 0.5 else []
        if rng.random() < 0.2:  # a keep-alive hint, sometimes below the client's threshold
            framing.append(("keep-alive", f"timeout={rng.choice([1, 3, 5, 30])}"))
        if fault not in _BEFORE_THE_BODY:
            while await conn.receive_data() is not None:
                pass
        if fault in _ANSWERS:
            if fault is Fault.ANSWER_CLOSE:
                framing.append(("connection", "close"))
            await conn.respond(200, framing, body)
            if fault in (Fault.IDLE_CLOSE, Fault.IDLE_BYTES):
                await trio.sleep(self.gap * rng.random())
                if fault is Fault.IDLE_BYTES:
                    await conn.send_raw(UNSOLICITED)
                await conn.close()
        elif fault is Fault.CLOSE_BEFORE:
            await conn.close()
        elif fault in (Fault.CLOSE_MID_LENGTH, Fault.CLOSE_MID_CHUNKED):
            if fault is Fault.CLOSE_MID_LENGTH:
                framing = [("content-length", str(len(body) + 10))]
            else:
                framing = [("transfer-encoding", "chunked")]
            await conn.send_head(200, framing)
            await conn.send_data(body[: rng.randrange(0, len(body) + 1)] or b"x")
            await conn.close()
        elif fault is Fault.GARBAGE:
            await conn.send_raw(_garbage(rng))
            await conn.close()
        elif fault is Fault.STALL_HEAD:
            await _hold(conn)
        elif fault is Fault.STALL_BODY:
            await conn.send_head(200, [("content-length", str(len(body) + 10))])
            await conn.send_data(body[: len(body) // 2] or b"x")
            await _hold(conn)
        else:
            await self._dribble(conn, framing, body, rng)

    async def _dribble(
        self,
        conn: ServerConnection,
        framing: list[tuple[str, str]],
        body: bytes,
        rng: random.Random,
    ) -> None:
        await trio.sleep(self.gap * rng.random())
        if rng.random() < 0.3:
            await conn.send_raw(b"HTTP/1.1 100 Continue\r\n\r\n")
            await trio.sleep(self.gap * rng.random())
        if not any(name == "transfer-encoding" for name, _ in framing):
            framing.append(("content-length", str(len(body))))
        await conn.send_head(200, framing)
        pieces = rng.randrange(1, 5)
        step = len(body) // pieces + 1
        for start in range(0, len(body), step):
            await trio.sleep(self.gap * rng.random())
            await conn.send_data(body[start : start + step])
        await conn.send_end()


async def _hold(conn: ServerConnection) -> None:
    """Stall: say nothing more until the client hangs up (its timeout must make it), then
    close. What the client still sends meanwhile (pipelined requests) is read and dropped."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while await conn.stream.receive_some():
            pass
    await conn.close()


_CONNECT_FAULTS = frozenset({Fault.REFUSED, Fault.SLOW_CONNECT})
_ANSWERS = frozenset(
    {Fault.ANSWER, Fault.ANSWER_CLOSE, Fault.IDLE_CLOSE, Fault.IDLE_BYTES, Fault.EARLY_ANSWER}
)
# Faults that act as soon as the request head arrived, leaving its body unread.
_BEFORE_THE_BODY = frozenset(
    {Fault.CLOSE_BEFORE, Fault.GARBAGE, Fault.STALL_HEAD, Fault.EARLY_ANSWER}
)
_BODY_FAULTS = frozenset(
    {Fault.CLOSE_MID_LENGTH, Fault.CLOSE_MID_CHUNKED, Fault.STALL_BODY, Fault.GARBAGE}
)


def _garbage(rng: random.Random) -> bytes:
    """Bytes that are not an HTTP/1.1 response: noise as the status line, or a valid head
    followed by broken chunk framing. Each ends its line, so the client's parser fails at
    once instead of waiting for more."""
    noise = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(4, 64)))
    noise = noise.replace(b"\r", b"?").replace(b"\n", b"?")
    if rng.random() < 0.5:
        return noise + b"\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz" + noise + b"\r\n"


Connect = Callable[[Any], Awaitable[trio.abc.Stream]]


def faulty_connector(
    connect: Connect,
    server: FaultyServer,
    *,
    rate: float,
    slow: float,
    refuse_port: int | None = None,
) -> Connect:
    """A ``connector=`` that, while ``server`` is not healthy, refuses a connect attempt
    with probability ``rate`` and delays one by up to ``slow`` seconds with the same
    probability (past the client's ``connect_timeout``, if ``slow`` is larger). Refused:
    by connecting to ``refuse_port`` (a closed loopback port: the kernel refuses) or, if
    that is None, by raising ``ConnectionRefusedError`` itself. Both are counted in
    ``server.faults``."""
    rng = random.Random(f"{server.seed}/connect")

    async def connector(origin: Any) -> trio.abc.Stream:
        draw = rng.random()
        if not server.healthy and draw < rate:
            server.faults[Fault.REFUSED] += 1
            if refuse_port is not None:
                return await trio.open_tcp_stream("127.0.0.1", refuse_port)
            await trio.lowlevel.checkpoint()
            raise ConnectionRefusedError(errno.ECONNREFUSED, "connection refused (chaos)")
        if not server.healthy and draw < 2 * rate:
            server.faults[Fault.SLOW_CONNECT] += 1
            await trio.sleep(rng.uniform(0, slow))
        return await connect(origin)

    return connector


def closed_port() -> socket.socket:
    """A loopback socket bound but not listening: connecting to its port is refused, and
    nobody else can take the port while it is open. The caller closes it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock
