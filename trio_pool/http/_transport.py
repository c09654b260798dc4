"""Bytes in and out of one connection: everything that touches the socket itself.

Theory of operation
-------------------
A :class:`Transport` is the one place in the HTTP core that makes system calls or uses
Trio's wait primitives directly. Above it, ``_connection.py`` speaks HTTP/1.1 (h11) and
knows nothing of sockets.

* **Opening** (:meth:`Transport.open`): TCP, then TLS for ``https``, or the caller's
  ``connector`` (its stream used as is), within ``connect_timeout``.
* **Raw I/O.** On a plain TCP connection the bytes go through a non-blocking duplicate of
  the socket (``_raw``) rather than ``SocketStream``: one system call per write or read plus
  Trio's wait primitives, with the same cancellation points as ``send_all``/``receive_some``
  but a fraction of their per-call Python overhead, which dominates a small request's cost.
  TLS and custom streams use the stream.
* **Liveness** (:meth:`Transport.alive`): a non-blocking ``MSG_PEEK`` on the TCP socket
  (TLS included: the probe is a duplicate of the socket under the TLS stream).
* **The interruptible receive** (:meth:`Transport.arm_interrupt`,
  :meth:`Transport.wait_receive`): the fast read mode of a request (``request()``, see
  ``_dispatcher.py``) holds no cancel scope; a read of it that has to wait on plain TCP is
  interrupted through the socket (``notify_closing`` wakes the waiting task with
  ``ClosedResourceError``). The connection is closed afterwards anyway, as after a cancel.

Who may change what: only the connection that owns the transport calls its methods, from
one task at a time, except that one task may send (a duplex body) while another receives,
as Trio streams allow. The interrupt is armed by the reader and fired by whoever times out
or aborts that read (the connection's task, ``destroy()``, a ``Controller.abort()``).
"""

from __future__ import annotations

import math
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from .._errors import ConnectTimeoutError, TrioPoolError, connect_error

if TYPE_CHECKING:
    from ._options import ClientOptions
    from ._origin import Origin

__all__ = ["Connector", "PrefixedStream", "Transport", "default_ssl_context", "open_stream"]

Connector = Callable[["Origin"], Awaitable[trio.abc.Stream]]
"""A custom way to open the transport (the ``connector=`` option): e.g. in-memory streams."""

RECEIVE_SIZE = 65536


