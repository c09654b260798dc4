"""``interceptors.decompress()``: ask for compressed responses and decode them as they come.

Theory of operation
-------------------
The request gets ``accept-encoding`` (:data:`ACCEPT_ENCODING`: ``gzip, deflate``, plus ``br``
when the ``brotli`` package (>= 1.2) imports and ``zstd`` when ``compression.zstd`` (Python
3.14, or its ``backports.zstd``) or ``zstandard`` does) unless it has its own. A response
whose ``content-encoding`` lists only codings known here gets a :class:`_Decoding` stage:
its head reaches the outer handler without ``content-encoding`` and ``content-length``
(they describe the bytes on the wire), and each chunk is decoded on the spot, in the task
that reads the connection.

Memory is bounded: every decoder is asked for at most :data:`BLOCK` bytes of output per step
(zlib's ``max_length``, brotli's ``output_buffer_limit``, ``compression.zstd``'s
``max_length``; ``zstandard``'s decompressor has no such limit, so it is fed
:data:`_ZSTANDARD_STEP` bytes of input at a time, which bounds one step's output to about a
MiB), and each block is handed on before the next is made. ``max_response_size`` counts the
*decoded* bytes, so a decompression bomb stops with ``ResponseExceededMaxSizeError`` having
held one block. Corrupt or truncated data ends the request with ``ResponseDecodeError``
(the connection is then closed). A response with another coding (``compress``...) is passed
on untouched, its headers included.

A ``_Decoding`` belongs to one request and is changed only by the task reading it.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .._errors import InvalidArgumentError, ResponseDecodeError, ResponseExceededMaxSizeError
from ..http._chain import ConstantHeaders, Settles, _Collect, offer_request_level, with_headers
from ..http._dispatch import call, start_call
from ..http._headers import Headers
from ._relay import Relay

if TYPE_CHECKING:
    from ..http._chain import Send
    from ..http._dispatch import Controller, DispatchFunction, Handler, Interceptor
    from ..http._models import RequestOptions, Response

__all__ = ["ACCEPT_ENCODING", "BLOCK", "decompress"]

BLOCK = 65536
"""The most decoded bytes one decoding step makes (and hands on) at a time."""
_ZSTANDARD_STEP = 32  # input bytes per step for ``zstandard`` (see the module docstring)


class _Decoder(Protocol):
    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decode ``data``: blocks of at most about :data:`BLOCK` bytes."""

    def finished(self) -> bool:
        """Whether the encoded stream ended properly."""


class _Zlib:
    """gzip (also several members one after the other) and deflate (zlib-wrapped, or raw as
    some servers send it)."""

    __slots__ = ("_fresh", "_gzip", "_obj")

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._obj = zlib.decompressobj(31 if gzip else 15)
        self._fresh = True  # nothing decoded yet (a raw deflate stream is still possible)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            try:
                out = self._obj.decompress(data, BLOCK)
            except zlib.error:
                if self._gzip or not self._fresh:
                    raise
                self._obj = zlib.decompressobj(-15)  # raw deflate
                self._fresh = False
                continue
            self._fresh = False
            if out:
                yield out
            if self._obj.eof:
                rest = self._obj.unused_data
                if not (self._gzip and rest.strip(b"\0")):
                    return  # the end (zero padding after gzip is common, and harmless)
                self._obj = zlib.decompressobj(31)  # the next gzip member
                data = rest
                continue
            data = self._obj.unconsumed_tail
            if not data and len(out) < BLOCK:
                return

    def finished(self) -> bool:
        return self._obj.eof


class _Brotli:
    __slots__ = ("_obj",)

    def __init__(self, module: Any) -> None:
        self._obj = module.Decompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        # The limit is where its output buffer stops growing (a block or so, not exactly);
        # what is left comes out of the next calls, with no input, until none comes.
        out = self._obj.process(data, output_buffer_limit=BLOCK)
        while out:
            yield from _cut(out)
            out = self._obj.process(b"", output_buffer_limit=BLOCK)

    def finished(self) -> bool:
        return bool(self._obj.is_finished())


class _Zstd:
    """``compression.zstd`` (bounded by ``max_length``); frames one after the other."""

    __slots__ = ("_module", "_obj")

    def __init__(self, module: Any) -> None:
        self._module = module
        self._obj = module.ZstdDecompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            out = self._obj.decompress(data, BLOCK)
            if out:
                yield out
            if self._obj.eof:
                rest = self._obj.unused_data
                if not rest:
                    return
                self._obj = self._module.ZstdDecompressor()
                data = rest
                continue
            if self._obj.needs_input:
                return
            data = b""

    def finished(self) -> bool:
        return bool(self._obj.eof)


