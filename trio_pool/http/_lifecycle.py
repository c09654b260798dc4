"""The close/destroy state machine shared by ``Client``, ``Pool`` and ``BalancedPool``.

Theory of operation
-------------------
Two flags and one event: ``_closed`` (no new requests; set by ``close()``, ``destroy()`` or
leaving the block), ``_destroyed`` (outstanding work is aborted) and ``_shut`` (closed or
destroyed, and every background task that serves requests has ended). ``close()`` and
``destroy()`` flip the flags synchronously, then wait for ``_shut``. A subclass says what
"abort everything" means (:meth:`Lifecycle._abort_all`) and decides when it is shut
(:meth:`Lifecycle._check_shutdown`, which sets ``_shut``). Leaving the ``async with`` block
goes through the :class:`~trio_pool._supervisor.Supervisor`: normally it is ``close()``
(nothing more if already destroyed), with an exception it is an immediate destroy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .._errors import ClientClosedError, ClientDestroyedError
from .._supervisor import LifetimeError, Supervisor

if TYPE_CHECKING:
    from types import TracebackType

    from ._models import PoolStats

__all__ = ["Lifecycle"]


class Lifecycle:
    """``closed``/``destroyed``, ``close()``/``destroy()`` and the ``async with`` exit."""

    _log: logging.Logger

    def __init__(self) -> None:
        self._supervisor = Supervisor()
        self._closed = False
        self._destroyed = False
        self._destroy_error: BaseException | None = None
        self._shut = trio.Event()  # closed or destroyed, and every serving task ended

    # ------------------------------------------------------------------ hooks

    def _describe(self) -> str:
        """Where this object sends requests (its origin, or its upstreams), for its repr."""
        raise NotImplementedError

    def statistics(self) -> PoolStats:
        """The counters, for the repr (each subclass documents its own)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        # Cheap (O(upstreams), no I/O), so log lines can show it; never any request content.
        stats = self.statistics()
        return (
            f"<{type(self).__name__} {self._describe()}"
            f" {self._state()} connected={stats.connected} free={stats.free}"
            f" queued={stats.queued} running={stats.running}>"
        )

    def _state(self) -> str:
        if self._destroyed:
            return "destroyed"
        if self._closed:
            return "closed" if self._shut.is_set() or not self._supervisor.running else "closing"
        return "open" if self._supervisor.running else "new"

    def _abort_all(self, error: Callable[[], BaseException]) -> None:
        """Fail every queued and running request with ``error()`` and stop serving."""
        raise NotImplementedError

    def _check_shutdown(self) -> None:
        """Set ``_shut`` once closed and nothing is left to finish."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the block

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        await self._leave(exc)
        return False

    async def _leave(self, exc: BaseException | None) -> None:
        await self._supervisor.exit(exc, graceful=self._close_on_exit, abort=self._destroy_now)
        self._closed = True

    async def _close_on_exit(self) -> None:
        if not self._destroyed:
            await self.close()

    def _check_enter(self) -> None:
        if self._closed:
            raise ClientClosedError(f"{type(self).__name__} was already closed")

    def _check_open(self, *, entered: bool = True) -> None:
        """Refuse new work unless this object takes it now (and, with ``entered``, its block
        is running)."""
        if self._destroyed:
            raise ClientDestroyedError(f"{type(self).__name__} was destroyed")
        if self._closed:
            raise ClientClosedError(f"{type(self).__name__} is closed")
        if entered and not self._supervisor.running:
            raise LifetimeError(f"use {type(self).__name__} in an 'async with' block")

    # ------------------------------------------------------------------ public

    @property
    def closed(self) -> bool:
        """True once ``close()`` (or ``destroy()``) began or the block was left."""
        return self._closed

    @property
    def destroyed(self) -> bool:
        """True once ``destroy()`` began (or the block was left with an exception)."""
        return self._destroyed

    async def close(self) -> None:
        """Refuse new requests, let queued and running ones finish, then close.

        Returns once everything is closed; calling it again waits for the same.
        A checkpoint.

        Raises:
            ClientDestroyedError: ``destroy()`` was called before.
        """
        if self._destroyed:
            raise ClientDestroyedError(f"{type(self).__name__} was destroyed")
        if not self._closed:
            self._closed = True
            self._log.debug("closing %r", self)
            self._check_shutdown()
        await self._shut.wait()

    async def destroy(self, error: BaseException | None = None) -> None:
        """Fail every queued and running request with ``error`` (default
        ``ClientDestroyedError``), close everything at once, refuse new requests.

        Returns once everything is closed. A checkpoint.
        """
        self._destroy_now(error)
        await self._shut.wait()

    def _destroy_now(self, error: BaseException | None = None) -> None:
        if self._destroyed:
            return
        self._log.debug("destroying %r", self)
        self._destroyed = self._closed = True
        self._destroy_error = error
        name = type(self).__name__
        # The caller's error is given as is; the default is a new exception per request, as
        # each is raised in its own task.
        self._abort_all(lambda: error or ClientDestroyedError(f"{name} was destroyed"))
        self._check_shutdown()
