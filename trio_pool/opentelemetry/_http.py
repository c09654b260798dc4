"""The HTTP client metrics of one dispatcher, from its events and its statistics.

Theory of operation
-------------------
:class:`HttpMetrics` listens on the dispatcher it was given (``on()``; a composed one passes
that to its base, an ``Agent`` or ``BalancedPool`` hears its pools):

* ``"request_end"(trace)`` records ``http.client.request.duration`` (``trace.total``), with
  the method, the origin's ``server.*``/``url.scheme``, the status and ``error.type``.
  Every attempt a retry sends is a request of its own, as the conventions count them.
* ``"connect"`` notes when each connection (the innermost of the event's ``targets``: one
  ``Client`` per connection) opened; its ``"disconnect"`` records
  ``http.client.connection.duration``.
* ``http.client.open_connections`` is observed per origin from the statistics the
  dispatcher's ``_origin_statistics()`` gives (the documented-internal seam of
  ``trio_pool/http/_interface.py``: an ``Agent``'s pools, a ``BalancedPool``'s upstream
  pools): ``idle`` = ``free``, ``active`` = ``connected - free``.

Only :meth:`HttpMetrics.start` and :meth:`HttpMetrics.stop` register and remove the
listeners and the observation source; the listeners themselves only record (they run in
the dispatcher's tasks and never block). The open-connection times live in ``_opened``,
written by the two connection listeners only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import trio
from opentelemetry.metrics import Meter, Observation

from ..http._interface import Dispatcher
from ._observers import Hub
from ._semconv import (
    ERROR_TYPE,
    HTTP_CONNECTION_DURATION,
    HTTP_CONNECTION_STATE,
    HTTP_OPEN_CONNECTIONS,
    HTTP_REQUEST_DURATION,
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    error_type,
    known_method,
    origin_attributes,
    seconds_histogram,
)

if TYPE_CHECKING:
    from ..http._models import PoolStats
    from ..http._trace import RequestTrace

__all__ = ["HttpMetrics", "origin_statistics"]


def origin_statistics(dispatcher: Dispatcher) -> Iterable[tuple[str, PoolStats]]:
    """``(origin, statistics)`` for each origin ``dispatcher`` holds connections to. Not a
    checkpoint."""
    return dispatcher._origin_statistics()  # the documented-internal seam (_interface.py)


class HttpMetrics:
    """The HTTP metrics of one dispatcher (see the module docstring)."""

    def __init__(self, dispatcher: Dispatcher, meter: Meter, hub: Hub) -> None:
        self._dispatcher = dispatcher
        self._hub = hub
        self._duration = seconds_histogram(
            meter, HTTP_REQUEST_DURATION, "Duration of HTTP client requests."
        )
        self._connection_duration = seconds_histogram(
            meter,
            HTTP_CONNECTION_DURATION,
            "The duration of the successfully established outbound HTTP connections.",
        )
        self._opened: dict[object, float] = {}
        self._listeners: tuple[tuple[str, Callable[..., object]], ...] = (
            ("request_end", self._request_end),
            ("connect", self._connected),
            ("disconnect", self._disconnected),
        )

    def start(self) -> None:
        """Listen to the dispatcher and report its open connections."""
        for event, callback in self._listeners:
            self._dispatcher.on(event, callback)
        self._hub.add(
            HTTP_OPEN_CONNECTIONS,
            "up_down_counter",
            "{connection}",
            "Number of outbound HTTP connections that are currently active or idle on the client.",
            self._open_connections,
        )

    def stop(self) -> None:
        """Undo :meth:`start`."""
        for event, callback in self._listeners:
            self._dispatcher.off(event, callback)
        self._hub.remove(HTTP_OPEN_CONNECTIONS, self._open_connections)
        self._opened.clear()

    def _request_end(self, trace: RequestTrace) -> None:
        attributes: dict[str, Any] = origin_attributes(trace.url)
        attributes[HTTP_REQUEST_METHOD] = known_method(trace.method)
        if trace.status is not None:
            attributes[HTTP_RESPONSE_STATUS_CODE] = trace.status
        error = error_type(trace.status, trace.error)
        if error is not None:
            attributes[ERROR_TYPE] = error
        self._duration.record(trace.total, attributes)

    def _connected(self, origin: str, targets: list[object]) -> None:
        self._opened[targets[-1]] = trio.current_time()

    def _disconnected(self, origin: str, targets: list[object], error: object) -> None:
        opened = self._opened.pop(targets[-1], None)
        if opened is not None:  # opened before instrument(): its start is unknown
            seconds = trio.current_time() - opened
            self._connection_duration.record(seconds, origin_attributes(origin))

    def _open_connections(self) -> Iterable[Observation]:
        observations = []
        for origin, stats in origin_statistics(self._dispatcher):
            base = origin_attributes(origin)
            idle, active = stats.free, stats.connected - stats.free
            observations.append(Observation(idle, {**base, HTTP_CONNECTION_STATE: "idle"}))
            observations.append(Observation(active, {**base, HTTP_CONNECTION_STATE: "active"}))
        return observations
