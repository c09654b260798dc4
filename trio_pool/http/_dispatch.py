"""The low-level handler protocol of ``dispatch()`` and its controller.

Handler methods run in ``dispatch()``'s caller's task (that task does the request's I/O),
in order: ``on_request_start`` (before the request is queued), ``on_response_start``,
``on_response_data``*, ``on_response_end``; or, instead of the rest, one
``on_response_error``. A method may be ``async def``: it is awaited, which is how a handler
applies backpressure (the connection is not read meanwhile).
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, cast

import trio

from .._errors import InvalidArgumentError, RequestAbortedError
from ._models import RequestOptions

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._headers import Headers
    from ._request import Request

__all__ = [
    "Controller",
    "DispatchFunction",
    "Handler",
    "Interceptor",
    "call",
    "check_dispatch_args",
    "start_call",
    "tell_cancelled",
]

_log = logging.getLogger("trio_pool.pool")


class Handler(Protocol):
    """What ``dispatch(options, handler)`` calls; each method may also be ``async def``."""

    def on_request_start(self, controller: Controller) -> object: ...
    def on_response_start(
        self, controller: Controller, status: int, headers: Headers, reason: str
    ) -> object: ...
    def on_response_data(self, controller: Controller, chunk: bytes) -> object: ...
    def on_response_end(self, controller: Controller, trailers: Headers) -> object: ...
    def on_response_error(self, controller: Controller, error: BaseException) -> object: ...


_HANDLER_METHODS = (
    "on_request_start",
    "on_response_start",
    "on_response_data",
    "on_response_end",
    "on_response_error",
)


def check_dispatch_args(options: object, handler: object) -> None:
    """What every ``dispatch()`` checks first, so a bad argument is refused before anything
    is queued or sent (rather than an ``AttributeError`` once the request is out, with
    nobody told): ``options`` is a ``RequestOptions`` and ``handler`` has every handler
    method, callable. Raises ``InvalidArgumentError``. Not a checkpoint."""
    if not isinstance(options, RequestOptions):
        raise InvalidArgumentError(
            f"invalid options: expected a RequestOptions, not {type(options).__name__}"
        )
    missing = [name for name in _HANDLER_METHODS if not callable(getattr(handler, name, None))]
    if missing:
        raise InvalidArgumentError(
            f"invalid handler: a {type(handler).__name__} has no {', '.join(missing)}"
        )


def start_call(method: Callable[..., object], *args: Any) -> Awaitable[object] | None:
    """Call a handler method; return what must still be awaited if it is async, else None
    (a plain method costs no coroutine and no checkpoint)."""
    result = method(*args)
    if result is not None and inspect.isawaitable(result):
        return result
    return None


async def call(method: Callable[..., object], *args: Any) -> None:
    """Call a handler method, awaiting it if it is async. A checkpoint only if it is async."""
    pending = start_call(method, *args)
    if pending is not None:
        await pending


async def tell_cancelled(
    handler: Handler, controller: Controller, error: BaseException | None, *, started: bool = True
) -> None:
    """A dispatch whose caller was cancelled still ends, for its handler, with exactly one
    ``on_response_error`` (preceded by ``on_request_start`` unless it was ``started``: a
    BalancedPool request cancelled before it reached a Pool). A plain method runs whole; an
    async one runs until its first checkpoint, where it meets the same cancellation (the
    caller re-raises it anyway). What the handler raises is logged: the caller's
    cancellation is what propagates."""
    if error is None:
        error = RequestAbortedError("the caller was cancelled")
    calls: list[tuple[Callable[..., object], tuple[Any, ...]]] = [
        (handler.on_response_error, (controller, error))
    ]
    if not started:
        calls.insert(0, (handler.on_request_start, (controller,)))
    for method, args in calls:
        try:
            pending = start_call(method, *args)
            if pending is not None:
                await pending
        except trio.Cancelled:
            pass
        except Exception:
            _log.exception("%s raised for a cancelled request", method.__name__)


class _Unrouted:
    """What the ``Controller`` of a dispatch() cancelled before it reached a Pool reads: a
    request that ended, aborted."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error = RequestAbortedError("the caller was cancelled")


def _unrouted_abort(request: object, error: BaseException) -> None:
    """``Controller.abort()`` of such a request: it has ended already, nothing to do."""


async def tell_unrouted(handler: Handler) -> None:
    """A dispatch() of a ``BalancedPool`` or an ``Agent`` cancelled before it reached a
    Pool: its handler still hears of it, as it would from ``Pool.dispatch``
    (``on_request_start``, then ``on_response_error``)."""
    controller = Controller(cast("Request", _Unrouted()), _unrouted_abort)
    await tell_cancelled(handler, controller, None, started=False)


class Controller:
    """Passed to every handler method: lets the handler abort its request, and says which
    origin runs it (:attr:`origin`)."""

    __slots__ = ("_abort", "_origin", "_request")

    def __init__(
        self,
        request: Request,
        abort: Callable[[Request, BaseException], None],
        origin: str | None = None,
    ) -> None:
        self._request = request
        self._abort = abort
        self._origin = origin

    @property
    def origin(self) -> str | None:
        """The origin (``scheme://host[:port]``) of the ``Client`` or ``Pool`` running the
        request: for a ``BalancedPool`` or an ``Agent``, the upstream it was routed to (with
        failover, the current attempt's). None for a request that never reached one (a
        ``BalancedPool`` request cancelled while it waited for an upstream), or when a
        controller in between does not know it."""
        # getattr: a subclass that does not call __init__ (an interceptor's relay) has no
        # _origin of its own; it may override this property to pass on the one below.
        return getattr(self, "_origin", None)

    @property
    def aborted(self) -> bool:
        """True once the request has ended with an error (aborted or failed)."""
        return self._request.error is not None

    def abort(self, reason: object = None) -> None:
        """Abort the request with ``RequestAbortedError`` (``__cause__`` = ``reason`` when it is
        an exception). A request cut mid-response closes its connection. Not a checkpoint."""
        error = RequestAbortedError(f"request aborted: {reason!r}" if reason else "request aborted")
        if isinstance(reason, BaseException):
            error.__cause__ = reason
        self._abort(self._request, error)


DispatchFunction: TypeAlias = "Callable[[RequestOptions, Handler], Awaitable[None]]"
"""What an interceptor wraps and returns: ``async (options, handler) -> None``, the
signature of :meth:`Dispatcher.dispatch`."""

Interceptor: TypeAlias = "Callable[[DispatchFunction], DispatchFunction]"
"""``(dispatch) -> dispatch``: what ``compose()`` takes (see ``trio_pool.interceptors``)."""
