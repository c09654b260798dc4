"""Ownership of an object's background tasks, and the one place exceptions are unwrapped.

Theory of operation
-------------------
Every pool is an async context manager whose block is the lifetime of its background tasks
(connection tasks, resource tasks, timers). Those tasks need a nursery, but the user's block
must not sit inside the cancel scope that stops them: ``await pool.destroy()`` called from
inside the block would otherwise cancel the caller itself. So :meth:`Supervisor.enter` opens
an *outer* nursery and starts one *host* task in it; the host opens the *inner* nursery that
runs every background task. Cancelling the inner nursery stops the library's tasks and
nothing else. The inner nursery is shielded, so a cancellation from outside reaches the
background tasks only through :meth:`Supervisor.exit`, after the user's code has unwound.

The outer nursery's exit is where Trio (strict exception groups) would wrap the user's own
exception in an ``ExceptionGroup``. :meth:`Supervisor.exit` unwraps it: when the group holds
nothing but the user's exception and ``Cancelled`` copies of an outer cancellation, the
user's exception leaves the ``async with`` as itself. Background tasks never raise (they
deliver their errors to the request or acquirer they affect), so anything else in the group
is a bug in this library and is left loud. :func:`open_helpers` applies the same rule to
a nursery of helper tasks inside a request's block (``pipeline()``'s body writer).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import trio

from ._errors import TrioPoolError

if sys.version_info < (3, 11):  # pragma: no cover - trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup

__all__ = ["LifetimeError", "Supervisor", "open_helpers"]


class LifetimeError(TrioPoolError, RuntimeError):
    """An object was used outside its ``async with`` block, or its block was entered twice.

    A programming error, hence also a :class:`RuntimeError`; still a :class:`TrioPoolError`
    like everything the library raises.
    """


@attrs.define(eq=False)
class Supervisor:
    """Runs an owner's background tasks inside a nursery that excludes the owner's block."""

    _outer_cm: AbstractAsyncContextManager[trio.Nursery] | None = None
    _inner: trio.Nursery | None = None

    @property
    def running(self) -> bool:
        """True between :meth:`enter` and :meth:`exit`."""
        return self._inner is not None

    async def enter(self) -> None:
        """Open the nurseries. A checkpoint."""
        if self._outer_cm is not None:
            raise LifetimeError("this object's async with block was already entered")
        cm = trio.open_nursery()
        outer = await cm.__aenter__()
        try:
            self._inner = await outer.start(self._host)
        except BaseException as exc:  # pragma: no cover - only a cancellation can get here
            await cm.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._outer_cm = cm

    async def _host(self, *, task_status: trio.TaskStatus[trio.Nursery]) -> None:
        # Shielded: a cancellation from outside the owner's block must reach the user's code
        # first and the background tasks only through exit(). Otherwise one outer cancel
        # would race a connection task closing a resource against the borrower still using
        # it (the borrower then sees a closed socket instead of its Cancelled).
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as inner:
                task_status.started(inner)
                await trio.sleep_forever()

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str) -> None:
        """Start a background task; it must catch its own errors. Not a checkpoint."""
        if self._inner is None:
            raise LifetimeError("background task started outside the owner's async with block")
        self._inner.start_soon(fn, *args, name=name)

    def cancel(self) -> None:
        """Cancel every background task (the owner's block is not affected)."""
        if self._inner is not None:
            self._inner.cancel_scope.cancel()

    async def exit(
        self,
        exc: BaseException | None,
        *,
        graceful: Callable[[], Awaitable[object]],
        abort: Callable[[], object],
    ) -> None:
        """Leave the owner's block: gracefully if ``exc`` is None, else abort. A checkpoint.

        ``graceful`` is awaited when the block ended normally (close/end); if it is itself
        interrupted (an outer cancellation), ``abort`` runs and that exception propagates.
        ``abort`` is called when the block raised. Then the background tasks are cancelled and
        the nurseries closed. The caller's ``__aexit__`` returns False afterwards, so the
        user's exception propagates as itself.
        """
        raised: BaseException | None = None
        if exc is None:
            try:
                await graceful()
            except BaseException as late:
                raised = late
                abort()
        else:
            abort()
        self.cancel()
        self._inner = None
        cm, self._outer_cm = self._outer_cm, None
        assert cm is not None, "exit() without enter()"
        pending = exc if exc is not None else raised
        try:
            await cm.__aexit__(
                type(pending) if pending is not None else None,
                pending,
                pending.__traceback__ if pending is not None else None,
            )
        except BaseExceptionGroup as group:
            _raise_unwrapped(group, pending)
        if raised is not None:
            raise raised


@asynccontextmanager
async def open_helpers() -> AsyncIterator[trio.Nursery]:
    """A nursery for helper tasks of the block, which deliver their errors elsewhere and
    never raise (but ``Cancelled``): the block's own exception leaves as itself, not in an
    ``ExceptionGroup``. Entering and leaving are checkpoints; leaving waits for the tasks.
    """
    cm = trio.open_nursery()
    nursery = await cm.__aenter__()
    try:
        yield nursery
    except BaseException as exc:
        try:
            await cm.__aexit__(type(exc), exc, exc.__traceback__)
        except BaseExceptionGroup as group:
            _raise_unwrapped(group, exc)
        raise
    try:
        await cm.__aexit__(None, None, None)
    except BaseExceptionGroup as group:
        _raise_unwrapped(group, None)


def _raise_unwrapped(
    group: BaseExceptionGroup[BaseException], pending: BaseException | None
) -> None:
    """Re-raise ``group`` unless it holds only ``pending`` and copies of ``Cancelled``.

    Returns normally when ``pending`` should propagate as itself (the caller lets it); raises
    a lone ``Cancelled`` bare; raises anything else as the group it is.
    """
    if _holds_other_than(group, pending):
        raise group
    if pending is None:
        raise _first_leaf(group)


def _holds_other_than(exc: BaseException, pending: BaseException | None) -> bool:
    # Walked by hand: BaseExceptionGroup.subgroup() tests the group itself first, and
    # ``pending`` may itself be a group the user raised.
    if exc is pending or isinstance(exc, trio.Cancelled) or _is_copy_of(exc, pending):
        return False
    if isinstance(exc, BaseExceptionGroup):
        return any(_holds_other_than(inner, pending) for inner in exc.exceptions)
    return True


def _is_copy_of(exc: BaseException, pending: BaseException | None) -> bool:
    """Whether ``exc`` is the user's group as Trio re-derived it on its way out of a cancel
    scope (filtering ``Cancelled`` builds a new group around the same leaves)."""
    if not isinstance(exc, BaseExceptionGroup) or not isinstance(pending, BaseExceptionGroup):
        return False
    return exc.message == pending.message and _leaves(exc) == _leaves(pending)


def _leaves(exc: BaseException) -> list[int]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [id(exc)]


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
