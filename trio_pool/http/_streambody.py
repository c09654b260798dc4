"""A request's cancel scope in the general read mode, and the body of a ``StreamResponse``.

Theory of operation
-------------------
In the general read mode (``_dispatcher.py``) a request's exchange runs in a
:class:`RequestScope`: its deadline is moved by the pooled connection as the reads go (a
timeout cancels it, and :func:`ended` then makes the timeout the request's error), an abort
cancels it, and a caller cancelled from outside ends the request (``abort``, the
dispatcher's). ``request.scope`` is the scope while it runs, None otherwise.

A :class:`StreamBody` is the ``BodySource`` of a ``StreamResponse``: it reads the exchange's
body in the reader's task, one step per ``receive()``. A step that has already arrived (a
chunk, the end, a parse error) is taken without a scope, since nothing waits that could time
out or need interrupting; only a step that reads the socket runs in a ``RequestScope``. The
request ends with the body's end or error; :meth:`StreamBody.close` (the reader leaving
early) ends it aborted and closes the connection unless the rest has already arrived.
Changed only by the reader's task, through these methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .._errors import RequestAbortedError, TrioPoolError
from ._fastparse import NEED_DATA
from ._request import State

if TYPE_CHECKING:
    from types import TracebackType

    from ._exchange import Exchange
    from ._headers import Headers
    from ._request import Request

__all__ = ["Abort", "RequestScope", "StreamBody", "ended"]

Abort = Callable[["Request", BaseException], None]
"""The dispatcher's ``_abort``: end a request with an error now, wherever it is."""


class RequestScope:
    """The cancel scope a request runs its exchange in, in the general read mode; a caller
    cancelled from outside (or any unexpected error) ends the request at once. (A plain
    class: it runs once per request.)"""

    __slots__ = ("_abort", "_request", "_scope")

    def __init__(self, abort: Abort, request: Request) -> None:
        self._abort = abort
        self._request = request
        self._scope = request.scope = trio.CancelScope()

    def __enter__(self) -> trio.CancelScope:
        return self._scope.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        request = self._request
        try:
            handled = self._scope.__exit__(exc_type, exc, tb)  # its own deadline or cancel
        except BaseException:
            self._abort(request, RequestAbortedError("the caller was cancelled"))
            raise
        finally:
            request.scope = None
        if exc is not None and not handled:
            self._abort(request, RequestAbortedError("the caller was cancelled"))
        return handled


def ended(request: Request, scope: trio.CancelScope) -> None:
    """After an exchange's scope: a deadline that expired is the request's error."""
    if scope.cancelled_caught and not request.ended:
        assert request.attempt is not None
        request.finish(request.attempt.timeout_error())


class StreamBody:
    """The body of a ``StreamResponse``, read in the reader's task.

    What has already arrived is handed out without a cancel scope (nothing waits, so
    nothing can time out or need interrupting; entering a scope costs more than the rest
    of the step): only a step that reads the socket runs in one. :meth:`ready` peeks one
    step ahead (kept in ``_next``) so the httpx transport can skip its read deadline too."""

    __slots__ = ("_abort", "_exchange", "_next")

    def __init__(self, abort: Abort, exchange: Exchange) -> None:
        self._abort = abort
        self._exchange = exchange
        self._next: object = NEED_DATA  # a step taken by ready(), not handed out yet

    def ready(self) -> bool:
        """Whether the next :meth:`receive` reads no socket (a chunk, the end or an error
        has already arrived). Not a checkpoint."""
        if self._next is NEED_DATA:
            self._next = self._buffered()
        return self._next is not NEED_DATA

    def _buffered(self) -> object:
        """The next step from what has arrived: a chunk, None at the end, the request's
        error (the request ended with it), or ``NEED_DATA``. Not a checkpoint."""
        exchange = self._exchange
        request = exchange.request
        if request.state is State.DONE or exchange.complete:
            return None
        try:
            event = exchange.conn.buffered_event()
            if event is NEED_DATA:
                return NEED_DATA
            return exchange._body_event(event)
        except TrioPoolError as exc:
            request.finish(exc)
            return None

    async def receive(self) -> bytes | None:
        exchange = self._exchange
        request = exchange.request
        if request.state is State.DONE:
            if request.error is not None:
                raise request.hand_out_error()
            return None
        got, self._next = self._next, NEED_DATA
        if got is NEED_DATA:
            got = self._buffered()
        chunk: bytes | None = None
        if got is NEED_DATA:
            with RequestScope(self._abort, request) as scope:
                try:
                    chunk = await exchange.receive_data(scope)
                except TrioPoolError as exc:
                    request.finish(exc)
                finally:
                    if chunk is None:
                        self._end()
            ended(request, scope)
        elif isinstance(got, bytes):
            chunk = got
        else:
            self._end()
        if request.error is not None:
            exchange.close(request.error)
            raise request.hand_out_error()
        return chunk

    def _end(self) -> None:
        """No more chunks: the request ends (with its error, if any)."""
        exchange = self._exchange
        request = exchange.request
        if request.error is None and exchange.complete:
            request.finish(None)
        exchange.close(request.error)

    def trailers(self) -> Headers:
        return self._exchange.trailers

    def close(self) -> None:
        exchange = self._exchange
        if exchange.request.state is not State.DONE:
            # Unread: keep the connection if the rest is already here, else close it.
            exchange.drain_buffered()
            exchange.request.finish(RequestAbortedError("the stream was closed before its end"))
        exchange.close()