class _Zstandard:
    """The ``zstandard`` package, fed in small steps (see the module docstring)."""

    __slots__ = ("_module", "_obj")

    def __init__(self, module: Any) -> None:
        self._module = module
        self._obj = module.ZstdDecompressor().decompressobj()

    def feed(self, data: bytes) -> Iterator[bytes]:
        view = memoryview(data)
        for start in range(0, len(view), _ZSTANDARD_STEP):
            piece = view[start : start + _ZSTANDARD_STEP]
            while piece:
                yield from _cut(self._obj.decompress(bytes(piece)))
                piece = memoryview(b"")
                if self._obj.eof and self._obj.unused_data:
                    piece = memoryview(self._obj.unused_data)
                    self._obj = self._module.ZstdDecompressor().decompressobj()

    def finished(self) -> bool:
        return bool(self._obj.eof)


def _cut(out: bytes) -> Iterator[bytes]:
    """``out`` in blocks of at most :data:`BLOCK` bytes (for decoders whose limit is not
    exact), so the caller's chunks have the same bound whatever the coding."""
    if len(out) <= BLOCK:
        if out:
            yield out
        return
    view = memoryview(out)
    for start in range(0, len(out), BLOCK):
        yield bytes(view[start : start + BLOCK])


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _find_codings() -> dict[str, Callable[[], _Decoder]]:
    codings: dict[str, Callable[[], _Decoder]] = {
        "gzip": lambda: _Zlib(gzip=True),
        "x-gzip": lambda: _Zlib(gzip=True),
        "deflate": lambda: _Zlib(gzip=False),
    }
    brotli = _import("brotli")
    if brotli is not None and hasattr(brotli.Decompressor(), "can_accept_more_data"):
        codings["br"] = lambda: _Brotli(brotli)  # >= 1.2: its output can be bounded
    # Python 3.14's module, or its backport (the same API) on older Pythons.
    zstd = _import("compression.zstd") or _import("backports.zstd")
    zstandard = _import("zstandard")
    if zstd is not None:
        codings["zstd"] = lambda: _Zstd(zstd)
    elif zstandard is not None:
        codings["zstd"] = lambda: _Zstandard(zstandard)
    return codings


_CODINGS = _find_codings()
ACCEPT_ENCODING = ", ".join(name for name in _CODINGS if name != "x-gzip")
"""What ``decompress()`` asks for: ``gzip, deflate`` and what the installed packages add."""
_ACCEPTING = ConstantHeaders([("accept-encoding", ACCEPT_ENCODING)])


def decompress(*, max_response_size: int | None = None) -> Interceptor:
    """An interceptor that asks for compressed responses and decodes them as they arrive.

    It sends ``accept-encoding`` (``gzip, deflate``, plus ``br`` with the ``brotli``
    package, ``zstd`` with ``zstandard`` or Python's ``compression.zstd``) unless the
    request has its own, and decodes ``gzip``, ``x-gzip``, ``deflate``, ``br`` and ``zstd``
    (several, in the order listed) incrementally, in blocks of at most 64 KiB. The caller
    sees the decoded body and no ``content-encoding`` or ``content-length`` header.

    Args:
        max_response_size: the most *decoded* bytes a response may have (None: no limit of
            its own; the dispatcher's ``max_response_size`` still counts the bytes on the
            wire). Over it the request fails with ``ResponseExceededMaxSizeError``, having
            held one block in memory: a decompression bomb stops there.

    Corrupt or truncated data ends the request with ``ResponseDecodeError`` (its
    connection is closed).

    Raises:
        InvalidArgumentError: ``max_response_size`` is not None or an int >= 0.
    """
    if max_response_size is not None and (
        type(max_response_size) is not int or max_response_size < 0
    ):
        raise InvalidArgumentError(
            f"invalid max_response_size {max_response_size!r}: expected None or an int >= 0"
        )

    def interceptor(dispatch: DispatchFunction) -> DispatchFunction:
        def decompressing(options: RequestOptions, handler: Handler) -> Awaitable[None]:
            return dispatch(_accepting(options), _Decoding(handler, max_response_size))

        return decompressing

    def level(send: Send) -> Send:
        async def decompressing(options: RequestOptions) -> Response:
            response = await send(_accepting(options))
            # Nothing to decode: no stage (and the headers looked at undecoded).
            if response.headers._raw_get(b"content-encoding") is None:
                return response
            return await _decoded(response, max_response_size)

        return decompressing

    # It adds accept-encoding, and acts on a response with a content-encoding only.
    return offer_request_level(interceptor, level, Settles(encoded=True, headers=_ACCEPTING))


