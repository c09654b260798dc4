"""``interceptors.decompress()``: accept-encoding, every coding decoded incrementally, headers
the caller sees, corrupt data, and a decompression bomb that stops with bounded memory
(tracemalloc) at ``max_response_size`` (API.md section 6)."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Callable

import brotli
import pytest
import trio
import trio.testing
import zstandard
from _helpers import assert_idle
from _interceptor_helpers import pool_fixture, server_fixture  # noqa: F401 (fixtures)

import trio_pool
from trio_pool import Pool, ResponseDecodeError, ResponseExceededMaxSizeError
from trio_pool.interceptors import decompress
from trio_pool.testing import ServerConnection, ServerRequest

TEXT = b"".join(b"line %d of a compressible body\n" % i for i in range(5000))


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstandard.ZstdCompressor().compress,
}


def bomb_chunks(size: int) -> list[bytes]:
    """A gzip stream of ``size`` zero bytes (1 MiB at a time) but its trailer, in about
    ``size / 1000`` bytes: after a full flush a deflate segment does not depend on what came
    before, so one compressed MiB is repeated rather than compressing the whole."""
    compressor = zlib.compressobj(9, wbits=31)
    block = bytes(1 << 20)
    head = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    segment = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    return [head] + [segment] * ((size >> 20) - 1)


class Script:
    def __init__(self) -> None:
        self.encoded: list[bytes] = [b""]
        self.coding = "gzip"
        self.stall = False

    async def __call__(self, request: ServerRequest, conn: ServerConnection) -> None:
        headers = [("content-encoding", self.coding)] if self.coding else []
        total = sum(map(len, self.encoded))
        await conn.send_head(
            200,
            [
                *headers,
                ("content-length", str(total)),
                ("x-seen", request.header("accept-encoding") or ""),
            ],
        )
        if self.stall:  # half the body, then nothing more
            await conn.send_data(self.encoded[0][: len(self.encoded[0]) // 2])
            await trio.sleep_forever()
        for chunk in self.encoded:
            for start in range(0, len(chunk), 16384):
                await conn.send_data(chunk[start : start + 16384])
        await conn.send_end()


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.mark.parametrize("coding", sorted(ENCODERS))
async def test_every_coding_is_decoded(script: Script, pool: Pool, coding: str) -> None:
    script.coding = coding
    script.encoded = [ENCODERS[coding](TEXT)]
    client = trio_pool.compose(pool, decompress())
    response = await client.request("GET", "/")
    assert response.body == TEXT
    assert "content-encoding" not in response.headers
    assert "content-length" not in response.headers
    assert response.text().startswith("line 0")
    assert response.headers["x-seen"] == "gzip, deflate, br, zstd"
    async with client.stream("GET", "/") as streamed:
        chunks = [chunk async for chunk in streamed.body]
    assert b"".join(chunks) == TEXT
    assert max(map(len, chunks)) <= 65536
    assert_idle(pool)


async def test_raw_deflate_several_gzip_members_and_stacked_codings(
    script: Script, pool: Pool
) -> None:
    client = trio_pool.compose(pool, decompress())
    script.coding = "deflate"
    script.encoded = [raw_deflate(TEXT)]
    assert (await client.request("GET", "/")).body == TEXT
    script.coding = "gzip"
    script.encoded = [gzip.compress(b"first "), gzip.compress(b"second")]
    assert (await client.request("GET", "/")).body == b"first second"
    script.coding = "gzip, br"
    script.encoded = [brotli.compress(gzip.compress(TEXT))]
    assert (await client.request("GET", "/")).body == TEXT


async def test_own_accept_encoding_and_unknown_codings_are_left_alone(
    script: Script, pool: Pool
) -> None:
    client = trio_pool.compose(pool, decompress())
    script.coding = "compress"
    script.encoded = [b"LZW bytes"]
    response = await client.request("GET", "/", headers={"Accept-Encoding": "compress"})
    assert response.headers["x-seen"] == "compress"
    assert response.body == b"LZW bytes"
    assert response.headers["content-encoding"] == "compress"
    script.coding = ""
    script.encoded = [b"plain"]
    response = await client.request("GET", "/", headers=[(b"x-other", b"1")])
    assert (response.body, response.headers["content-length"]) == (b"plain", "5")


@pytest.mark.parametrize(
    "encoded",
    [
        [b"not gzip at all"],
        [gzip.compress(TEXT)[:-10]],  # truncated
        [gzip.compress(TEXT) + b"garbage"],
    ],
    ids=["corrupt", "truncated", "trailing-garbage"],
)
async def test_corrupt_data_is_a_decode_error(
    autojump_clock: trio.testing.MockClock, script: Script, pool: Pool, encoded: list[bytes]
) -> None:
    script.encoded = encoded
    client = trio_pool.compose(pool, decompress())
    with pytest.raises(ResponseDecodeError):
        await client.request("GET", "/")
    with pytest.raises(ResponseDecodeError):
        async with client.stream("GET", "/") as streamed:
            await streamed.read()
    assert_idle(pool)
    script.encoded = [gzip.compress(b"fine")]
    assert (await client.request("GET", "/")).body == b"fine"


@pytest.mark.parametrize("coding", ["br", "zstd"])
async def test_corrupt_br_and_zstd(script: Script, pool: Pool, coding: str) -> None:
    script.coding = coding
    script.encoded = [b"\xff" * 64]
    client = trio_pool.compose(pool, decompress())
    with pytest.raises(ResponseDecodeError):
        await client.request("GET", "/")
    assert_idle(pool)


async def test_a_decompression_bomb_stops_with_bounded_memory(script: Script, pool: Pool) -> None:
    """1 GiB of zeros in about 1 MB of gzip; the limit is 32 MiB of decoded bytes. Read as a
    stream (the caller keeps nothing), the peak of traced memory stays a few blocks."""
    script.encoded = bomb_chunks(1 << 30)
    assert sum(map(len, script.encoded)) < 2 << 20
    client = trio_pool.compose(pool, decompress(max_response_size=32 << 20))
    tracemalloc.start()
    try:
        seen = 0
        with pytest.raises(ResponseExceededMaxSizeError, match="decoded"):
            async with client.stream("GET", "/") as response:
                async for chunk in response.body:
                    seen += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen <= 32 << 20
    assert peak < 4 << 20, peak
    assert_idle(pool)
    with pytest.raises(ResponseExceededMaxSizeError):
        await client.request("GET", "/")
    assert_idle(pool)


@pytest.mark.parametrize("coding", ["br", "zstd"])
async def test_br_and_zstd_bombs_are_bounded_too(script: Script, pool: Pool, coding: str) -> None:
    script.coding = coding
    zeros = bytes(64 << 20)
    script.encoded = [
        brotli.compress(zeros, quality=1) if coding == "br" else ENCODERS[coding](zeros)
    ]
    del zeros
    client = trio_pool.compose(pool, decompress(max_response_size=16 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(ResponseExceededMaxSizeError):
            async with client.stream("GET", "/") as response:
                async for _ in response.body:
                    pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak


def test_invalid_max_response_size() -> None:
    for bad in (-1, 1.5, "10"):
        with pytest.raises(trio_pool.InvalidArgumentError, match="max_response_size"):
            decompress(max_response_size=bad)  # type: ignore[arg-type]


async def test_cancelled_while_decoding(
    autojump_clock: trio.testing.MockClock, script: Script, pool: Pool
) -> None:
    script.encoded = [gzip.compress(TEXT)]
    script.stall = True
    client = trio_pool.compose(pool, decompress())
    with trio.move_on_after(5) as scope:
        await client.request("GET", "/")
    assert scope.cancelled_caught
    assert_idle(pool)
    with trio.move_on_after(5) as scope:
        async with client.stream("GET", "/") as response:
            async for _ in response.body:
                pass
    assert scope.cancelled_caught
    assert_idle(pool)
    script.stall = False
    assert (await client.request("GET", "/")).body == TEXT


def test_both_zstd_decoders_bound_their_blocks() -> None:
    """``compression.zstd`` (or its backport) is preferred; ``zstandard`` is the fallback.
    Both decode several frames in blocks of at most 64 KiB and tell a truncated stream."""
    from backports import zstd as backport

    from trio_pool.interceptors._decompress import BLOCK, _Zstandard, _Zstd

    frames = zstandard.ZstdCompressor().compress(TEXT) * 2
    for decoder in (_Zstd(backport), _Zstandard(zstandard)):
        blocks = list(decoder.feed(frames))
        assert b"".join(blocks) == TEXT * 2
        assert max(map(len, blocks)) <= BLOCK
        assert decoder.finished()
    for decoder in (_Zstd(backport), _Zstandard(zstandard)):
        list(decoder.feed(frames[:100]))
        assert not decoder.finished()
