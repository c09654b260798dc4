"""trio_pool.opentelemetry on a ResourcePool: the database-client connection-pool metrics,
read back through the OpenTelemetry SDK's in-memory reader. Virtual time (``autojump_clock``),
so the wait and use times are exact."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio
import trio.testing
from _otel_helpers import backend, key, points, values
from opentelemetry.sdk.metrics.export import Sum

import trio_pool
from trio_pool import InvalidArgumentError
from trio_pool.opentelemetry import instrument


def make_pool(**options: Any) -> trio_pool.ResourcePool[int]:
    """A pool of numbered resources, created and disposed of at once."""
    numbers = itertools.count()

    async def create() -> int:
        return next(numbers)

    async def dispose(resource: int) -> None:
        pass

    return trio_pool.ResourcePool(create, dispose, **options)


async def quiet() -> None:
    """Let the pool's tasks run until they all wait."""
    await trio.testing.wait_all_tasks_blocked()


POOL = "orders-db"
NAME = {"db.client.connection.pool.name": POOL}


def with_state(state: str) -> dict[str, Any]:
    return {**NAME, "db.client.connection.state": state}


async def test_the_pool_metrics_have_the_convention_names_units_and_values(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with backend() as otel:
        async with make_pool(min=1, max=3, request_timeout=5.0, name=POOL) as pool:
            telemetry = instrument(pool, **otel.providers())
            await quiet()
            first = await pool.checkout()  # the min one: no wait
            second = await pool.checkout()  # created for it: no delay in the fake
            await trio.sleep(2.0)
            pool.release(first)
            third = await pool.checkout()  # takes the released one at once
            fourth = await pool.checkout()  # a third resource, created
            with pytest.raises(trio_pool.RequestTimeoutError):
                await pool.checkout()  # max=3 all out: times out after 5 s
            pool.release(second)

            found = otel.metrics()
            assert {name: metric.unit for name, metric in found.items()} == {
                "db.client.connection.count": "{connection}",
                "db.client.connection.max": "{connection}",
                "db.client.connection.idle.min": "{connection}",
                "db.client.connection.pending_requests": "{request}",
                "db.client.connection.timeouts": "{timeout}",
                "db.client.connection.wait_time": "s",
                "db.client.connection.use_time": "s",
            }
            assert values(found["db.client.connection.count"]) == {
                key(with_state("idle")): 1,
                key(with_state("used")): 2,
            }
            assert values(found["db.client.connection.max"]) == {key(NAME): 3}
            assert values(found["db.client.connection.idle.min"]) == {key(NAME): 1}
            assert values(found["db.client.connection.pending_requests"]) == {key(NAME): 0}
            assert values(found["db.client.connection.timeouts"]) == {key(NAME): 1}
            timeouts, count = (
                found[f"db.client.connection.{n}"].data for n in ("timeouts", "count")
            )
            assert isinstance(timeouts, Sum)
            assert timeouts.is_monotonic
            assert isinstance(count, Sum)
            assert not count.is_monotonic
            wait = points(found["db.client.connection.wait_time"])[key(NAME)]
            assert (wait.count, wait.sum) == (4, 0.0)  # the timed-out one never got one
            use = points(found["db.client.connection.use_time"])[key(NAME)]
            assert (use.count, use.sum) == (2, 2.0 + 7.0)  # first: 2 s; second: 2 + 5 s
            telemetry.uninstrument()
            pool.release(third)
            pool.release(fourth)


async def test_pending_requests_counts_the_queue(autojump_clock: trio.testing.MockClock) -> None:
    with backend() as otel:
        async with make_pool(max=1, name=POOL) as pool:
            instrument(pool, **otel.providers())
            held = await pool.checkout()
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(pool.checkout)  # cancelled while they wait
                await trio.sleep(1.0)
                found = otel.metrics()
                assert values(found["db.client.connection.pending_requests"]) == {key(NAME): 3}
                nursery.cancel_scope.cancel()
            pool.release(held)
            assert values(otel.metrics()["db.client.connection.pending_requests"]) == {key(NAME): 0}


async def test_two_pools_on_one_meter_each_report_under_their_name(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with backend() as otel:
        async with (
            make_pool(max=4, name="a") as a,
            make_pool(max=7, name="b") as b,
        ):
            instrument(a, **otel.providers())
            instrument(b, **otel.providers())
            found = otel.metrics()
            assert values(found["db.client.connection.max"]) == {
                key({"db.client.connection.pool.name": "a"}): 4,
                key({"db.client.connection.pool.name": "b"}): 7,
            }


async def test_uninstrument_stops_reporting_and_a_pool_can_be_instrumented_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with backend() as otel:
        async with make_pool(name=POOL) as pool:
            telemetry = instrument(pool, **otel.providers())
            with pytest.raises(InvalidArgumentError, match="instrumented already"):
                instrument(pool, **otel.providers())
            async with pool.acquire():
                await trio.sleep(1.0)
            assert "db.client.connection.use_time" in otel.metrics()
            telemetry.uninstrument()
            telemetry.uninstrument()  # a second call does nothing
            assert not telemetry.active
            assert pool._listeners.timing is False  # the pool takes no times any more
            async with pool.acquire():
                await trio.sleep(1.0)
            found = otel.metrics()
            assert "db.client.connection.count" not in found  # observed: no longer reported
            use = points(found["db.client.connection.use_time"])[key(NAME)]
            assert use.count == 1  # the second checkout was not recorded
            again = instrument(pool, **otel.providers())
            assert values(otel.metrics()["db.client.connection.count"]) == {
                key(with_state("idle")): 1,
                key(with_state("used")): 0,
            }
            again.uninstrument()


def test_a_resource_pool_has_no_dispatcher_to_trace() -> None:
    pool = make_pool()
    with backend() as otel:
        telemetry = instrument(pool, **otel.providers())
        with pytest.raises(InvalidArgumentError, match="no dispatcher"):
            telemetry.dispatcher  # noqa: B018
        with pytest.raises(InvalidArgumentError, match="no interceptor"):
            telemetry.interceptor  # noqa: B018
        telemetry.uninstrument()


@pytest.mark.parametrize("obj", [None, "pool", object()])
def test_instrument_refuses_what_it_cannot_instrument(obj: object) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid obj"):
        instrument(obj)  # type: ignore[arg-type]
