"""Routing cost and preference: a pick probes O(1) upstreams whatever their number, and a
request goes to an upstream that can start it now rather than queueing behind a busy one."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from _upstreams import upstreams

from trio_pool import BalancedPool
from trio_pool.http._scheduler import Scheduler


async def _probes_per_request(count: int, monkeypatch: pytest.MonkeyPatch) -> float:
    probes = 0
    takes_now = Scheduler.takes_now
    queueing = Scheduler.queueing

    def counted_takes_now(self: Scheduler) -> bool:
        nonlocal probes
        probes += 1
        return takes_now(self)

    def counted_queueing(self: Scheduler) -> bool:
        nonlocal probes
        probes += 1
        return queueing(self)

    async with upstreams(count) as ups, BalancedPool([up.origin for up in ups]) as pool:
        for _ in range(count):  # every upstream connected once
            await pool.request("GET", "/")
        with monkeypatch.context() as patch:
            patch.setattr(Scheduler, "takes_now", counted_takes_now)
            patch.setattr(Scheduler, "queueing", counted_queueing)
            for _ in range(2 * count):
                await pool.request("GET", "/")
        assert sorted(up.served for up in ups) == [3] * count  # still round-robin
    return probes / (2 * count)


async def test_a_pick_probes_as_many_upstreams_with_4_as_with_64(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    few = await _probes_per_request(4, monkeypatch)
    many = await _probes_per_request(64, monkeypatch)
    assert few == many
    assert many <= 2  # the next one in turn is probed, once (plus the pump's own look)


async def test_a_free_upstream_is_preferred_to_queueing_behind_a_busy_one() -> None:
    async with upstreams(2) as (a, b), BalancedPool([a.origin, b.origin], connections=1) as pool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.request, "GET", "/slow")  # A's one connection, held
            nursery.start_soon(pool.request, "GET", "/slow")  # B's
            await trio.testing.wait_all_tasks_blocked()
            b.gate.set()
            await trio.testing.wait_all_tasks_blocked()
            assert pool.statistics().running == 1  # A still busy, B idle again
            # A is next in turn but busy: the request goes to B, not behind A's (which
            # would never end: A's gate is shut).
            with trio.fail_after(5):
                assert (await pool.request("GET", "/")).body == b"B"
                assert (await pool.request("GET", "/")).body == b"B"
            assert a.served == 0
            a.gate.set()
        assert a.served == 1
        assert b.served == 3
