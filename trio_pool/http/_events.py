"""``on``/``off`` listeners for the dispatcher events, and their emission along ``targets``.

Connection events: ``"connect"(origin, targets)``, ``"disconnect"(origin, targets, error)``,
``"connection_error"(origin, targets, error)``, ``"drain"(origin, targets)``. ``targets`` is
the ownership chain, outermost first (``[pool, client]``); each object in the chain emits to
its own listeners with the part of the chain that starts at itself, as undici does. An
``Agent`` or ``BalancedPool`` hears its pools' connection events by listening to them, with a
*relay* (:func:`relay`): a listener that passes the event on, so a connection's ``Client``
(made only when an event of it is heard, ``ConnectionSpec.identity``) is needed for it only
if the outer dispatcher hears that event itself (:meth:`Emitter._listens`).

Request event: ``"request_end"(trace)``, emitted by the dispatcher of one origin that ran the
request, then by each dispatcher it is nested in (:func:`nest`: a ``Pool`` in an ``Agent`` or
a ``BalancedPool``), innermost first (:func:`emit_request_end`). It is not passed on by
listening, because a request is traced (timed) only when someone hears it: every emitter
keeps ``_traced`` — it or one it is nested in has a ``"request_end"`` listener — up to date
on each ``on``/``off``/``nest``/``unnest`` (pushing it down to the emitters nested in it),
so the hot path reads one attribute. Only these functions change ``_traced``, ``_outer``
and ``_inner``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from .._errors import InvalidArgumentError

__all__ = [
    "EVENTS",
    "REQUEST_END",
    "Emitter",
    "emit_along",
    "emit_request_end",
    "nest",
    "relay",
    "unnest",
]

EVENTS = frozenset({"connect", "disconnect", "connection_error", "drain"})
"""The connection events (an outer dispatcher listens to each of its pools')."""
REQUEST_END = "request_end"
_ALL_EVENTS = sorted((*EVENTS, REQUEST_END))
_log = logging.getLogger("trio_pool.events")


class Emitter:
    """Holds listeners; a mixin for dispatchers."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Callable[..., object]]] = {}
        self._traced = False  # "request_end" is heard here or by an emitter this is nested in
        self._outer: Emitter | None = None  # the emitter this one is nested in
        self._inner: set[Emitter] = set()  # the emitters nested in this one

    def on(self, event: str, callback: Callable[..., object]) -> None:
        """Call ``callback`` on ``event``. Callbacks are plain functions that must not block."""
        if event not in EVENTS and event != REQUEST_END:
            raise InvalidArgumentError(f"invalid event {event!r}: expected one of {_ALL_EVENTS}")
        if not callable(callback):
            raise InvalidArgumentError("invalid callback: expected a callable")
        self._listeners.setdefault(event, []).append(callback)
        if event == REQUEST_END:
            _retrace(self)

    def off(self, event: str, callback: Callable[..., object]) -> None:
        """Remove one registration of ``callback`` for ``event`` (no error if absent)."""
        listeners = self._listeners.get(event)
        if listeners and callback in listeners:
            listeners.remove(callback)
            if event == REQUEST_END:
                _retrace(self)

    def _listens(self, event: str) -> bool:
        """Whether ``event`` is heard here: a listener is registered for it, other than a
        relay whose outer emitter does not hear it. Not a checkpoint."""
        return any(
            type(listener) is not _Relay or listener.outer._listens(event)
            for listener in self._listeners.get(event, ())
        )

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


class _Relay:
    """A listener of ``outer``'s on an inner emitter (see :func:`relay`)."""

    __slots__ = ("callback", "outer")

    def __init__(self, callback: Callable[..., object], outer: Emitter) -> None:
        self.callback = callback
        self.outer = outer

    def __call__(self, *args: Any) -> object:
        return self.callback(*args)


def relay(inner: Emitter, outer: Emitter, event: str, callback: Callable[..., object]) -> None:
    """Call ``callback`` on ``inner``'s connection event ``event``, as a listener that passes
    it on to ``outer`` (an ``Agent`` or ``BalancedPool`` on its pools). It is called as any
    listener is, but counts as hearing ``event`` only while ``outer`` does: until then the
    ``targets`` it gets need not name the connection's ``Client`` (nobody would see it)."""
    assert event in EVENTS
    inner._listeners.setdefault(event, []).append(_Relay(callback, outer))


def nest(inner: Emitter, outer: Emitter) -> None:
    """``inner``'s ``"request_end"`` events are ``outer``'s too (a pool of an agent)."""
    inner._outer = outer
    outer._inner.add(inner)
    _retrace(inner)


def unnest(inner: Emitter) -> None:
    """Undo :func:`nest` (the pool left its agent)."""
    outer = inner._outer
    if outer is not None:
        outer._inner.discard(inner)
        inner._outer = None
        _retrace(inner)


def _retrace(emitter: Emitter) -> None:
    """Recompute ``_traced`` of ``emitter`` and of the emitters nested in it."""
    outer = emitter._outer
    emitter._traced = bool(emitter._listeners.get(REQUEST_END)) or (
        outer is not None and outer._traced
    )
    for inner in emitter._inner:
        _retrace(inner)


def emit_request_end(emitter: Emitter, trace: object) -> None:
    """Emit ``"request_end"(trace)`` on ``emitter``, then on each emitter it is nested in."""
    current: Emitter | None = emitter
    while current is not None:
        current._emit(REQUEST_END, trace)
        current = current._outer
