"""The embedded benchmark target: a minimal, fast HTTP/1.1 server run in a child process.

Theory of operation
-------------------
``trio-pool bench`` without a URL needs a server that is never the bottleneck, so this is a
raw Trio TCP server with a hand-rolled responder instead of a general HTTP stack. It answers
every request with the same small ``200`` response (or, for the target ``/64k``, a 64 KiB
body, which the benchmark suite uses to measure body throughput), which keeps the per-request
cost to one ``find`` for the end of the head, a split of a handful of header lines, and
appending a precomputed response.

Each connection runs one :class:`RequestParser` over the bytes it receives. The parser
consumes as many complete requests as the buffer holds and returns their responses
concatenated, so pipelined requests are answered in order with a single write. Request bodies
are framed by ``content-length`` and discarded as they arrive (never buffered whole);
``transfer-encoding`` bodies are refused with ``501`` because a benchmark client never needs
them. HTTP/1.1 connections are kept alive unless the client sends ``connection: close``;
HTTP/1.0 connections are closed after one response.

Run as ``python -m trio_pool._server``, it listens on ``--host``/``--port`` (port 0 = any
free port; ``--port`` may be repeated to listen on several ports, as two upstreams of one
server), over TLS when ``--certfile``/``--keyfile`` are given, prints ``listening HOST PORT...``
(one port per ``--port``) on stdout once it accepts connections, and exits
when its stdin reaches end of file. That stdin pipe is the lifeline to the parent: when the
parent closes it, or dies in any way (even ``SIGKILL``), the server exits by itself, so it
can never be orphaned.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import ssl
import sys
from collections.abc import Sequence

import attrs
import trio

__all__ = ["LARGE_BODY", "LARGE_TARGET", "RESPONSE_BODY", "RequestParser", "main", "serve"]

#: The body of every ``200`` response (the size nginx serves in DESIGN.md's measurements).
RESPONSE_BODY = b"hello world\n"

#: The request target answered with :data:`LARGE_BODY` instead.
LARGE_TARGET = b"/64k"

#: 64 KiB of varied bytes, for measuring body throughput rather than per-request overhead.
LARGE_BODY = bytes(range(256)) * 256

#: Largest request head accepted; longer heads get ``431`` and the connection is closed.
MAX_HEAD_SIZE = 65536

_RECEIVE_SIZE = 65536


def _response(status: bytes, body: bytes, *, head_only: bool, close: bool) -> bytes:
    lines = [
        b"HTTP/1.1 " + status,
        b"server: trio-pool-bench",
        b"content-type: text/plain",
        b"content-length: " + str(len(body)).encode(),
    ]
    if close:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else body)


# Every response this server can send, precomputed: indexed by (large, head_only, close).
_OK = {
    (large, head_only, close): _response(
        b"200 OK", LARGE_BODY if large else RESPONSE_BODY, head_only=head_only, close=close
    )
    for large in (False, True)
    for head_only in (False, True)
    for close in (False, True)
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _error(status: bytes) -> bytes:
    return _response(status, status + b"\n", head_only=False, close=True)


@attrs.define(eq=False)
class RequestParser:
    """Turns the bytes of one connection into the bytes of its responses.

    Sans-I/O: :meth:`feed` takes whatever the socket produced and returns what to send back,
    so it can be tested by feeding bytes whole or one at a time.
    """

    _buffer: bytearray = attrs.field(factory=bytearray)
    _body_left: int = 0
    #: The response of the request whose body is still arriving; sent once it is complete.
    _held: bytes = b""
    _close_after_held: bool = False
    #: Set once a response that closes the connection was produced; later bytes are ignored.
    closed: bool = False

    def feed(self, data: bytes | bytearray) -> bytes:
        """Consume ``data``; return the responses of every request it completed, in order.

        After a call that sets :attr:`closed`, the caller sends the returned bytes and then
        closes the connection.
        """
        if self.closed:
            return b""
        self._buffer += data
        out = bytearray()
        while not self.closed:
            if self._body_left:
                # Discard body bytes as they come; the response waits for the last one.
                taken = min(self._body_left, len(self._buffer))
                del self._buffer[:taken]
                self._body_left -= taken
                if self._body_left:
                    break
                out += self._held
                self._held = b""
                self.closed = self._close_after_held
                continue
            if not self._next_request(out):
                break
        return bytes(out)

    def _next_request(self, out: bytearray) -> bool:
        """Parse one request head from the buffer into ``out``; False if it is incomplete."""
        buffer = self._buffer
        # RFC 9112 section 2.2: ignore empty lines before a request line.
        while buffer[:2] == b"\r\n":
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD_SIZE:
                self._fail(out, b"431 Request Header Fields Too Large")
            return False
        if end > MAX_HEAD_SIZE:
            self._fail(out, b"431 Request Header Fields Too Large")
            return False
        lines = bytes(buffer[:end]).split(b"\r\n")
        del buffer[: end + 4]

        request_line = lines[0].split(b" ")
        if len(request_line) != 3 or not request_line[0] or not request_line[1]:
            self._fail(out, b"400 Bad Request")
            return False
        method, target, version = request_line
        if version == b"HTTP/1.1":
            keep_alive = True
        elif version == b"HTTP/1.0":
            keep_alive = False
        else:
            self._fail(out, b"505 HTTP Version Not Supported")
            return False

        length = 0
        expect_continue = False
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                self._fail(out, b"400 Bad Request")
                return False
            name = name.lower()
            value = value.strip()
            if name == b"content-length":
                if not value.isdigit() or (length and int(value) != length):
                    self._fail(out, b"400 Bad Request")
                    return False
                length = int(value)
            elif name == b"transfer-encoding":
                self._fail(out, b"501 Not Implemented")
                return False
            elif name == b"connection":
                if b"close" in (token.strip() for token in value.lower().split(b",")):
                    keep_alive = False
            elif name == b"expect" and value.lower() == b"100-continue":
                expect_continue = True

        response = _OK[target == LARGE_TARGET, method == b"HEAD", not keep_alive]
        if length:
            if expect_continue:
                out += _CONTINUE
            self._body_left = length
            self._held = response
            self._close_after_held = not keep_alive
        else:
            out += response
            self.closed = not keep_alive
        return True

    def _fail(self, out: bytearray, status: bytes) -> None:
        out += _error(status)
        self.closed = True


async def _serve_connection(stream: trio.abc.Stream) -> None:
    parser = RequestParser()
    async with stream:
        try:
            while not parser.closed:
                data = await stream.receive_some(_RECEIVE_SIZE)
                if not data:
                    return
                out = parser.feed(data)
                if out:
                    await stream.send_all(out)
        except trio.BrokenResourceError:  # SSLStream reports a broken transport this way too
            # The client went away mid-exchange: routine for a benchmark target.
            return


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started`` receives the bound port.

    Args:
        host: The address to listen on.
        port: The port to listen on; 0 picks a free one.
        ssl_context: Serve HTTPS with this server-side context; plain HTTP if None.
        task_status: For ``nursery.start``.
    """
    tcp_listeners = await trio.open_tcp_listeners(port, host=host)
    bound = tcp_listeners[0].socket.getsockname()[1]
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(tcp_listeners)
    if ssl_context is not None:
        listeners = [
            trio.SSLListener(listener, ssl_context, https_compatible=True)
            for listener in tcp_listeners
        ]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, _serve_connection, listeners)
        task_status.started(bound)


