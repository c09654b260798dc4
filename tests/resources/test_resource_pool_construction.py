"""Construction of ResourcePool and Backoff: argument validation, defaults, no I/O."""

from __future__ import annotations

import math
import re
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from resource_fakes import CALLBACKS, OPEN, FakeBackend, make_pool, snapshot

import trio_pool
from trio_pool import Backoff, InvalidArgumentError, ResourcePool

TIMEOUT_OPTIONS = [
    "acquire_timeout",
    "dispose_timeout",
    "ping_timeout",
    "request_timeout",
    "idle_timeout",
]


def assert_names(error: BaseException, *names: str) -> None:
    """The error message names (one of) the argument(s), as a whole word."""
    message = str(error)
    assert any(re.search(rf"\b{re.escape(name)}\b", message) for name in names), (
        f"{message!r} does not name any of {names}"
    )


BAD_OPTIONS: list[tuple[str, Any]] = [
    ("min", -1),
    ("min", 1.5),
    ("min", True),
    ("min", "1"),
    ("min", None),
    ("max", 0),
    ("max", -1),
    ("max", 2.5),
    ("max", True),
    ("max", "10"),
    ("max_requests", -1),
    ("max_requests", 1.5),
    ("max_requests", True),
    ("max_requests", "5"),
    *[(name, bad) for name in TIMEOUT_OPTIONS for bad in (-1, -0.001, math.nan, True, "1")],
    ("sync_interval", 0),
    ("sync_interval", -1),
    ("sync_interval", math.nan),
    ("sync_interval", True),
    ("sync_interval", None),
    ("sync_interval", "10"),
    ("bail_after", -1),
    ("bail_after", math.nan),
    ("bail_after", True),
    ("bail_after", "0"),
    ("backoff", 0.1),
    ("backoff", (0.1, 30.0)),
    ("backoff", {"min": 0.1, "max": 30.0}),
]


@pytest.mark.parametrize(("name", "value"), BAD_OPTIONS, ids=lambda v: repr(v))
def test_bad_option_raises_invalid_argument_naming_it(name: str, value: Any) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        make_pool(FakeBackend(), **{name: value})
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, trio_pool.TrioPoolError)
    assert_names(info.value, name)


def test_max_below_min_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        make_pool(FakeBackend(), min=3, max=2)
    assert_names(info.value, "max", "min")


@pytest.mark.parametrize("name", TIMEOUT_OPTIONS)
@pytest.mark.parametrize("value", [None, 0, 0.0, 5, 2.5])
def test_timeouts_accept_none_zero_and_positive_numbers(name: str, value: Any) -> None:
    make_pool(FakeBackend(), **{name: value})


@pytest.mark.parametrize(
    "options",
    [
        {"min": 0, "max": 1},
        {"min": 5, "max": 5},
        {"max_requests": None},
        {"max_requests": 0},
        {"bail_after": None},
        {"bail_after": 0},
        {"bail_after": 12.5},
        {"sync_interval": 0.5},
        {"backoff": Backoff(min=1, max=2)},
        {"capabilities": ("read", "write")},
    ],
    ids=repr,
)
def test_valid_options_are_accepted(options: dict[str, Any]) -> None:
    make_pool(FakeBackend(), **options)


def _forms(backend: FakeBackend) -> dict[str, dict[str, Any]]:
    return {
        "neither": {},
        "acquire without dispose": {"acquire": backend.acquire},
        "dispose without acquire": {"dispose": backend.dispose},
        "both forms": {
            "acquire": backend.acquire,
            "dispose": backend.dispose,
            "open": backend.open,
        },
        "open and acquire": {"acquire": backend.acquire, "open": backend.open},
        "open and dispose": {"dispose": backend.dispose, "open": backend.open},
        "only destroy and ping": {"destroy": backend.destroy, "ping": backend.ping},
    }


@pytest.mark.parametrize(
    "case",
    [
        "neither",
        "acquire without dispose",
        "dispose without acquire",
        "both forms",
        "open and acquire",
        "open and dispose",
        "only destroy and ping",
    ],
)
def test_neither_or_both_forms_is_rejected(case: str) -> None:
    options = _forms(FakeBackend())[case]
    with pytest.raises(InvalidArgumentError) as info:
        ResourcePool(**options)
    assert_names(info.value, "acquire", "dispose", "open")


