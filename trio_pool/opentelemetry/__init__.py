"""OpenTelemetry for trio_pool: ``instrument(obj)`` (extra ``trio_pool[opentelemetry]``).

::

    from trio_pool.opentelemetry import instrument

    async with trio_pool.Agent() as agent:
        telemetry = instrument(agent)            # metrics of every request and connection
        http = telemetry.dispatcher              # send through it for spans + traceparent
        await http.request("GET", "https://example.org/")
        telemetry.uninstrument()

It needs only ``opentelemetry-api`` at run time: an application that configured the
OpenTelemetry SDK (or passes ``meter_provider``/``tracer_provider``) gets the data, one that
did not pays next to nothing. The names are those of the semantic conventions (the stable
HTTP client ones, the database-client connection-pool ones): see "Monitoring in production".

Theory of operation
-------------------
:func:`instrument` builds an :class:`Instrumentation` for a dispatcher (any: ``Client``,
``Pool``, ``BalancedPool``, ``Agent``, a composed one, ``MockPool``) or a ``ResourcePool``,
which registers listeners on it and observation sources with the meter's
:class:`~._observers.Hub`; :meth:`Instrumentation.uninstrument` removes all of them and turns
the tracing interceptor into a pass-through. The object is registered as instrumented (a
composed dispatcher by its base, whose events it shares) from ``instrument()`` to
``uninstrument()``, so instrumenting it twice is refused rather than counting everything
twice. Only those two functions change ``_instrumented``.
"""

from __future__ import annotations

try:
    from opentelemetry import metrics, trace
except ImportError as exc:  # pragma: no cover - the extra is installed wherever tests run
    raise ImportError(
        "trio_pool.opentelemetry needs the opentelemetry-api package:"
        " pip install 'trio_pool[opentelemetry]'"
    ) from exc

from typing import Any

from .._errors import InvalidArgumentError
from .._version import __version__
from ..http._interface import Dispatcher
from ..resources._pool import ResourcePool
from ._db import PoolMetrics
from ._http import HttpMetrics
from ._observers import hub_of, meter_of
from ._spans import Tracing

__all__ = ["Instrumentation", "instrument"]

_SCOPE = "trio_pool"
_instrumented: dict[int, Instrumentation] = {}  # id(root object) -> its live instrumentation


def _root(obj: object) -> object:
    """What ``obj``'s events come from: a composed dispatcher's base, else ``obj``."""
    return obj._root() if isinstance(obj, Dispatcher) else obj  # the seam of _interface.py


class Instrumentation:
    """What :func:`instrument` returns: the telemetry of one object, until
    :meth:`uninstrument`."""

    def __init__(
        self, obj: Dispatcher | ResourcePool[Any], meter: metrics.Meter, tracer: trace.Tracer
    ) -> None:
        self._obj = obj
        self._active = True
        self._tracing: Tracing | None = None
        self._dispatcher: Dispatcher | None = None
        self._parts: HttpMetrics | PoolMetrics
        hub = hub_of(meter)
        if isinstance(obj, ResourcePool):
            self._parts = PoolMetrics(obj, meter, hub)
        else:
            self._parts = HttpMetrics(obj, meter, hub)
            self._tracing = Tracing(tracer)
            self._dispatcher = obj.compose(self._tracing)

    def __repr__(self) -> str:
        state = "active" if self._active else "uninstrumented"
        return f"<Instrumentation of {self._obj!r} {state}>"

    @property
    def active(self) -> bool:
        """True until :meth:`uninstrument`."""
        return self._active

    @property
    def dispatcher(self) -> Dispatcher:
        """The instrumented dispatcher with the tracing interceptor outermost: each request
        sent through it (``request()``, ``stream()``, ``pipeline()``, ``dispatch()``) is a
        CLIENT span, current while it runs, whose ``traceparent`` (and the other headers of
        the configured propagator) goes out with the request. Requests sent to the
        dispatcher itself are measured but carry no span. After :meth:`uninstrument` it
        passes requests through untouched. Not a checkpoint.

        Raises:
            InvalidArgumentError: this instruments a ``ResourcePool`` (no requests to trace).
        """
        if self._dispatcher is None:
            raise InvalidArgumentError("a ResourcePool's Instrumentation has no dispatcher")
        return self._dispatcher

    @property
    def interceptor(self) -> Tracing:
        """The tracing interceptor of :attr:`dispatcher`, for a chain of your own:
        ``compose(agent, interceptors.redirect(), telemetry.interceptor,
        interceptors.retry())`` makes one span per request redirect() sends (outermost: one
        per call; innermost: one per attempt retry() makes). Not a checkpoint.

        Raises:
            InvalidArgumentError: this instruments a ``ResourcePool``.
        """
        if self._tracing is None:
            raise InvalidArgumentError("a ResourcePool's Instrumentation has no interceptor")
        return self._tracing

    def _start(self) -> None:
        self._parts.start()

    def uninstrument(self) -> None:
        """Stop all of it: the listeners are removed, the observed metrics no longer report
        this object, and the interceptor passes requests through. The object may be
        instrumented again afterwards. A second call does nothing. Not a checkpoint."""
        if not self._active:
            return
        self._active = False
        self._parts.stop()
        if self._tracing is not None:
            self._tracing.enabled = False
        _instrumented.pop(id(_root(self._obj)), None)


def instrument(
    obj: Dispatcher | ResourcePool[Any],
    *,
    meter_provider: metrics.MeterProvider | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> Instrumentation:
    """Report ``obj``'s metrics (and, through :attr:`Instrumentation.dispatcher`, its spans)
    to OpenTelemetry until :meth:`Instrumentation.uninstrument`. Not a checkpoint.

    Args:
        obj: a dispatcher (``Client``, ``Pool``, ``BalancedPool``, ``Agent``, a composed one,
            ``MockPool``) or a ``ResourcePool``; entered or not.
        meter_provider: where the metrics go; default: the global one
            (``opentelemetry.metrics.set_meter_provider``).
        tracer_provider: where the spans go; default: the global one.

    Raises:
        InvalidArgumentError: ``obj`` is neither, or it (or, for a composed dispatcher, its
            base) is instrumented already: ``uninstrument()`` that first.
    """
    if not isinstance(obj, (Dispatcher, ResourcePool)):
        raise InvalidArgumentError(
            f"invalid obj {obj!r}: expected a trio_pool dispatcher or ResourcePool"
        )
    root = _root(obj)
    if id(root) in _instrumented:
        raise InvalidArgumentError(
            f"invalid obj: {root!r} is instrumented already (uninstrument() it first)"
        )
    # One meter per provider, and one for the global provider however late it is set (see
    # _observers): else two pools' observable instruments collapse into the first one's.
    meter = meter_of(meter_provider, _SCOPE, __version__)
    tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
    instrumentation = Instrumentation(obj, meter, tracer)
    instrumentation._start()
    _instrumented[id(root)] = instrumentation
    return instrumentation
