"""Download a large body to a file chunk by chunk, with a size cap and an idle-gap timeout.

Run it from the repository root (it needs nothing but trio_pool; the server is its own)::

    python examples/streaming_download.py

Theory of operation: the script starts a scripted HTTP/1.1 server on 127.0.0.1
(``trio_pool.testing.serve_h11``) that serves three files: ``/ok.bin`` (8 MiB, sent in
64 KiB pieces), ``/huge.bin`` (64 MiB, more than the script accepts) and ``/stalls.bin``
(starts, then stops sending without closing, as a wedged backend does). The ``Pool`` is
opened with two guards that suit downloads:

* ``max_response_size``: a body larger than this raises ``ResponseExceededMaxSizeError``
  instead of filling the disk: at once when its ``content-length`` says so (``/huge.bin``),
  else once more bytes than this have arrived (a chunked body announces no length);
* ``body_timeout``: the longest *gap* between two chunks, not a bound on the whole
  download; a body that stops flowing raises ``BodyTimeoutError`` while a slow but steady
  one is fine. (A bound on the whole download is a ``trio.move_on_after`` around it.)

Each download runs ``async with pool.stream(...)`` and writes ``response.body``'s chunks to
a temporary file as they arrive, so memory use stays at one chunk whatever the size; a
download that fails removes its partial file. Leaving the ``stream()`` block early (the
error) closes that connection instead of reading the rest of the body into the void.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile

import trio

import trio_pool
from trio_pool.testing import ServerConnection, ServerRequest, serve_h11

CHUNK = 64 * 1024
MiB = 1024 * 1024
#: The sizes of the files the server offers.
SIZES = {"/ok.bin": 8 * MiB, "/huge.bin": 64 * MiB, "/stalls.bin": 4 * MiB}
#: The Pool's guards.
MAX_RESPONSE_SIZE = 16 * MiB
BODY_TIMEOUT = 0.5


def content(path: str) -> bytes:
    """One chunk of the file at ``path``; the file repeats it (a deterministic stand-in)."""
    return hashlib.sha256(path.encode()).digest() * (CHUNK // 32)


async def files(request: ServerRequest, conn: ServerConnection) -> None:
    """The server's script: streams the file, without ``content-length`` for the stalling one."""
    size = SIZES[request.target]
    chunk = content(request.target)
    if request.target == "/stalls.bin":
        await conn.send_head(200, [("transfer-encoding", "chunked")])
        await conn.send_data(chunk)
        await trio.sleep_forever()  # still connected, sending nothing
    await conn.send_head(200, [("content-length", str(size))])
    for _ in range(size // CHUNK):
        await conn.send_data(chunk)
    await conn.send_end()


async def download(pool: trio_pool.Pool, path: str, into: trio.Path) -> str:
    """Streams ``path`` into the file ``into``; returns the body's SHA-256.

    Raises whatever the download raised, after removing the partial file.
    """
    digest = hashlib.sha256()
    try:
        async with (
            pool.stream("GET", path) as response,
            await trio.open_file(into, "wb") as file,
        ):
            response.raise_for_status()
            async for chunk in response.body:
                digest.update(chunk)
                await file.write(chunk)  # in a worker thread: the event loop keeps running
    except BaseException:
        await into.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


async def main() -> int:
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = trio.Path(scratch)
        async with (
            serve_h11(files) as server,
            trio_pool.Pool(
                server.origin, max_response_size=MAX_RESPONSE_SIZE, body_timeout=BODY_TIMEOUT
            ) as pool,
        ):
            for path in SIZES:
                target = folder / path.lstrip("/")
                start = trio.current_time()
                try:
                    checksum = await download(pool, path, target)
                except (trio_pool.ResponseExceededMaxSizeError, trio_pool.BodyTimeoutError) as exc:
                    failures[path] = type(exc).__name__
                    print(f"{path:<12} failed after {trio.current_time() - start:.2f} s: {exc!r}")
                    continue
                size = (await target.stat()).st_size
                print(
                    f"{path:<12} {size / MiB:.0f} MiB in {trio.current_time() - start:.2f} s,"
                    f" sha256 {checksum[:16]}..."
                )
            stats = pool.statistics()
            print(f"pool afterwards: {stats}")
        left = sorted(entry.name for entry in await folder.iterdir())
        print(f"files left: {left}")

    # The script's own check, so that running it is a test: the good file arrived whole and
    # intact, each guard stopped its download, no partial file is left, the pool is idle.
    expected = hashlib.sha256(content("/ok.bin") * (SIZES["/ok.bin"] // CHUNK)).hexdigest()
    if (
        checksum != expected
        or failures
        != {"/huge.bin": "ResponseExceededMaxSizeError", "/stalls.bin": "BodyTimeoutError"}
        or left != ["ok.bin"]
        or stats.size != 0
    ):
        print(f"unexpected: {failures}, files {left}, {stats}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
