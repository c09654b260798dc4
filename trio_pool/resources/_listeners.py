"""The listeners of a ResourcePool's ``"acquired"`` and ``"released"`` events (``on()``).

Theory of operation
-------------------
Callbacks are kept per event as a tuple, replaced whole by :meth:`Listeners.on` and
:meth:`Listeners.off` (only those two change it), so emitting iterates without a copy and a
callback may call ``off()`` on itself. :attr:`Listeners.timing` (kept by those two) tells the
checkout path whether anyone listens at all: only then are checkout and release times taken.
:class:`Observed` is the pool's public ``on()``/``off()``, written here to keep the pool short.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from .._errors import InvalidArgumentError
from ._slot import Slot

__all__ = ["EVENTS", "Listeners", "Observed"]

EVENTS = frozenset({"acquired", "released"})
logger = logging.getLogger("trio_pool.resource")

Callback = Callable[[float], object]


class Listeners:
    """Event -> callbacks of one pool, and whether any is registered."""

    __slots__ = ("_by_event", "_owner", "timing")

    def __init__(self, owner: object) -> None:
        self._owner = owner  # named in the log line of a listener that raised
        self._by_event: dict[str, tuple[Callback, ...]] = {}
        self.timing = False
        """Whether any callback is registered (then the times are worth taking)."""

    def on(self, event: str, callback: Callback) -> None:
        """Register ``callback`` for ``event``; ``InvalidArgumentError`` for bad arguments."""
        if event not in EVENTS:
            raise InvalidArgumentError(f"invalid event {event!r}: expected one of {sorted(EVENTS)}")
        if not callable(callback):
            raise InvalidArgumentError("invalid callback: expected a callable")
        self._by_event[event] = (*self._by_event.get(event, ()), callback)
        self.timing = True

    def off(self, event: str, callback: Callback) -> None:
        """Remove one registration of ``callback`` for ``event``, if there is one."""
        callbacks = list(self._by_event.get(event, ()))
        if callback in callbacks:
            callbacks.remove(callback)
            self._by_event[event] = tuple(callbacks)
        self.timing = any(self._by_event.values())

    def emit(self, event: str, seconds: float) -> None:
        """Call ``event``'s callbacks with ``seconds``; one that raises is logged, not
        propagated (a listener's bug must not fail the checkout or release it observes)."""
        for callback in self._by_event.get(event, ()):
            try:
                callback(seconds)
            except Exception:
                logger.exception("%r: listener for %r raised", self._owner, event)

    def given_back(self, slot: Slot) -> None:
        """A lease ended; if it was timed, tell the "released" callbacks how long it lasted."""
        held_since, slot.held_since = slot.held_since, None
        if held_since is not None:
            self.emit("released", trio.current_time() - held_since)


class Observed:
    """``on()``/``off()`` of a :class:`~trio_pool.ResourcePool` (a mixin)."""

    __slots__ = ()
    _listeners: Listeners

    def on(self, event: str, callback: Callable[[float], object]) -> None:
        """Call ``callback(seconds)`` on ``event``. Not a checkpoint.

        Events: ``"acquired"(wait)``: a checkout succeeded (``acquire()``, ``checkout()`` or
        ``checkout_nowait()``), ``wait`` seconds after it was asked for (queueing and pings
        included); ``"released"(held)``: a checked-out resource was given back (released,
        removed or destroyed) after ``held`` seconds. The times are taken only while someone
        listens. A callback runs in the task of the checkout or release: it must not block;
        what it raises is logged, not propagated.

        Raises:
            InvalidArgumentError: an unknown ``event``, or ``callback`` is not callable.
        """
        self._listeners.on(event, callback)

    def off(self, event: str, callback: Callable[[float], object]) -> None:
        """Remove one registration of ``callback`` for ``event`` (no error if absent).
        Not a checkpoint."""
        self._listeners.off(event, callback)
