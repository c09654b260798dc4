"""One observable instrument per metric name and meter, fed by every instrumented object.

Theory of operation
-------------------
An SDK ``Meter`` hands back the instrument it already made when asked again for one of the
same name, and keeps only the first one's callbacks; so two pools instrumented with the same
meter provider cannot each create their own observable instrument. Instead a :class:`Hub`
per meter makes each observable instrument once, with one callback that asks every
registered *source* (a function returning observations) in turn. :meth:`Hub.add` and
:meth:`Hub.remove` (called by ``instrument()`` and ``Instrumentation.uninstrument()``, in the
Trio thread) are the only writers; the callback runs in whatever thread the metric reader
collects from, so it iterates over a tuple that the writers replace whole, never mutate.
A source that raises is the SDK's to log; the others still report.

The hub is found from the *provider*, through :func:`meter_of`: the API's global provider
hands out a new proxy meter at each ``get_meter()`` until ``set_meter_provider()`` is called,
and each proxy would then make its own instruments of the same names on the real meter, of
which the SDK keeps only the first. So trio_pool asks each provider for its meter once, and
asks the global one once for the whole process (a proxy meter made before
``set_meter_provider()`` delegates to the real one after it), whether ``instrument()`` runs
before or after the application configures OpenTelemetry.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Literal

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

__all__ = ["Hub", "Kind", "Source", "hub_of", "meter_of"]

Source = Callable[[], Iterable[Observation]]
Kind = Literal["up_down_counter", "counter"]

# A hub lives as long as its meter (which its provider keeps): weakly keyed, so a provider
# that is dropped (as the tests drop theirs) takes its hub with it.
_hubs: weakref.WeakKeyDictionary[Meter, Hub] = weakref.WeakKeyDictionary()
# Likewise a provider's meter lives as long as the provider (a meter does not refer to it).
_meters: weakref.WeakKeyDictionary[MeterProvider, Meter] = weakref.WeakKeyDictionary()


# The global provider's meter, kept for the process's life as the API keeps that provider.
_global_meter: list[Meter] = []


def meter_of(provider: MeterProvider | None, scope: str, version: str) -> Meter:
    """The one meter of ``scope`` that ``provider`` (``None``: the global provider, now or
    once set) gives trio_pool, made on first use."""
    if provider is None:
        if not _global_meter:
            _global_meter.append(metrics.get_meter(scope, version))
        return _global_meter[0]
    meter = _meters.get(provider)
    if meter is None:
        meter = _meters[provider] = provider.get_meter(scope, version)
    return meter


class Hub:
    """The observable instruments of one meter and their sources."""

    def __init__(self, meter: Meter) -> None:
        # Weakly: the hub is the value of its meter's entry in ``_hubs``, so a strong
        # reference would keep that entry (and the meter) alive for ever.
        self._meter = weakref.ref(meter)
        self._sources: dict[str, tuple[Source, ...]] = {}

    def add(self, name: str, kind: Kind, unit: str, description: str, source: Source) -> None:
        """Report ``source``'s observations under ``name`` (creating the instrument the
        first time ``name`` is asked for on this meter)."""
        if name not in self._sources:
            meter = self._meter()
            assert meter is not None  # the caller got this hub from the meter: it is alive
            self._sources[name] = ()
            create = (
                meter.create_observable_up_down_counter
                if kind == "up_down_counter"
                else meter.create_observable_counter
            )
            create(name, callbacks=[self._callback(name)], unit=unit, description=description)
        self._sources[name] = (*self._sources[name], source)

    def remove(self, name: str, source: Source) -> None:
        """Stop reporting ``source`` under ``name`` (no error if it is not there)."""
        sources = self._sources.get(name, ())
        # ==, not is: a bound method is a new object at each attribute access.
        self._sources[name] = tuple(s for s in sources if s != source)

    def _callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [observation for source in self._sources[name] for observation in source()]

        return observe


def hub_of(meter: Meter) -> Hub:
    """The :class:`Hub` of ``meter`` (made on first use)."""
    hub = _hubs.get(meter)
    if hub is None:
        hub = _hubs[meter] = Hub(meter)
    return hub
