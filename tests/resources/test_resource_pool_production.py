"""ResourcePool for production (issue 17, API.md section 9): max_lifetime with jitter,
expire_all(), resize(), checkout_nowait(), leak_timeout, name, and the cumulative counters of
ResourcePoolStats. Virtual time throughout (``autojump_clock``)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest
import trio
import trio.testing
from resource_fakes import (
    FORMS,
    FakeBackend,
    FakeResource,
    idle_values,
    make_pool,
    quiet,
    snapshot,
)

import trio_pool
from trio_pool import InvalidArgumentError, PoolEndingError, RequestTimeoutError


def counters(pool: trio_pool.ResourcePool[Any]) -> dict[str, int]:
    stats = pool.statistics()
    return {
        "acquires": stats.acquires_total,
        "request_timeouts": stats.request_timeouts_total,
        "allocation_errors": stats.allocation_errors_total,
        "ping_failures": stats.ping_failures_total,
        "leaks": stats.leaks_total,
    }


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("name", "value"),
    [("name", ""), ("name", 5), ("max_lifetime", -1), ("leak_timeout", "soon")],
)
def test_bad_production_options_are_rejected_by_name(name: str, value: object) -> None:
    options: dict[str, Any] = {name: value}
    with pytest.raises(InvalidArgumentError, match=f"invalid {name}"):
        make_pool(FakeBackend(), **options)


async def test_name_defaults_to_a_numbered_one_and_shows_in_repr_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = make_pool(FakeBackend()), make_pool(FakeBackend())
    assert first.name.startswith("ResourcePool-")
    assert first.name != second.name
    named = make_pool(FakeBackend(), name="orders-db")
    assert named.name == "orders-db"
    assert repr(named).startswith("<ResourcePool 'orders-db' new ")
    with caplog.at_level(logging.DEBUG, logger="trio_pool.resource"):
        async with named, named.acquire():
            pass
    assert caplog.records
    assert all("'orders-db'" in record.getMessage() for record in caplog.records)


# --------------------------------------------------------------------------- max_lifetime


@pytest.mark.parametrize("form", FORMS)
async def test_a_resource_past_its_lifetime_is_retired_when_released(
    form: str, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form, max_lifetime=100.0) as pool:
        async with pool.acquire() as young:
            await trio.sleep(89.0)  # below 0.9 x max_lifetime: it stays
        async with pool.acquire() as again:
            assert again is young
            await trio.sleep(12.0)  # past 1.0 x max_lifetime
        await quiet()
        assert backend.gracefully_closed == [young]
        assert snapshot(pool) == idle_values(0)
        async with pool.acquire() as fresh:
            assert fresh is not young


async def test_idle_resources_expire_within_the_jittered_lifetime_and_min_is_refilled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend()
    options: dict[str, Any] = {"min": 3, "max": 3, "max_lifetime": 100.0, "sync_interval": 0.5}
    async with make_pool(backend, **options) as pool:
        await trio.sleep(1.0)
        first = list(backend.created)
        assert len(first) == 3
        await trio.sleep(88.0)  # t = 89 < 0.9 x 100: nothing expired yet
        assert backend.closed == []
        await trio.sleep(12.0)  # t = 101: every one expired (swept every 0.5 s)
        await quiet()
        assert backend.gracefully_closed == first
        assert snapshot(pool) == idle_values(3)
        assert not set(map(id, first)) & {id(r) for r in backend.alive_resources}


async def test_lifetimes_are_jittered_so_resources_do_not_expire_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend()
    expiries: dict[int, float] = {}

    async def dispose(resource: FakeResource) -> None:
        expiries[id(resource)] = trio.current_time()

    pool = trio_pool.ResourcePool(
        backend.acquire, dispose, min=20, max=20, max_lifetime=100.0, sync_interval=0.1
    )
    async with pool:
        await trio.sleep(150.0)
    first = backend.created[:20]
    times = [expiries[id(r)] for r in first]
    assert all(90.0 <= t <= 100.2 for t in times), times
    assert len({round(t, 1) for t in times}) > 5, times  # spread over [90, 100] s


async def test_a_lifetime_is_checked_on_release_not_only_by_the_sweep(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given back past its lifetime but before any sweep could see it, it is retired at once.
    monkeypatch.setattr("random.uniform", lambda low, high: 0.95)  # the jitter: 95 s
    backend = FakeBackend()
    async with make_pool(backend, max_lifetime=100.0, sync_interval=10.0) as pool:
        async with pool.acquire() as resource:  # t = 0; sweeps at 10, 20, ..., 90, 100
            await trio.sleep(94.0)
        async with pool.acquire() as again:  # t = 94: still within its 95 s
            assert again is resource
            await trio.sleep(3.0)  # t = 97: past it, 3 s before the next sweep
        await quiet()
        assert backend.gracefully_closed == [resource]
        assert snapshot(pool) == idle_values(0)


async def test_a_resource_held_past_its_lifetime_is_retired_once_given_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1, max_lifetime=10.0, sync_interval=1.0) as pool:
        held = await pool.checkout()
        await trio.sleep(30.0)  # past its lifetime while lent: nothing happens to it yet
        assert backend.gracefully_closed == []
        pool.release(held)
        await quiet()
        assert backend.gracefully_closed == [held]
        async with pool.acquire() as fresh:
            assert fresh is not held


# --------------------------------------------------------------------------- expire_all


@pytest.mark.parametrize("form", FORMS)
async def test_expire_all_retires_idle_now_held_on_release_and_refills_min(
    form: str, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, form, min=1, max=3) as pool:
        held = await pool.checkout()
        idle = await pool.checkout()
        pool.release(idle)
        pool.expire_all()
        await quiet()
        assert backend.gracefully_closed == [idle]
        assert snapshot(pool)["allocated"] == 1  # held still counts towards min
        pool.release(held)
        await quiet()
        assert backend.gracefully_closed == [held, idle]  # in creation order
        assert snapshot(pool) == idle_values(1)  # min refilled with a new one
        async with pool.acquire() as resource:
            assert resource not in (held, idle)
        assert snapshot(pool) == idle_values(1)


async def test_expire_all_retires_a_creation_under_way_and_its_waiter_gets_a_new_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(acquire_delay=1.0)
    async with make_pool(backend, max=1) as pool:
        got: list[FakeResource] = []

        async def waiter() -> None:
            got.append(await pool.checkout())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(0.5)  # its creation is under way
            pool.expire_all()
        assert len(backend.created) == 2
        assert got == [backend.created[1]]
        assert backend.gracefully_closed == [backend.created[0]]
        pool.release(got[0])


# --------------------------------------------------------------------------- resize


async def test_resize_down_retires_surplus_idle_now_and_held_ones_on_release(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=4) as pool:
        resources = [await pool.checkout() for _ in range(4)]
        pool.release(resources[0])
        pool.release(resources[1])
        pool.resize(max=1)
        await quiet()
        assert pool.statistics().max == 1
        assert backend.gracefully_closed == resources[:2]
        assert snapshot(pool)["allocated"] == 2  # over max until the holders give back
        pool.release(resources[2])
        await quiet()
        assert snapshot(pool)["allocated"] == 1
        pool.release(resources[3])
        assert snapshot(pool) == idle_values(1)
        assert pool.statistics().max == 1


async def test_resize_up_serves_waiters_at_once_and_raises_min(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=1) as pool:
        held = await pool.checkout()
        got: list[FakeResource] = []

        async def waiter() -> None:
            got.append(await pool.checkout())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await quiet()
            assert snapshot(pool)["queued"] == 1
            pool.resize(max=2)
        assert len(got) == 1
        assert got[0] is not held
        pool.resize(min=2)
        assert pool.statistics().min == 2
        pool.release(held)
        pool.release(got[0])
        assert snapshot(pool) == idle_values(2)
        pool.resize(min=0, max=5)
        assert (pool.statistics().min, pool.statistics().max) == (0, 5)


@pytest.mark.parametrize(
    "arguments", [{"max": 0}, {"min": -1}, {"min": 5}, {"max": "3"}, {"min": 2, "max": 1}]
)
async def test_bad_resize_is_rejected_and_changes_nothing(arguments: dict[str, Any]) -> None:
    backend = FakeBackend()
    async with make_pool(backend, min=1, max=3) as pool:
        with pytest.raises(InvalidArgumentError, match="invalid m"):
            pool.resize(**arguments)
        assert (pool.statistics().min, pool.statistics().max) == (1, 3)


# --------------------------------------------------------------------------- checkout_nowait


async def test_checkout_nowait_takes_an_idle_resource_or_would_block() -> None:
    backend = FakeBackend()
    async with make_pool(backend) as pool:
        with pytest.raises(trio.WouldBlock):
            pool.checkout_nowait()
        assert snapshot(pool) == idle_values(0)  # nothing was queued or allocated for it
        async with pool.acquire() as resource:
            pass
        assert pool.checkout_nowait() is resource
        assert snapshot(pool) == {"allocated": 1, "available": 0, "queued": 0}
        pool.release(resource)
    with pytest.raises(trio_pool.PoolDestroyedError):
        pool.checkout_nowait()


async def test_checkout_nowait_is_refused_while_ending() -> None:
    backend = FakeBackend()
    async with make_pool(backend) as pool:
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.end)
            await quiet()
            with pytest.raises(PoolEndingError):
                pool.checkout_nowait()
            pool.release(held)


async def test_checkout_nowait_skips_an_expired_idle_resource(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, max=2) as pool:
        old = await pool.checkout()
        pool.release(old)
        pool.expire_all()
        with pytest.raises(trio.WouldBlock):
            pool.checkout_nowait()
        await quiet()
        assert backend.gracefully_closed == [old]


# --------------------------------------------------------------------------- leaks and counters


async def test_a_leak_logs_one_warning_naming_where_it_was_checked_out(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, leak_timeout=5.0, sync_interval=1.0, name="leaky") as pool:
        with caplog.at_level(logging.WARNING, logger="trio_pool.resource"):
            line = sys._getframe().f_lineno + 1
            async with pool.acquire():
                await trio.sleep(4.0)
            assert not caplog.records  # given back in time
            line2 = sys._getframe().f_lineno + 1
            resource = await pool.checkout()
            await trio.sleep(30.0)
            pool.release(resource)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert f"{__file__}:{line2}" in message
    assert f":{line}" not in message
    assert "'leaky'" in message
    assert counters(pool)["leaks"] == 1


async def test_a_leak_is_reported_only_after_leak_timeout_and_within_two_sweeps_more(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, leak_timeout=5.0, sync_interval=1.0) as pool:
        with caplog.at_level(logging.WARNING, logger="trio_pool.resource"):
            await trio.sleep(0.5)  # sweeps at 1, 2, ...: this checkout is first seen at 1
            resource = await pool.checkout()
            reported_at: list[float] = []
            while not caplog.records:
                await trio.sleep(0.25)
                reported_at.append(trio.current_time())
            pool.release(resource)
    held = reported_at[-1] - 0.5
    assert 5.0 <= held <= 5.0 + 2 * 1.0, held
    assert len(caplog.records) == 1
    assert counters(pool)["leaks"] == 1


@pytest.mark.parametrize("how", ["acquire", "checkout_nowait"])
async def test_a_leak_names_the_line_of_each_way_of_checking_out(
    how: str, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeBackend()
    async with make_pool(backend, min=1, leak_timeout=5.0, sync_interval=1.0) as pool:
        await quiet()  # min=1 is open: checkout_nowait() has one
        with caplog.at_level(logging.WARNING, logger="trio_pool.resource"):
            if how == "acquire":
                line = sys._getframe().f_lineno + 1
                async with pool.acquire():
                    await trio.sleep(30.0)
            else:
                line = sys._getframe().f_lineno + 1
                resource = pool.checkout_nowait()
                await trio.sleep(30.0)
                pool.release(resource)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{__file__}:{line} held over leak_timeout=5.0s" in warning.getMessage()
    assert counters(pool)["leaks"] == 1


async def test_cumulative_counters_count_each_kind_of_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(fail_next=1)
    pool = make_pool(backend, ping=True, max=1, request_timeout=5.0, bail_after=None)
    async with pool:
        async with pool.acquire() as resource:  # the first allocation fails, then retried
            with pytest.raises(RequestTimeoutError):
                await pool.checkout()
        resource.alive = False
        async with pool.acquire():  # its ping fails: replaced
            pass
        assert counters(pool) == {
            "acquires": 2,
            "request_timeouts": 1,
            "allocation_errors": 1,
            "ping_failures": 1,
            "leaks": 0,
        }
