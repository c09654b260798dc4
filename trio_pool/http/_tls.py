"""TLS as bytes in, bytes out: one client session on ``ssl.SSLObject`` + ``ssl.MemoryBIO``.

Theory of operation
-------------------
A :class:`TLSSession` does no I/O: ciphertext from the peer is :meth:`~TLSSession.feed`-ed
into it, plaintext comes out of :meth:`~TLSSession.read`, and :meth:`~TLSSession.write`
returns the ciphertext to send. Whoever owns the bytes of the connection carries them: the
transport (``_transport.py``) on its raw socket — the hot path, a system call per read or
write and no stream object in between — or :class:`TLSStream` over any Trio stream (a
``CONNECT`` tunnel, TLS inside TLS, a handed-over connection).

* **Handshake** (:func:`start_tls`): over a Trio stream, as the transport's first bytes go
  through a ``SocketStream`` before the transport adopts its socket. Verification, SNI and
  ALPN are the ``ssl.SSLContext``'s (``set_alpn_protocols`` on it passes through). Its
  failures raise ``BrokenResourceError`` caused by the ``ssl.SSLError`` (as ``SSLStream``),
  which ``connect_error`` unwraps.
* **Post-handshake messages** (TLS 1.3 session tickets, a key update, a TLS 1.2
  renegotiation request) are consumed by :meth:`~TLSSession.read`, which then asks for more
  bytes (None) rather than returning nothing. Any answer they need waits in the outgoing
  buffer (:meth:`~TLSSession.output`): the carrier sends it before it waits for more bytes,
  and every write sends it first anyway (one buffer, in order).
* **EOF**: a close_notify, or a peer that just closes (as https clients accept, RFC 9112 9.8:
  the message framing says whether the body was complete), both read as b"".
* **Close** (:meth:`~TLSSession.close_notify`): the close_notify bytes, sent best-effort.

Who may change what: the session belongs to one connection; one task reads while at most one
other writes (Trio's stream rule). The SSL object is only touched synchronously, so the two
never interleave inside it.
"""

from __future__ import annotations

import contextlib
import ssl

import trio

__all__ = ["RECEIVE_SIZE", "TLSSession", "TLSStream", "start_tls"]

RECEIVE_SIZE = 65536


class TLSSession:
    """One client TLS session, without I/O (see the module docstring)."""

    __slots__ = ("_in", "_obj", "_out")

    def __init__(self, context: ssl.SSLContext, server_hostname: str) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_hostname=server_hostname)

    async def handshake(self, stream: trio.abc.Stream) -> None:
        """Run the handshake over ``stream``. A checkpoint.

        Raises:
            trio.BrokenResourceError: the handshake or verification failed (caused by the
                ``ssl.SSLError``), or the stream broke.
        """
        while True:
            try:
                self._obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except ssl.SSLError as exc:  # CertificateError included
                raise trio.BrokenResourceError(f"TLS handshake failed: {exc}") from exc
            out = self._out.read()
            if out:
                await stream.send_all(out)
            if done:
                return
            self.feed(await stream.receive_some(RECEIVE_SIZE))

    def feed(self, data: bytes | bytearray) -> None:
        """Ciphertext from the peer; b"" is its EOF."""
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()

    def read(self, size: int = RECEIVE_SIZE) -> bytes | None:
        """Up to ``size`` bytes of plaintext, b"" at EOF, or None if more ciphertext is
        needed (post-handshake messages are consumed on the way).

        Raises:
            trio.BrokenResourceError: a TLS error (caused by the ``ssl.SSLError``).
        """
        obj = self._obj
        incoming = self._in
        if not incoming.pending and not incoming.eof and not obj.pending():
            return None  # surely (a read would say so by raising SSLWantReadError: dearer)
        try:
            data = obj.read(size)
            if not incoming.pending or len(data) >= size:
                return data
            # More records are here already: decrypt them too. Fewer, larger chunks cost
            # the HTTP parser (and its caller) less than one call per 16 KiB record.
            parts = [data]
            size -= len(data)
            while size > 0 and incoming.pending:
                try:
                    more = obj.read(size)
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    break  # the rest of a record, or the end: for the next call
                if not more:
                    break
                parts.append(more)
                size -= len(more)
            return b"".join(parts)
        except ssl.SSLWantReadError:
            return None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""  # close_notify, or an EOF without one (see the module docstring)
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(f"TLS failed: {exc}") from exc

    def write(self, data: bytes | bytearray | memoryview) -> bytes:
        """The ciphertext of ``data`` (after any answer waiting to be sent).

        Raises:
            trio.BrokenResourceError: a TLS error (caused by the ``ssl.SSLError``).
        """
        try:
            if data:
                self._obj.write(data)
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(f"TLS failed: {exc}") from exc
        return self._out.read()

    def output(self) -> bytes:
        """Ciphertext waiting to be sent (an answer to a post-handshake message), or b""."""
        return self._out.read() if self._out.pending else b""

    def close_notify(self) -> bytes:
        """The close_notify alert to send; the session is over."""
        # SSLWantReadError: the peer's answer is not awaited.
        with contextlib.suppress(ssl.SSLError):
            self._obj.unwrap()
        return self._out.read()


class TLSStream(trio.abc.Stream):
    """A :class:`TLSSession` over a Trio stream (a tunnel, a handed-over connection). Like
    ``trio.SSLStream`` with ``https_compatible=True``: an EOF without close_notify is EOF.

    ``aclose`` sends the close_notify within the caller's cancel scope (none is sent by
    ``trio.aclose_forcefully``), then closes the stream.
    """

    def __init__(self, transport_stream: trio.abc.Stream, session: TLSSession) -> None:
        self.transport_stream = transport_stream
        self.session = session

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(self.session.write(data))

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        session = self.session
        data = session.read(max_bytes or RECEIVE_SIZE)
        if data is not None:
            await trio.lowlevel.checkpoint()
            return data
        while True:
            out = session.output()
            if out:  # a post-handshake message's answer (see the module docstring)
                await self.transport_stream.send_all(out)
            session.feed(await self.transport_stream.receive_some(RECEIVE_SIZE))
            data = session.read(max_bytes or RECEIVE_SIZE)
            if data is not None:
                return data

    async def aclose(self) -> None:
        try:
            await self.transport_stream.send_all(self.session.close_notify())
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # best-effort
        finally:
            await self.transport_stream.aclose()


async def start_tls(
    stream: trio.abc.Stream, context: ssl.SSLContext, server_hostname: str
) -> TLSStream:
    """TLS to ``server_hostname`` over ``stream``, handshake done. A checkpoint. Does not
    close ``stream`` on failure (its opener does).

    Raises:
        trio.BrokenResourceError: see :meth:`TLSSession.handshake`.
    """
    session = TLSSession(context, server_hostname)
    await session.handshake(stream)
    return TLSStream(stream, session)