def test_acquire_and_dispose_may_be_positional() -> None:
    backend = FakeBackend()
    ResourcePool(backend.acquire, backend.dispose)


def test_construction_outside_trio_does_no_io() -> None:
    """Constructing needs no running Trio loop: it does no I/O and starts no task."""
    backend = FakeBackend()
    make_pool(backend, min=3)
    make_pool(backend, OPEN, min=3)
    assert backend.attempts == []


@pytest.mark.parametrize("form", [CALLBACKS, OPEN])
async def test_construction_starts_nothing_until_entered(form: str) -> None:
    backend = FakeBackend()
    pool = make_pool(backend, form, min=2)
    await trio.testing.wait_all_tasks_blocked()
    assert backend.attempts == []
    async with pool as entered:
        assert entered is pool
        await trio.testing.wait_all_tasks_blocked()
        assert len(backend.created) == 2


async def test_statistics_defaults() -> None:
    pool = make_pool(FakeBackend())
    async with pool:
        await trio.testing.wait_all_tasks_blocked()
        stats = pool.statistics()
        assert isinstance(stats, trio_pool.ResourcePoolStats)
        assert (stats.min, stats.max, stats.max_requests, stats.live) == (0, 10, None, False)
        assert snapshot(pool) == {"allocated": 0, "available": 0, "queued": 0}


async def test_statistics_is_a_frozen_attrs_snapshot() -> None:
    pool = make_pool(FakeBackend(), min=1, max=4, max_requests=7)
    async with pool:
        await trio.testing.wait_all_tasks_blocked()
        before = pool.statistics()
        assert attrs.has(type(before))
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            before.allocated = 99  # type: ignore[misc]
        assert (before.min, before.max, before.max_requests) == (1, 4, 7)
        assert (before.allocated, before.available, before.live) == (1, 1, True)
        resource = await pool.checkout()
        # A snapshot: the earlier object does not change.
        assert before.available == 1
        assert pool.statistics().available == 0
        pool.release(resource)


def test_capabilities_are_exposed_as_a_tuple() -> None:
    pool = make_pool(FakeBackend(), capabilities=["read", "write"])
    assert pool.capabilities == ("read", "write")
    assert make_pool(FakeBackend()).capabilities == ()


# --------------------------------------------------------------------------- Backoff


def test_backoff_defaults() -> None:
    backoff = Backoff()
    assert backoff.min == 0.1
    assert backoff.max == 30.0
    assert Backoff() == Backoff(min=0.1, max=30.0)


def test_backoff_is_frozen_attrs() -> None:
    backoff = Backoff()
    assert attrs.has(Backoff)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        backoff.min = 1.0  # type: ignore[misc]


def test_backoff_delays_are_fibonacci_multiples_of_min() -> None:
    backoff = Backoff(min=0.5, max=1000.0)
    fibonacci = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55]
    assert [backoff.delay(n) for n in range(1, 11)] == pytest.approx([0.5 * f for f in fibonacci])


def test_backoff_delays_are_capped_at_max() -> None:
    backoff = Backoff(min=1.0, max=6.0)
    assert [backoff.delay(n) for n in range(1, 9)] == pytest.approx([1, 1, 2, 3, 5, 6, 6, 6])
    assert backoff.delay(500) == pytest.approx(6.0)


def test_default_backoff_schedule() -> None:
    backoff = Backoff()
    assert [backoff.delay(n) for n in range(1, 6)] == pytest.approx([0.1, 0.1, 0.2, 0.3, 0.5])
    assert backoff.delay(40) == pytest.approx(30.0)


def test_iterating_a_backoff_yields_the_delays_forever() -> None:
    backoff = Backoff(min=2.0, max=10.0)
    iterator = iter(backoff)
    first = [next(iterator) for _ in range(20)]
    assert first == pytest.approx([backoff.delay(n) for n in range(1, 21)])


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"min": 0}, ("min",)),
        ({"min": -1}, ("min",)),
        ({"min": 2.0, "max": 1.0}, ("max", "min")),
        ({"max": 0.01}, ("max", "min")),
    ],
    ids=repr,
)
def test_backoff_rejects_bad_bounds(options: dict[str, float], names: tuple[str, ...]) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Backoff(**options)
    assert_names(info.value, *names)
