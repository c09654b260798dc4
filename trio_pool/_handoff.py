"""The one cancellation-safe FIFO hand-off: parked tasks, each woken with a value or an error.

Theory of operation
-------------------
Every queue in trio_pool — requests waiting for an HTTP connection, requests waiting for a
``BalancedPool`` upstream or an ``Agent`` budget, acquirers waiting for a resource — has the
same shape, and the same race to avoid (aiohttp#9670, asyncpg#467): a waiter is handed a
resource at the very moment its caller cancels it, and the resource is lost, or later waiters
are never woken. :class:`HandoffQueue` is written once, in the style of trio's
``MemoryChannelState``:

* A waiter is a *key* (any hashable object that names it: the request record, a token) and the
  task parked under it, kept in an ``OrderedDict``, so the head is O(1) and removing a
  waiter from the middle is O(1).
* :meth:`HandoffQueue.wait` (or :meth:`HandoffQueue.park`, the same without a frame of its
  own) parks the current task with ``wait_task_rescheduled`` and an abort function that
  removes its key. A waiter cancelled while parked is therefore gone from
  the queue *before* anyone can hand it anything: nothing is ever handed to a cancelled waiter.
* :meth:`HandoffQueue.hand` and :meth:`HandoffQueue.fail` remove the waiter and reschedule its
  task with the outcome in one synchronous step. Once handed, the value is the waiter's: the
  task's ``wait()`` returns it even if a cancellation arrives in the meantime (trio does not
  abort a task that was already rescheduled), so the waiter's caller owns it and must give it
  back if it cannot use it.

Invariants: every key in the queue names exactly one parked task; a key is in the queue at
most once; only this class's methods change the queue (its owner decides *what* to hand and
*when*, synchronously, with no ``await`` between deciding and handing).

Nothing here is a checkpoint except :meth:`HandoffQueue.wait` and the awaitable
:meth:`HandoffQueue.park` returns (which always block until woken:
callers try their non-blocking path first, after a ``checkpoint_if_cancelled`` of their own, as
``trio.MemoryReceiveChannel.receive`` does).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping
from itertools import islice, takewhile
from typing import Any, Generic, TypeVar

import outcome
import trio

__all__ = ["HandoffQueue"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class HandoffQueue(Generic[K, V]):
    """A FIFO of tasks parked under keys, each woken with a value (:meth:`hand`) or an error
    (:meth:`fail`). See the module docstring for the rules."""

    __slots__ = ("_parked", "parked")

    def __init__(self) -> None:
        # key -> parked task, head first. An OrderedDict, not a dict: taking the head of a
        # plain dict scans past the entries already deleted from its front (O(queue) between
        # compactions, which a deep queue pays on every hand-off), while an OrderedDict's
        # linked list gives the head, and a move to the front, in O(1).
        self._parked: OrderedDict[K, trio.lowlevel.Task] = OrderedDict()
        # The same mapping, typed read-only, for hot paths: ``if queue.parked:`` is a truth
        # test with no Python call (``if queue:`` calls ``__bool__``).
        self.parked: Mapping[K, trio.lowlevel.Task] = self._parked

    def __len__(self) -> int:
        return len(self._parked)

    def __bool__(self) -> bool:
        return bool(self._parked)

    def __contains__(self, key: object) -> bool:
        return key in self._parked

    def __iter__(self) -> Iterator[K]:
        """The keys, head first (a snapshot: safe to hand or fail while iterating)."""
        return iter(list(self._parked))

    def head(self) -> K:
        """The key of the longest waiter. Raises ``IndexError`` when nobody waits."""
        if not self._parked:
            raise IndexError("nobody waits")
        return next(iter(self._parked))

    async def wait(
        self, key: K, *, front: bool = False, before: Callable[[K], bool] | None = None
    ) -> V:
        """Park the current task under ``key`` until :meth:`hand` or :meth:`fail` wakes it.

        A checkpoint that always blocks. If the caller is cancelled while parked, ``key`` is
        removed and ``trio.Cancelled`` propagates: nothing was handed to it. ``front=True``
        queues it ahead of every current waiter (a request re-queued after a failure keeps its
        place ahead of newer ones); with ``before`` as well, ahead of the first waiter for
        which ``before(waiter)`` is true, behind the others (several re-queued requests keep
        their relative order). O(1), or with ``before`` O(the waiters kept ahead).

        Returns:
            The value given to :meth:`hand`.

        Raises:
            BaseException: the error given to :meth:`fail`.
            ValueError: ``key`` already waits (a bug in the caller).
        """
        return await self.park(key, front=front, before=before)

    def park(
        self, key: K, *, front: bool = False, before: Callable[[K], bool] | None = None
    ) -> Awaitable[V]:
        """:meth:`wait` without a coroutine frame of its own, for queues thousands deep (a
        queued HTTP request): ``key`` is parked *now*, in the calling task, and the result
        is the sleep itself, which the caller must await at once (``await queue.park(key)``,
        nothing in between) — the same checkpoint, results and errors as :meth:`wait`.

        Not a checkpoint itself (the awaitable is). Not for ``nursery.start_soon``: it would
        park the task that starts it, not the task started.

        Raises:
            ValueError: ``key`` already waits (a bug in the caller).
        """
        parked = self._parked
        if key in parked:
            raise ValueError("this key already waits")
        parked[key] = trio.lowlevel.current_task()
        if front:
            parked.move_to_end(key, last=False)
            if before is not None:
                # The leading keys that ``before`` declines stay ahead of it (O(those)).
                ahead = list(takewhile(lambda k: not before(k), islice(parked, 1, None)))
                for other in reversed(ahead):
                    parked.move_to_end(other, last=False)
        # Returned unawaited on purpose: the caller's own ``await`` runs it (see above).
        return trio.lowlevel.wait_task_rescheduled(_Unpark(parked, key))  # noqa: ASYNC105

    def hand(self, value: V, key: K | None = None) -> K:
        """Wake the head waiter (or the one under ``key``) with ``value``; it leaves the queue.

        Not a checkpoint. From now on ``value`` belongs to that waiter.

        Returns:
            The key that was woken.

        Raises:
            IndexError: nobody waits (``key`` not given).
            KeyError: ``key`` does not wait.
        """
        return self._wake(key, outcome.Value(value))

    def fail(self, error: BaseException, key: K | None = None) -> K:
        """Wake the head waiter (or the one under ``key``) by raising ``error`` in it.

        Not a checkpoint.

        Returns:
            The key that was woken.

        Raises:
            IndexError: nobody waits (``key`` not given).
            KeyError: ``key`` does not wait.
        """
        return self._wake(key, outcome.Error(error))

    def fail_all(self, make_error: Callable[[K], BaseException]) -> None:
        """Wake every waiter, head first, each with its own ``make_error(key)``.

        Not a checkpoint. Errors are made one per waiter: a raised exception object collects a
        traceback, so waiters must never share one.
        """
        parked = self._parked
        while parked:
            key = self.head()
            self._wake(key, outcome.Error(make_error(key)))

    def _wake(self, key: K | None, result: outcome.Outcome[V]) -> K:
        """Remove the head waiter (or ``key``'s) and reschedule it with ``result``. Every
        hand-off runs this: it takes the waiter out of the queue itself, with no call."""
        parked = self._parked
        if key is None:
            if not parked:
                raise IndexError("nobody waits")
            key, task = parked.popitem(last=False)
        else:
            task = parked.pop(key)
        trio.lowlevel.reschedule(task, result)
        return key


class _Unpark:
    """The abort function of one parked waiter: removes its key. A slotted callable rather
    than a closure: 48 bytes instead of ~290 (a function and two cells) per waiter, which a
    queue of thousands pays for each (issue #16)."""

    __slots__ = ("_key", "_parked")

    def __init__(self, parked: OrderedDict[Any, trio.lowlevel.Task], key: Hashable) -> None:
        self._parked = parked
        self._key = key

    def __call__(self, _: object) -> trio.lowlevel.Abort:
        # Still parked, so nothing was handed to it: removing it loses nothing.
        del self._parked[self._key]
        return trio.lowlevel.Abort.SUCCEEDED
