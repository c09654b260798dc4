"""``on``/``off`` listeners for the dispatcher events, and their emission along ``targets``.

Events: ``"connect"(origin, targets)``, ``"disconnect"(origin, targets, error)``,
``"connection_error"(origin, targets, error)``, ``"drain"(origin, targets)``. ``targets`` is
the ownership chain, outermost first (``[pool, client]``); each object in the chain emits to
its own listeners with the part of the chain that starts at itself, as undici does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from .._errors import InvalidArgumentError

__all__ = ["EVENTS", "Emitter", "emit_along"]

EVENTS = frozenset({"connect", "disconnect", "connection_error", "drain"})
_log = logging.getLogger("trio_pool.events")


class Emitter:
    """Holds listeners; a mixin for dispatchers."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Callable[..., object]]] = {}

    def on(self, event: str, callback: Callable[..., object]) -> None:
        """Call ``callback`` on ``event``. Callbacks are plain functions that must not block."""
        if event not in EVENTS:
            raise InvalidArgumentError(f"invalid event {event!r}: expected one of {sorted(EVENTS)}")
        if not callable(callback):
            raise InvalidArgumentError("invalid callback: expected a callable")
        self._listeners.setdefault(event, []).append(callback)

    def off(self, event: str, callback: Callable[..., object]) -> None:
        """Remove one registration of ``callback`` for ``event`` (no error if absent)."""
        listeners = self._listeners.get(event)
        if listeners and callback in listeners:
            listeners.remove(callback)

    def _emit(self, event: str, *args: Any) -> None:
        for callback in tuple(self._listeners.get(event, ())):
            try:
                callback(*args)
            except Exception:
                # A listener's bug must not take a connection task (and the pool) down.
                _log.exception("listener for %r raised", event)


def emit_along(targets: Sequence[Emitter], event: str, origin: str, *extra: object) -> None:
    """Emit ``event`` on every target, innermost first, each with its own suffix of the chain."""
    chain = list(targets)
    for index in range(len(chain) - 1, -1, -1):
        chain[index]._emit(event, origin, chain[index:], *extra)