async def _decoded(response: Response, limit: int | None) -> Response:
    """The request level of :func:`decompress` (see trio_pool/http/_chain.py): ``response``
    with its body decoded, by the very :class:`_Decoding` stage a dispatch uses, fed the
    finished response. Not a checkpoint (the stage's outer handler is plain).

    Raises:
        ResponseDecodeError, ResponseExceededMaxSizeError: as the stage does.
    """
    collected = _Collect()
    stage = _Decoding(collected, limit)
    controller = Relay()
    stage.on_response_start(controller, response.status, response.headers, response.reason)
    if stage._decoders is None:  # no coding, or one not known here: passed on untouched
        return response
    if response.body:
        await stage._decode(controller, response.body)
    stage.on_response_end(controller, response.trailers)
    assert collected.head is not None
    chunks = collected.chunks
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return attrs.evolve(response, headers=collected.head[1], body=body)


def _accepting(options: RequestOptions) -> RequestOptions:
    """``options`` with ``accept-encoding`` unless it has one. Not a checkpoint."""
    headers = options.headers
    if headers is None:
        return with_headers(options, _ACCEPTING)
    pairs: list[tuple[Any, Any]] = list(
        headers.items() if isinstance(headers, Mapping) else headers
    )
    for name, _ in pairs:
        text = name.decode("latin-1") if isinstance(name, bytes) else name
        if isinstance(text, str) and text.lower() == "accept-encoding":
            return attrs.evolve(options, headers=pairs)
    pairs.append(("accept-encoding", ACCEPT_ENCODING))
    return attrs.evolve(options, headers=pairs)


class _Decoding:
    """The handler stage that decodes one response (see the module docstring)."""

    __slots__ = ("_decoders", "_fed", "_limit", "_outer", "_size")

    def __init__(self, outer: Handler, limit: int | None) -> None:
        self._outer = outer
        self._limit = limit
        self._decoders: list[_Decoder] | None = None  # applied last-coding first
        self._size = 0
        self._fed = False

    def on_request_start(self, controller: Controller) -> Awaitable[object] | None:
        return start_call(self._outer.on_request_start, controller)

    def on_response_start(
        self, controller: Controller, status: int, headers: Headers, reason: str
    ) -> Awaitable[object] | None:
        codings = [
            coding.strip().lower()
            for value in headers.get_all("content-encoding")
            for coding in value.split(",")
            if coding.strip() and coding.strip().lower() != "identity"
        ]
        if codings and all(coding in _CODINGS for coding in codings):
            self._decoders = [_CODINGS[coding]() for coding in reversed(codings)]
            headers = Headers(
                [
                    (name, value)
                    for name, value in headers
                    if name.lower() not in ("content-encoding", "content-length")
                ]
            )
        return start_call(self._outer.on_response_start, controller, status, headers, reason)

    def on_response_data(self, controller: Controller, chunk: bytes) -> Awaitable[object] | None:
        if self._decoders is None:
            return start_call(self._outer.on_response_data, controller, chunk)
        return self._decode(controller, chunk)

    async def _decode(self, controller: Controller, chunk: bytes) -> None:
        """Decode ``chunk`` and hand each block on. A checkpoint if the outer handler is
        async (that is its backpressure, block by block)."""
        self._fed = True
        blocks = self._blocks(chunk, 0)
        while True:
            try:
                block = next(blocks)
            except StopIteration:
                return
            except Exception as exc:  # zlib.error, brotli.error, zstd's errors
                raise ResponseDecodeError(f"the encoded response body is corrupt: {exc}") from exc
            self._size += len(block)
            if self._limit is not None and self._size > self._limit:
                raise ResponseExceededMaxSizeError(
                    f"decoded response body exceeds max_response_size ({self._limit} bytes)"
                )
            await call(self._outer.on_response_data, controller, block)

    def _blocks(self, data: bytes, index: int) -> Iterator[bytes]:
        """``data`` decoded by decoder ``index`` and every one after it, block by block."""
        assert self._decoders is not None
        last = index + 1 == len(self._decoders)
        for piece in self._decoders[index].feed(data):
            if last:
                yield piece
            else:
                yield from self._blocks(piece, index + 1)

    def on_response_end(
        self, controller: Controller, trailers: Headers
    ) -> Awaitable[object] | None:
        decoders = self._decoders
        if decoders is not None and self._fed and not all(d.finished() for d in decoders):
            raise ResponseDecodeError("the encoded response body is truncated")
        return start_call(self._outer.on_response_end, controller, trailers)

    def on_response_error(
        self, controller: Controller, error: BaseException
    ) -> Awaitable[object] | None:
        return start_call(self._outer.on_response_error, controller, error)
