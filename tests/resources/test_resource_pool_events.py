"""ResourcePool.on()/off(): the "acquired"(wait) and "released"(held) events the
OpenTelemetry instrumentation turns into ``db.client.connection.wait_time`` and ``use_time``.
Virtual time (``autojump_clock``), so the durations are exact."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing
from resource_fakes import FakeBackend, idle_values, make_pool, quiet, snapshot

import trio_pool
from trio_pool import InvalidArgumentError


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    def acquired(self, wait: float) -> None:
        self.seen.append(("acquired", wait))

    def released(self, held: float) -> None:
        self.seen.append(("released", held))


def listen(pool: trio_pool.ResourcePool[Any]) -> Recorder:
    recorder = Recorder()
    pool.on("acquired", recorder.acquired)
    pool.on("released", recorder.released)
    return recorder


async def test_acquire_wait_and_hold_times_are_reported_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(acquire_delay=0.25)
    async with make_pool(backend, max=1) as pool:
        recorder = listen(pool)
        async with pool.acquire():  # a creation of 0.25 s
            await trio.sleep(1.0)
        async with pool.acquire():  # idle: no wait
            await trio.sleep(0.5)
        assert recorder.seen == [
            ("acquired", 0.25),
            ("released", 1.0),
            ("acquired", 0.0),
            ("released", 0.5),
        ]


async def test_a_queued_acquirer_reports_its_queueing_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with make_pool(FakeBackend(), max=1) as pool:
        recorder = listen(pool)
        held = await pool.checkout()
        async with trio.open_nursery() as nursery:

            async def second() -> None:
                async with pool.acquire():
                    pass

            nursery.start_soon(second)
            await trio.sleep(2.0)
            pool.release(held)
        assert recorder.seen == [
            ("acquired", 0.0),
            ("released", 2.0),
            ("acquired", 2.0),
            ("released", 0.0),
        ]


async def test_nowait_remove_and_destroy_are_timed_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with make_pool(FakeBackend(), min=2, max=2) as pool:
        await quiet()
        recorder = listen(pool)
        first = pool.checkout_nowait()
        second = pool.checkout_nowait()
        await trio.sleep(3.0)
        pool.remove(first)
        await trio.sleep(1.0)
        pool.destroy(second)
        assert recorder.seen == [
            ("acquired", 0.0),
            ("acquired", 0.0),
            ("released", 3.0),
            ("released", 4.0),
        ]
        await quiet()
        assert snapshot(pool) == idle_values(2)  # min is refilled


async def test_a_lease_begun_before_listening_reports_no_release(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with make_pool(FakeBackend()) as pool:
        early = await pool.checkout()
        recorder = listen(pool)
        pool.release(early)  # its start was never taken: nothing to report
        assert recorder.seen == []


async def test_off_stops_reporting(autojump_clock: trio.testing.MockClock) -> None:
    async with make_pool(FakeBackend()) as pool:
        recorder = listen(pool)
        pool.off("acquired", recorder.acquired)
        pool.off("released", recorder.released)
        pool.off("released", recorder.released)  # absent: no error
        async with pool.acquire():
            await trio.sleep(1.0)
        assert recorder.seen == []
        assert pool._listeners.timing is False  # no listener, no timing taken


async def test_a_failing_listener_is_logged_and_the_checkout_still_succeeds(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    def broken(seconds: float) -> None:
        raise RuntimeError("listener bug")

    async with make_pool(FakeBackend()) as pool:
        pool.on("acquired", broken)
        pool.on("released", broken)
        with caplog.at_level(logging.ERROR, logger="trio_pool.resource"):
            async with pool.acquire() as resource:
                assert resource is not None
        assert snapshot(pool) == idle_values(1)
    messages = [record.getMessage() for record in caplog.records]
    assert [message.rsplit(": ", 1)[1] for message in messages] == [
        "listener for 'acquired' raised",
        "listener for 'released' raised",
    ]


async def test_cancelled_while_queued_reports_nothing_and_the_pool_stays_whole(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with make_pool(FakeBackend(), max=1) as pool:
        recorder = listen(pool)
        held = await pool.checkout()
        with trio.move_on_after(1.0):
            await pool.checkout()
        assert pool.statistics().queued == 0
        pool.release(held)
        assert recorder.seen == [("acquired", 0.0), ("released", 1.0)]
        async with pool.acquire():
            pass
        assert snapshot(pool) == idle_values(1)


@pytest.mark.parametrize(("event", "callback"), [("checkout", print), ("acquired", 42)])
def test_bad_listener_arguments_are_refused(event: str, callback: object) -> None:
    pool = make_pool(FakeBackend())
    with pytest.raises(InvalidArgumentError, match=r"invalid (event|callback)"):
        pool.on(event, callback)  # type: ignore[arg-type]
