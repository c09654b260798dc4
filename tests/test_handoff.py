"""The one hand-off primitive (trio_pool._handoff): FIFO order, front insertion, errors, and
the cancellation race of aiohttp#9670 (nothing is ever handed to a cancelled waiter)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_pool._handoff import HandoffQueue


async def test_values_go_to_waiters_in_fifo_order() -> None:
    queue: HandoffQueue[str, int] = HandoffQueue()
    got: dict[str, int] = {}

    async def waiter(name: str) -> None:
        got[name] = await queue.wait(name)

    async with trio.open_nursery() as nursery:
        for name in "abc":
            nursery.start_soon(waiter, name)
            await trio.testing.wait_all_tasks_blocked()
        assert list(queue) == ["a", "b", "c"]
        assert queue.head() == "a"
        assert "b" in queue
        assert len(queue) == 3
        for value in range(3):
            assert queue.hand(value) == "abc"[value]
    # Trio wakes rescheduled tasks in any order; the values show who was handed what.
    assert got == {"a": 0, "b": 1, "c": 2}
    assert not queue
    assert not queue.parked


async def test_parked_is_a_live_view_of_the_waiting_keys() -> None:
    queue: HandoffQueue[str, int] = HandoffQueue()
    view = queue.parked
    assert not view
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.wait, "a")
        await trio.testing.wait_all_tasks_blocked()
        assert list(view) == ["a"]
        assert view  # the truth test hot paths use instead of bool(queue)
        nursery.cancel_scope.cancel()
    assert not view
    assert queue.parked is view


async def test_front_insertion_and_hand_to_a_named_key() -> None:
    queue: HandoffQueue[str, int] = HandoffQueue()
    got: dict[str, int] = {}

    async def waiter(name: str, front: bool) -> None:
        got[name] = await queue.wait(name, front=front)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "old", False)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter, "retry", True)
        await trio.testing.wait_all_tasks_blocked()
        assert list(queue) == ["retry", "old"]
        queue.hand(7, "old")
        queue.hand(8)
    assert got == {"old": 7, "retry": 8}


async def test_fail_raises_in_the_waiter_and_fail_all_makes_one_error_each() -> None:
    queue: HandoffQueue[int, None] = HandoffQueue()
    errors: dict[int, BaseException] = {}

    async def waiter(key: int) -> None:
        try:
            await queue.wait(key)
        except KeyError as exc:
            errors[key] = exc

    async with trio.open_nursery() as nursery:
        for key in range(3):
            nursery.start_soon(waiter, key)
        await trio.testing.wait_all_tasks_blocked()
        queue.fail(KeyError("first"), 1)
        queue.fail_all(lambda key: KeyError(key))
    assert [errors[k].args[0] for k in range(3)] == [0, "first", 2]
    assert errors[0] is not errors[2]


async def test_a_cancelled_waiter_leaves_the_queue_and_the_next_gets_the_value() -> None:
    queue: HandoffQueue[str, int] = HandoffQueue()
    got: list[int] = []

    async def second() -> None:
        got.append(await queue.wait("second"))

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            nursery.start_soon(second)  # starts after this task parks

            async def cancel_soon() -> None:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
                # The cancelled waiter's abort ran synchronously: it is gone already.
                assert list(queue) == ["second"]
                queue.hand(42)

            nursery.start_soon(cancel_soon)
            await queue.wait("first")
        assert scope.cancelled_caught
    assert got == [42]
    assert not queue


async def test_a_value_handed_before_the_cancel_is_delivered() -> None:
    queue: HandoffQueue[str, int] = HandoffQueue()
    with trio.CancelScope() as scope:

        async def hand_then_cancel() -> None:
            await trio.testing.wait_all_tasks_blocked()
            queue.hand(5)
            scope.cancel()  # too late: the waiter was rescheduled with its value

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hand_then_cancel)
            assert await queue.wait("w") == 5
    assert not queue


async def test_misuse_is_reported() -> None:
    queue: HandoffQueue[str, int] = HandoffQueue()
    with pytest.raises(IndexError):
        queue.head()
    with pytest.raises(IndexError):
        queue.hand(1)
    with pytest.raises(KeyError):
        queue.fail(KeyError("x"), "absent")

    async def park() -> None:
        await queue.wait("k")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(park)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(ValueError, match="already waits"):
            await queue.wait("k")
        queue.hand(0)


async def test_front_insertion_before_a_predicate_keeps_the_order_of_requeued_keys() -> None:
    queue: HandoffQueue[int, None] = HandoffQueue()

    async def waiter(key: int, front: bool) -> None:
        await queue.wait(key, front=front, before=lambda other: other > key)

    async with trio.open_nursery() as nursery:
        for key, front in ((10, False), (11, False), (3, True), (1, True), (2, True)):
            nursery.start_soon(waiter, key, front)
            await trio.testing.wait_all_tasks_blocked()
        # Re-queued in the order 3, 1, 2: they go ahead of the newer keys, in key order.
        assert list(queue) == [1, 2, 3, 10, 11]
        for _ in range(5):
            queue.hand(None)


async def test_park_waits_like_wait_parks_at_the_call_and_leaves_on_cancel() -> None:
    queue: HandoffQueue[str, int] = HandoffQueue()
    got: list[int] = []

    async def waiter(name: str) -> None:
        got.append(await queue.park(name))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "a")
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            sleep = queue.park("b")  # parked by the call itself, before any await
            assert list(queue) == ["a", "b"]
            with pytest.raises(ValueError, match="already waits"):
                queue.park("b")
            scope.cancel()
            await sleep
        assert scope.cancelled_caught
        assert list(queue) == ["a"]  # the cancelled waiter left at once
        assert queue.hand(3) == "a"
    assert got == [3]
    assert not queue
