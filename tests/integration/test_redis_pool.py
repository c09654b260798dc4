"""ResourcePool over Redis (coredis, on Trio through anyio) against a real ``redis-server``:
hundreds of concurrent tasks through ``max=5``, the server killed and restarted mid-run with the
pool recovering on its backoff, ``expire_all()`` after a restart, ``reset`` on release and
``max_lifetime``. (A failing reset is shown against PostgreSQL: coredis reconnects a killed
connection by itself, so a Redis reset does not see it fail.)

Real time (a real server): every wait is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from trio_pool import Backoff, ResourcePool

TASKS = 300

# coredis drops the anyio memory streams of a connection that failed (the server killed it, or
# a connect timed out on a loaded machine) without closing them; their __del__ warns. That is
# the client's leak, not the pool's.
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(autouse=True)
def _collect_the_clients_garbage() -> Iterator[None]:
    """Collect those streams now, while the filters above apply: collected later, their
    warnings would be blamed on whichever test runs then."""
    yield
    gc.collect()


OPENED: dict[int, float] = {}  # id(client) -> when it connected (while it is open)


@asynccontextmanager
async def connect(server: Any) -> AsyncIterator[Any]:
    import coredis

    client = coredis.Redis(
        host=server.host, port=server.port, max_connections=1, connect_timeout=1.0
    )
    async with client:
        await client.ping()  # connected now, not at the first command
        OPENED[id(client)] = trio.current_time()
        try:
            yield client
        finally:
            del OPENED[id(client)]


async def ping(client: Any) -> None:
    await client.ping()


def redis_pool(server: Any, **options: Any) -> ResourcePool[Any]:
    settings: dict[str, Any] = {
        "ping": ping,
        "ping_timeout": 1.0,
        "acquire_timeout": 2.0,
        "max": 5,
        "bail_after": None,
        "backoff": Backoff(min=0.05, max=0.2),
        "name": "redis",
    }
    return ResourcePool(open=lambda: connect(server), **{**settings, **options})


async def test_hundreds_of_tasks_share_five_connections(redis_server: Any) -> None:
    done: list[int] = []
    peak = 0
    async with redis_pool(redis_server) as pool:

        async def task(number: int) -> None:
            nonlocal peak
            async with pool.acquire() as client:
                peak = max(peak, pool.statistics().allocated)
                assert await client.incr("counter") >= 1
                assert await client.echo(f"t{number}") == f"t{number}".encode()
                done.append(number)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for number in range(TASKS):
                    nursery.start_soon(task, number)
            async with pool.acquire() as client:
                assert int(await client.get("counter")) == TASKS
        stats = pool.statistics()
        assert sorted(done) == list(range(TASKS))
        assert peak <= 5
        assert stats.allocated <= 5
        assert stats.acquires_total == TASKS + 1


async def test_a_restart_mid_run_recovers_on_the_backoff_and_expire_all_renews(
    redis_server: Any,
) -> None:
    served: list[int] = []
    failures = 0
    async with redis_pool(redis_server, reset=None) as pool:

        async def task(number: int) -> None:
            nonlocal failures
            for _ in range(200):  # bounded: retries during the outage
                try:
                    async with pool.acquire() as client:
                        assert await client.echo(f"t{number}") == f"t{number}".encode()
                        served.append(number)
                        return
                except Exception:  # the outage: coredis' connection errors, request errors
                    failures += 1
                    await trio.sleep(0.05)
            raise AssertionError(f"task {number} never recovered")

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for number in range(TASKS):
                    nursery.start_soon(task, number)
                    if number == TASKS // 3:
                        await trio.sleep(0.05)
                        redis_server.kill()  # a crash, mid-run
                        await trio.sleep(0.5)  # allocations fail meanwhile: the backoff
                        redis_server.start()
                        restarted_at = trio.current_time()
                        pool.expire_all()  # nothing opened before the restart is reused
            async with pool.acquire() as client:
                assert await client.ping()
            await trio.sleep(0.1)  # let the expired connections' disposals finish
        assert sorted(served) == list(range(TASKS))
        assert pool.statistics().allocation_errors_total + failures > 0
        # expire_all(): every connection still open was opened after the restart.
        assert OPENED
        assert all(at >= restarted_at for at in OPENED.values()), (OPENED, restarted_at)
        assert pool.statistics().allocated <= 5


async def connection_id(client: Any) -> int:
    """The server's id of the client's one connection: tells connections apart."""
    ident = await client.client_id()
    assert isinstance(ident, int)
    return ident


# coredis warns that CLIENT SETNAME names one connection only: that per-connection session state
# is exactly what a holder may leave behind and what ``reset`` must clear.
SETNAME_WARNING = pytest.mark.filterwarnings(
    r"ignore:Use the .paramref..Redis.client_name.:UserWarning"
)


@SETNAME_WARNING
async def test_reset_clears_what_a_holder_left_on_the_connection(redis_server: Any) -> None:
    async def reset(client: Any) -> None:
        await client.client_setname("pooled")  # the pool's own baseline, not the holder's

    async with redis_pool(redis_server, max=1, reset=reset) as pool:
        with trio.fail_after(10):
            async with pool.acquire() as client:
                ident = await connection_id(client)
                await client.client_setname("careless-holder")
            async with pool.acquire() as client:
                assert await connection_id(client) == ident  # the same connection...
                assert await client.client_getname() == b"pooled"  # ...its name reset
        assert pool.statistics().reset_failures_total == 0


async def test_max_lifetime_renews_connections(redis_server: Any) -> None:
    options: dict[str, Any] = {"max": 1, "min": 1, "max_lifetime": 0.3, "sync_interval": 0.05}
    async with redis_pool(redis_server, **options) as pool:
        with trio.fail_after(10):
            async with pool.acquire() as client:
                first = await connection_id(client)
                await trio.sleep(0.4)  # past its lifetime while held (swept): retired on release
            async with pool.acquire() as client:
                second = await connection_id(client)
            assert second != first
            await trio.sleep(0.4)  # past its lifetime while idle: the sweep renews it (min=1)
            async with pool.acquire() as client:
                assert await connection_id(client) not in (first, second)