class Transport:
    """The byte stream of one connection (see the module docstring)."""

    __slots__ = ("_interrupt", "_probe", "_raw", "raw", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._probe = _probe_socket(stream)
        # Plain TCP: do the I/O on the probe (see the module docstring).
        self._raw = self._probe if isinstance(stream, trio.SocketStream) else None
        # True on plain TCP: reads and writes are system calls on the socket, and a waiting
        # receive can be interrupted through it (wait_receive). Read-only.
        self.raw = self._raw is not None
        self._interrupt = None if self._raw is None else _SocketInterrupt(self._raw)

    @classmethod
    async def open(
        cls, origin: Origin, options: ClientOptions, connector: Connector | None
    ) -> Transport:
        """:func:`open_stream`, as a transport. A checkpoint; raises like it."""
        return cls(await open_stream(origin, options, connector))

    def alive(self) -> bool:
        """False if the peer closed the connection or sent bytes nobody asked for. Not a
        checkpoint: a non-blocking ``MSG_PEEK`` on the TCP socket, one system call.

        Streams that are not (TLS over) a trio socket — e.g. in-memory test streams — cannot
        be probed and count as alive; their failure then shows on the next request (and an
        idempotent one is retried).
        """
        if self._probe is None:
            return True
        try:
            self._probe.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        # b"" is a FIN; anything else is unsolicited (for TLS: possibly a close_notify or a
        # late session ticket; either way this connection is not worth the risk).
        return False

    # ------------------------------------------------------------------ writing

    async def send_all(self, data: bytes) -> None:
        """Write ``data`` whole. Checks for cancellation first; waits (a checkpoint) only
        while the socket's buffer is full. A broken socket raises ``BrokenResourceError``,
        as ``SocketStream`` does."""
        raw = self._raw
        if raw is None:
            await self.stream.send_all(data)
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        total = len(data)
        sent = 0
        try:
            while True:
                try:
                    sent += raw.send(memoryview(data)[sent:] if sent else data)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(raw)
                    continue
                if sent >= total:
                    return
                await trio.lowlevel.wait_writable(raw)
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    # ------------------------------------------------------------------ reading

    async def receive(self) -> bytes:
        """The next bytes from the peer (b"" at EOF). A checkpoint, like ``receive_some``:
        a read that has to wait waits for the socket, one that does not is still a schedule
        point. Cancelled by the caller's cancel scope."""
        raw = self._raw
        if raw is None:
            data = await self.stream.receive_some(RECEIVE_SIZE)
            return bytes(data) if type(data) is not bytes else data
        # The schedule point first: the request was usually just written, and while the
        # other tasks run the server answers, so the read then finds the bytes there
        # instead of failing (a system call and an exception) and waiting for the socket
        # (an epoll registration and a wake-up), as a hand-written send/receive loop does.
        await trio.lowlevel.checkpoint()
        try:
            while True:
                try:
                    return raw.recv(RECEIVE_SIZE)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(raw)
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    def receive_ready(self) -> bytes | None:
        """What a plain TCP socket holds already (b"" at EOF), or None if nothing is there
        (or this is not plain TCP). Not a checkpoint, no wait.

        Raises:
            trio.BrokenResourceError: the socket failed.
        """
        raw = self._raw
        if raw is None:
            return None
        try:
            return raw.recv(RECEIVE_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    def arm_interrupt(self) -> _SocketInterrupt:
        """The interrupt of the next :meth:`wait_receive` (plain TCP only), reset."""
        interrupt = self._interrupt
        assert interrupt is not None
        interrupt.fired = False
        return interrupt

    async def wait_receive(self) -> bytes | None:
        """Wait for bytes on a plain TCP socket, without a cancel scope: None if the interrupt
        armed by :meth:`arm_interrupt` fired (then the transport must be closed). A
        checkpoint (it waits).

        Raises:
            trio.BrokenResourceError: the socket failed.
            trio.ClosedResourceError: the transport was closed under the wait.
        """
        raw = self._raw
        interrupt = self._interrupt
        assert raw is not None
        assert interrupt is not None
        try:
            while True:
                await trio.lowlevel.wait_readable(raw)
                try:
                    data = raw.recv(RECEIVE_SIZE)
                except BlockingIOError:
                    continue
                if not interrupt.fired:  # else it fired as the bytes came: too late
                    return data
                return None
        except trio.ClosedResourceError:
            if not interrupt.fired:
                raise
            return None
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    # ------------------------------------------------------------------ ending

    async def aclose(self) -> None:
        """Close at once (no graceful TLS goodbye). A checkpoint."""
        self._close_probe()
        await trio.aclose_forcefully(self.stream)

    def detach(self, prefix: bytes) -> trio.abc.Stream:
        """Stop owning the stream and return it, ``prefix`` (bytes already read past the
        last response) first (``upgrade()``/``connect()`` hand it over)."""
        self._close_probe()
        return PrefixedStream(self.stream, prefix) if prefix else self.stream

    def _close_probe(self) -> None:
        if self._probe is not None:
            trio.lowlevel.notify_closing(self._probe)  # a task waiting on it gets an error
            self._probe.close()


class _SocketInterrupt:
    """Interrupts a read waiting on a plain TCP socket without a cancel scope: it wakes
    with ``ClosedResourceError`` (the connection is closed afterwards, as after a cancel)."""

    __slots__ = ("fired", "socket")

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.fired = False

    def cancel(self) -> None:
        if not self.fired:
            self.fired = True
            trio.lowlevel.notify_closing(self.socket)


class PrefixedStream(trio.abc.Stream):
    """A handed-over connection: bytes h11 had already read come first."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def open_stream(
    origin: Origin, options: ClientOptions, connector: Connector | None
) -> trio.abc.Stream:
    """Open the transport to ``origin`` within ``connect_timeout``: ``connector``'s stream,
    or TCP (``local_address``, ``happy_eyeballs_delay``) or the Unix socket ``socket_path``,
    then TLS for https (the server name is the origin's host either way). A checkpoint.

    Raises:
        ConnectTimeoutError: the timeout expired.
        ConnectError: refused, unreachable, DNS, TLS handshake or verification failed
            (or the ``connector`` raised), with that error as ``__cause__``. A connector that
            raises a library error (a ``ProxyError``, a timeout of its own) raises it as is.
    """
    stream: trio.abc.Stream | None = None
    with trio.move_on_after(options.connect_timeout or math.inf) as scope:
        try:
            if connector is not None:
                stream = await connector(origin)
            else:
                if options.socket_path is not None:
                    stream = await trio.open_unix_socket(options.socket_path)
                else:
                    stream = await trio.open_tcp_stream(
                        origin.host,
                        origin.port,
                        happy_eyeballs_delay=options.happy_eyeballs_delay,
                        local_address=options.local_address,
                    )
                if origin.is_https:
                    context = options.ssl_context or _default_ssl_context()
                    stream = trio.SSLStream(
                        stream, context, server_hostname=origin.host, https_compatible=True
                    )
                    await stream.do_handshake()
        except TrioPoolError:
            if stream is not None:  # pragma: no cover - a connector's own error, nothing open
                await trio.aclose_forcefully(stream)
            raise
        except Exception as exc:  # OSError, TLS, or whatever a custom connector raised
            if stream is not None:
                await trio.aclose_forcefully(stream)
            raise connect_error(origin.text, exc)  # noqa: B904 - it sets its own cause
        except BaseException:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            raise
    if scope.cancelled_caught:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        raise ConnectTimeoutError(
            f"connecting to {origin.text} took longer than {options.connect_timeout} s"
        )
    assert stream is not None
    return stream


_default_context: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """The default TLS context (built once per process)."""
    return _default_ssl_context()


def _default_ssl_context() -> ssl.SSLContext:
    # Building a context loads the trust store (milliseconds): do it once per process.
    global _default_context
    if _default_context is None:
        _default_context = ssl.create_default_context()
    return _default_context


def _probe_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """A non-blocking duplicate of the TCP socket under ``stream``, for :meth:`alive`."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if not isinstance(stream, trio.SocketStream):
        return None
    probe = socket.socket(fileno=os.dup(stream.socket.fileno()))
    probe.setblocking(False)
    return probe