def _read_until_eof(fd: int) -> None:
    while os.read(fd, 4096):
        pass


async def _wait_for_stdin_eof() -> None:
    # Blocking reads in a worker thread rather than trio.lowlevel.FdStream, which would switch
    # a terminal's stdin to non-blocking mode and leave it so for the user's shell. os.read,
    # not sys.stdin: an abandoned thread blocked inside the buffered reader holds its lock,
    # and interpreter shutdown then aborts trying to take it.
    await trio.to_thread.run_sync(_read_until_eof, sys.stdin.fileno(), abandon_on_cancel=True)


async def _main(host: str, ports: list[int], ssl_context: ssl.SSLContext | None) -> None:
    async with trio.open_nursery() as nursery:
        bound = [
            await nursery.start(functools.partial(serve, host, port, ssl_context=ssl_context))
            for port in ports
        ]
        print(f"listening {host} {' '.join(map(str, bound))}", flush=True)
        await _wait_for_stdin_eof()
        nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until stdin closes; return the exit status.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on a normal stop (stdin closed or Ctrl-C).
    """
    parser = argparse.ArgumentParser(
        prog="python -m trio_pool._server",
        description="The embedded HTTP/1.1 target of `trio-pool bench`. Exits when stdin closes.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, action="append", help="port to listen on (repeatable; default 0)"
    )
    parser.add_argument("--certfile", help="PEM certificate chain: serve HTTPS (with --keyfile)")
    parser.add_argument("--keyfile", help="PEM private key of --certfile")
    args = parser.parse_args(argv)
    if (args.certfile is None) != (args.keyfile is None):
        parser.error("--certfile and --keyfile go together")
    ssl_context = None
    if args.certfile is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.certfile, args.keyfile)
    # Ctrl-C in a terminal is a normal way to stop a server started by hand.
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(_main, args.host, args.port or [0], ssl_context)
    return 0


if __name__ == "__main__":
    sys.exit(main())
