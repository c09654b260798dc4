"""The CLIENT span of each request, and the ``traceparent`` header it puts on the request.

Theory of operation
-------------------
A span must be open before the request is written (its id goes out in ``traceparent``) and
close when the request ends, so it is made by an interceptor (:class:`Tracing`) around
``dispatch()``: the span is started as the current span, the configured propagator
(W3C trace context by default) injects its headers into a copy of the request's headers
(replacing any the caller set for the same names), the request is dispatched with a
:class:`_SpanHandler` in front of the caller's handler, and the span ends when ``dispatch()``
returns or raises: after the response body for ``request()``, after the stream is read or
left for ``stream()``. The handler stage only notes the status and the error, passing every
call (and what it returns: an async handler keeps its backpressure) through unchanged.

While :attr:`Tracing.enabled` is False (after ``uninstrument()``), the interceptor passes
requests through untouched. Only ``Instrumentation`` changes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from opentelemetry.propagate import inject
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from ..http._chain import request_url
from ..http._dispatch import start_call
from ._semconv import (
    ERROR_TYPE,
    HTTP_RESPONSE_STATUS_CODE,
    URL_FULL,
    error_type,
    method_attributes,
    origin_attributes,
)

if TYPE_CHECKING:
    from ..http._dispatch import Controller, DispatchFunction, Handler
    from ..http._headers import Headers
    from ..http._models import RequestOptions

__all__ = ["Tracing"]


class Tracing:
    """The tracing interceptor: ``(dispatch) -> dispatch`` (see the module docstring)."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self.enabled = True

    def __call__(self, dispatch: DispatchFunction) -> DispatchFunction:
        async def traced(options: RequestOptions, handler: Handler) -> None:
            if not self.enabled:
                await dispatch(options, handler)
                return
            await self._traced(dispatch, options, handler)

        return traced

    async def _traced(
        self, dispatch: DispatchFunction, options: RequestOptions, handler: Handler
    ) -> None:
        url = request_url(options)
        method = options.method if isinstance(options.method, str) else "_OTHER"
        attributes: dict[str, Any] = {**method_attributes(method), **origin_attributes(url)}
        if url.startswith(("http://", "https://")):
            attributes[URL_FULL] = url
        name = method if method == attributes.get("http.request.method") else "HTTP"
        with self._tracer.start_as_current_span(
            name,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,  # recorded below, with the error the handler was given
            set_status_on_exception=False,
        ) as span:
            stage = _SpanHandler(handler)
            try:
                await dispatch(_with_context(options), stage)
            except BaseException as exc:
                stage.error = stage.error or exc
                raise
            finally:
                _finish(span, stage)


def _with_context(options: RequestOptions) -> RequestOptions:
    """``options`` with the current context's propagation headers (``traceparent``...)."""
    carrier: dict[str, str] = {}
    inject(carrier)
    if not carrier:
        return options
    names = {name.lower() for name in carrier}
    headers = options.headers
    pairs: list[tuple[Any, Any]] = []
    if headers is not None:
        for name, value in headers.items() if isinstance(headers, Mapping) else headers:
            text = name.decode("latin-1") if isinstance(name, bytes) else str(name)
            if text.lower() not in names:
                pairs.append((name, value))
    pairs.extend(carrier.items())
    return attrs.evolve(options, headers=pairs)


def _finish(span: Span, stage: _SpanHandler) -> None:
    """Put the outcome on ``span``: status code, ``error.type``, the span status."""
    if stage.status is not None:
        span.set_attribute(HTTP_RESPONSE_STATUS_CODE, stage.status)
    error = error_type(stage.status, stage.error)
    if error is None:
        return
    span.set_attribute(ERROR_TYPE, error)
    if stage.error is not None:
        span.record_exception(stage.error)
        span.set_status(Status(StatusCode.ERROR, f"{error}: {stage.error}"))
    else:
        span.set_status(Status(StatusCode.ERROR))


class _SpanHandler:
    """A handler stage that notes the status and the error (see the module docstring)."""

    __slots__ = ("_outer", "error", "status")

    def __init__(self, outer: Handler) -> None:
        self._outer = outer
        self.status: int | None = None
        self.error: BaseException | None = None

    def on_request_start(self, controller: Controller) -> Awaitable[object] | None:
        return start_call(self._outer.on_request_start, controller)

    def on_response_start(
        self, controller: Controller, status: int, headers: Headers, reason: str
    ) -> Awaitable[object] | None:
        self.status = status
        return start_call(self._outer.on_response_start, controller, status, headers, reason)

    def on_response_data(self, controller: Controller, chunk: bytes) -> Awaitable[object] | None:
        return start_call(self._outer.on_response_data, controller, chunk)

    def on_response_end(
        self, controller: Controller, trailers: Headers
    ) -> Awaitable[object] | None:
        return start_call(self._outer.on_response_end, controller, trailers)

    def on_response_error(
        self, controller: Controller, error: BaseException
    ) -> Awaitable[object] | None:
        self.error = error
        return start_call(self._outer.on_response_error, controller, error)
