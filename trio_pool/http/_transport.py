"""Bytes in and out of one connection: everything that touches the socket itself.

Theory of operation
-------------------
A :class:`Transport` is the one place in the HTTP core that makes system calls or uses
Trio's wait primitives directly. Above it, ``_connection.py`` speaks HTTP/1.1 (h11) and
knows nothing of sockets.

* **Opening** (:meth:`Transport.open`): TCP, then TLS for ``https`` (``_tls.py``), or the
  caller's ``connector``, within ``connect_timeout``.
* **Raw I/O.** A TCP connection — with TLS on it or not, opened here or a connector's
  ``SocketStream`` (TLS over one included: a proxy tunnel) — is *adopted*: the transport
  takes the socket out of its ``SocketStream`` (``detach``: one file descriptor per
  connection, no duplicate) and does one system call per write or read plus Trio's wait
  primitives, with the same cancellation points as ``send_all``/``receive_some`` but a
  fraction of their per-call Python overhead, which dominates a small request's cost. TLS
  runs on that socket through a :class:`~._tls.TLSSession` (bytes in, bytes out). Other
  streams (in-memory, TLS inside TLS) are used as streams.
* **Liveness** (:meth:`Transport.alive`): on plain TCP a zero-timeout ``poll`` of the
  socket (readable means a FIN, an error or unsolicited bytes: dead either way; what a
  ``MSG_PEEK`` would tell, without the exception of its usual ``EAGAIN``), through one poll
  object per thread (none per connection: idle connections stay small); with
  TLS a non-blocking read instead, so a post-handshake message (a TLS 1.3 session ticket
  that arrived while the connection was idle) is consumed rather than taken for a sign of
  death.
* **The interruptible receive** (:meth:`Transport.arm_interrupt`,
  :meth:`Transport.wait_receive`): the fast read mode of a request (``request()``, see
  ``_dispatcher.py``) holds no cancel scope; a read of it that has to wait on the socket is
  interrupted through the socket (``notify_closing`` wakes the waiting task with
  ``ClosedResourceError``). The connection is closed afterwards anyway, as after a cancel.
  The transport is its own interrupt (no object per connection for it).

Who may change what: only the connection that owns the transport calls its methods, from
one task at a time, except that one task may send (a duplex body) while another receives,
as Trio streams allow (``_sending`` keeps a reader's TLS answer from interleaving with a
write). The interrupt is armed by the reader and fired by whoever times out or aborts that
read (the connection's task, ``destroy()``, a ``Controller.abort()``).
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from .._errors import ConnectTimeoutError, TrioPoolError, connect_error
from ._tls import RECEIVE_SIZE, TLSSession, TLSStream, start_tls

if TYPE_CHECKING:
    from ._options import ClientOptions
    from ._origin import Origin

__all__ = ["Connector", "PrefixedStream", "Transport", "default_ssl_context", "open_stream"]

_POLL: Callable[[], select.poll] | None = getattr(select, "poll", None)
_PROBE = threading.local()
"""Its ``poll``: this thread's ``select.poll`` object for :meth:`Transport.alive` (an
object may not be polled by two threads at once, and Trio runs may live in several)."""

SOCKET_RECEIVE_SIZE = 126976
"""Bytes asked for per read of the socket (124 KiB). Big enough that a 64 KiB body arrives
with its head in one read: one system call and one ``bytes`` object, where a 64 KiB read
splits it in two pieces that are joined afterwards (a second copy of the body). Below
glibc's default 128 KiB mmap threshold, so the buffer comes from the heap (the unused tail
is given back at once) instead of an ``mmap``/``munmap`` per read."""

Connector = Callable[["Origin"], Awaitable[trio.abc.Stream]]
"""A custom way to open the transport (the ``connector=`` option): e.g. in-memory streams."""


class Transport:
    """The byte stream of one connection (see the module docstring)."""

    __slots__ = ("_sending", "_sock", "_tls", "fired", "raw", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._tls: TLSSession | None = None
        inner = stream
        if isinstance(stream, TLSStream):
            inner = stream.transport_stream
        if isinstance(inner, trio.SocketStream):
            # Adopt the socket (see the module docstring): the streams are dropped.
            self._sock: socket.socket | None = _adopt(inner)
            self.stream: trio.abc.Stream | None = None
            if inner is not stream:
                assert isinstance(stream, TLSStream)
                self._tls = stream.session
        else:
            self._sock = None
            self.stream = stream
        # True if reads and writes are system calls on the socket, and a waiting receive
        # can be interrupted through it (wait_receive). Read-only.
        self.raw = self._sock is not None
        self.fired = False  # the interrupt of the current wait_receive fired
        # True while a write is in progress, the Event of a reader's TLS answer being
        # sent (_answer), False otherwise: the two never interleave on the socket.
        self._sending: bool | trio.Event = False

    @classmethod
    async def open(
        cls, origin: Origin, options: ClientOptions, connector: Connector | None
    ) -> Transport:
        """:func:`open_stream`, as a transport. A checkpoint; raises like it."""
        return cls(await open_stream(origin, options, connector))

    def alive(self) -> bool:
        """False if the peer closed the connection or sent bytes nobody asked for. Not a
        checkpoint: one non-blocking system call on the socket (a ``poll``; with TLS a
        read, whose post-handshake messages are consumed, see the module docstring).

        Streams that are not adopted — e.g. in-memory test streams — cannot be probed and
        count as alive; their failure then shows on the next request (and an idempotent one
        is retried).
        """
        sock = self._sock
        if sock is None:
            return True
        tls = self._tls
        if tls is None:
            return _quiet(sock)
        try:
            data = sock.recv(SOCKET_RECEIVE_SIZE)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        tls.feed(data)
        try:
            return tls.read() is None  # None: only TLS messages, no data, no EOF
        except trio.BrokenResourceError:
            return False

    # ------------------------------------------------------------------ writing

    async def send_all(self, data: bytes) -> None:
        """Write ``data`` whole. Checks for cancellation first; waits (a checkpoint) only
        while the socket's buffer is full. A broken socket raises ``BrokenResourceError``,
        as ``SocketStream`` does."""
        raw = self._sock
        if raw is None:
            assert self.stream is not None
            await self.stream.send_all(data)
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        tls = self._tls
        if tls is None:  # plain TCP: no reader ever sends
            # The first try here, not in a coroutine of its own: a small request's bytes
            # fit the socket's buffer and leave in this one call.
            try:
                sent = raw.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
            if sent < len(data):
                await self._send_raw(raw, data, sent, blocked=True)
            return
        answering = self._sending
        if isinstance(answering, trio.Event):  # pragma: no cover - see _answer
            await answering.wait()
        data = tls.write(data)
        self._sending = True
        try:
            await self._send_raw(raw, data)
        finally:
            self._sending = False

    async def _send_raw(
        self, raw: socket.socket, data: bytes, sent: int = 0, *, blocked: bool = False
    ) -> None:
        """Write ``data`` from offset ``sent`` (the bytes before it have left), waiting for
        the socket as needed (first, if the caller's try just found it ``blocked``). A
        checkpoint when it waits."""
        total = len(data)
        try:
            if blocked:
                await trio.lowlevel.wait_writable(raw)
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

    async def _answer(self, raw: socket.socket, tls: TLSSession) -> None:
        """Send what a post-handshake message asks to (a rare checkpoint), unless a write
        is in progress: that one sends it with its own bytes (see ``_tls.py``)."""
        if self._sending is not False:  # pragma: no cover - a duplex write sends it
            return
        out = tls.output()
        if out:  # pragma: no cover - a TLS 1.2 renegotiation, a TLS 1.3 key update
            # A write starting meanwhile waits for this one (rare: an Event only here).
            done = self._sending = trio.Event()
            try:
                await self._send_raw(raw, out)
            finally:
                self._sending = False
                done.set()

    # ------------------------------------------------------------------ reading

    async def receive(self) -> bytes:
        """The next bytes from the peer (b"" at EOF). A checkpoint, like ``receive_some``:
        a read that has to wait waits for the socket, one that does not is still a schedule
        point. Cancelled by the caller's cancel scope."""
        raw = self._sock
        if raw is None:
            assert self.stream is not None
            data = await self.stream.receive_some(RECEIVE_SIZE)
            return bytes(data) if type(data) is not bytes else data
        # The schedule point first: the request was usually just written, and while the
        # other tasks run the server answers, so the read then finds the bytes there
        # instead of failing (a system call and an exception) and waiting for the socket
        # (an epoll registration and a wake-up), as a hand-written send/receive loop does.
        await trio.lowlevel.checkpoint()
        tls = self._tls
        try:
            while True:
                if tls is not None:
                    plain = tls.read()
                    if plain is not None:
                        return plain
                    await self._answer(raw, tls)
                try:
                    data = raw.recv(SOCKET_RECEIVE_SIZE)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(raw)
                    continue
                if tls is None:
                    return data
                tls.feed(data)
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    def receive_ready(self) -> bytes | None:
        """What the socket holds already (b"" at EOF; with TLS, what decrypts from it), or
        None if nothing is there (or the transport has no socket). Not a checkpoint, no
        wait.

        Raises:
            trio.BrokenResourceError: the socket (or TLS) failed.
        """
        raw = self._sock
        if raw is None:
            return None
        tls = self._tls
        if tls is not None:
            plain = tls.read()
            if plain is not None:
                return plain
        try:
            data = raw.recv(SOCKET_RECEIVE_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        if tls is None:
            return data
        tls.feed(data)
        return tls.read()

    def arm_interrupt(self) -> Transport:
        """The interrupt of the next :meth:`wait_receive` (the transport itself), reset."""
        assert self._sock is not None
        self.fired = False
        return self

    def cancel(self) -> None:
        """Fire the interrupt armed by :meth:`arm_interrupt`: the waiting read wakes with
        ``ClosedResourceError`` (the transport must be closed afterwards). Not a
        checkpoint."""
        if not self.fired and self._sock is not None:
            self.fired = True
            trio.lowlevel.notify_closing(self._sock)

    async def wait_receive(self) -> bytes | None:
        """Wait for bytes on the socket, without a cancel scope: None if the interrupt
        armed by :meth:`arm_interrupt` fired (then the transport must be closed). A
        checkpoint (it waits).

        Raises:
            trio.BrokenResourceError: the socket (or TLS) failed.
            trio.ClosedResourceError: the transport was closed under the wait.
        """
        raw = self._sock
        assert raw is not None
        tls = self._tls
        try:
            while True:
                if tls is not None:
                    await self._answer(raw, tls)
                await trio.lowlevel.wait_readable(raw)
                try:
                    data = raw.recv(SOCKET_RECEIVE_SIZE)
                except BlockingIOError:
                    continue
                if tls is not None:
                    tls.feed(data)
                    plain = tls.read()
                    if plain is None:
                        continue
                    data = plain
                if not self.fired:  # else it fired as the bytes came: too late
                    return data
                return None
        except trio.ClosedResourceError:
            if not self.fired:
                raise
            return None
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    # ------------------------------------------------------------------ ending

    async def aclose(self) -> None:
        """Close at once: no waiting for a graceful TLS goodbye, though a close_notify is
        sent if the socket takes it at once. A checkpoint."""
        sock = self._sock
        if sock is None:
            assert self.stream is not None
            await trio.aclose_forcefully(self.stream)
            return
        self._sock = None
        if self._tls is not None:
            with contextlib.suppress(OSError):  # best-effort
                sock.send(self._tls.close_notify())
        trio.lowlevel.notify_closing(sock)  # a task waiting on it gets an error
        sock.close()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def detach(self, prefix: bytes) -> trio.abc.Stream:
        """Stop owning the connection and return it as a stream, ``prefix`` (bytes already
        read past the last response) first (``upgrade()``/``connect()`` hand it over)."""
        sock = self._sock
        stream = self.stream
        if sock is not None:
            self._sock = None
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            if self._tls is not None:
                stream = TLSStream(stream, self._tls)
        assert stream is not None
        return PrefixedStream(stream, prefix) if prefix else stream


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
                    stream = await start_tls(stream, context, origin.host)
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


def _adopt(stream: trio.SocketStream) -> socket.socket:
    """The socket of ``stream``, taken out of it (the stream is unusable afterwards):
    the same file descriptor, non-blocking."""
    inner = stream.socket
    sock = socket.socket(inner.family, inner.type, inner.proto, fileno=inner.detach())
    sock.setblocking(False)
    return sock


def _quiet(sock: socket.socket) -> bool:
    """Nothing to read on ``sock``: no byte, no FIN, no error (an idle connection the peer
    has not given up on). Not a checkpoint: one system call, no wait."""
    fd = sock.fileno()
    if fd < 0:
        return False  # closed under us
    if _POLL is None:  # pragma: no cover - no poll() (Windows): peek instead
        try:
            sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False  # b"" is a FIN; anything else is unsolicited
    try:
        probe: select.poll = _PROBE.poll
    except AttributeError:
        probe = _PROBE.poll = _POLL()
    probe.register(fd, select.POLLIN)
    try:
        return not probe.poll(0)
    finally:
        probe.unregister(fd)
