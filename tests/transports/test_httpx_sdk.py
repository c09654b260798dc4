"""Code built on httpx, unchanged, over trio_pool: the OpenAI SDK (it takes an
``httpx2.AsyncClient`` as ``http_client=``) against a local app that mimics the two endpoints it
calls, and httpx under ``anyio.run(..., backend="trio")``."""

from __future__ import annotations

import anyio
import httpx
import httpx2
import openai
import pytest
import trio
from _helpers import assert_idle

import trio_pool
import trio_pool.httpx2
from trio_pool.httpx import AsyncTransport
from trio_pool.testing import ServerConnection, ServerRequest, serve_h11

from ._httpx_app import STALLS


# The SDK stops reading its event stream at "data: [DONE]" and closes the response, leaving
# its own and httpx's async generators unexhausted; Trio warns when they are collected. Only
# those (openai's and httpx's) are ignored: the transport's body iterator is a class.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object "
    "(SSEDecoder|AsyncStream|BoundAsyncStream|Response)[.]:pytest.PytestUnraisableExceptionWarning"
)
async def test_openai_sdk(pool: trio_pool.Pool, origin: str) -> None:
    # openai 3 is built on httpx2 (earlier versions on httpx: the same test with httpx).
    http_client = httpx2.AsyncClient(transport=trio_pool.httpx2.AsyncTransport(pool))
    async with openai.AsyncOpenAI(
        api_key="sk-test", base_url=f"{origin}/v1", http_client=http_client, max_retries=0
    ) as client:
        models = await client.models.list()
        assert [model.id for model in models.data] == ["m-1"]

        completion = await client.chat.completions.create(
            model="m-1", messages=[{"role": "user", "content": "hello"}]
        )
        assert completion.choices[0].message.content == "olleh"

        stream = await client.chat.completions.create(
            model="m-1", messages=[{"role": "user", "content": "streamed"}], stream=True
        )
        async with stream:
            pieces = [chunk.choices[0].delta.content async for chunk in stream]
        assert "".join(piece or "" for piece in pieces) == "demaerts"
        assert_idle(pool)

        # A cancelled SDK call frees its connection (httpcore#1093 is the bug avoided).
        stalled = client.with_options(base_url=f"{origin}/stall")

        async def list_models() -> None:
            await stalled.models.list()

        STALLS.reset()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(list_models)
            await STALLS.arrived.wait()
            nursery.cancel_scope.cancel()
        assert_idle(pool)
        assert (await client.models.list()).data[0].id == "m-1"
    assert not pool.closed  # the SDK closed its httpx client, not the pool


async def _answer(request: ServerRequest, conn: ServerConnection) -> None:
    await conn.respond(200, body=request.target.encode())


def test_under_anyio_on_trio() -> None:
    async def main() -> list[str]:
        seen: list[str] = []
        async with serve_h11(_answer) as server:
            async with trio_pool.Pool(server.origin) as pool:
                transport = AsyncTransport(pool)
                async with httpx.AsyncClient(transport=transport, base_url=server.origin) as client:

                    async def get(path: str) -> None:
                        seen.append((await client.get(path)).text)

                    async with anyio.create_task_group() as tg:
                        for i in range(5):
                            tg.start_soon(get, f"/{i}")
                    with anyio.move_on_after(10):
                        await get("/last")
                assert_idle(pool)
        return sorted(seen)

    assert anyio.run(main, backend="trio") == ["/0", "/1", "/2", "/3", "/4", "/last"]
