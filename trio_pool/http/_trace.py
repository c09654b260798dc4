"""``RequestTrace``: the phases of one request, and the clock that measures them.

Theory of operation
-------------------
A dispatcher of one origin makes a :class:`PhaseClock` for a request it accepts only when
someone listens to ``"request_end"`` on it or on a dispatcher around it (the emitter's
``_traced`` flag, see ``_events.py``); otherwise the request's ``trace`` stays None and
nothing here runs. The clock is the request's :class:`~._request.Tracer`: the runner marks
the moments it passes (:meth:`PhaseClock.leased`, :meth:`PhaseClock.sent`,
:meth:`PhaseClock.head`), the scheduler marks the connect it waits for
(:meth:`PhaseClock.connecting`), and :meth:`~._request.Request.finish` — the one place
every request ends, whoever ends it — calls :meth:`PhaseClock.ended`, which builds the
:class:`RequestTrace` and emits it. Every time is ``trio.current_time()``, so traces are
exact under a virtual clock.

The phases are consecutive: ``queued + connect + send + wait + receive == total`` for the
phases that were reached (a phase not reached is None). Only the request's own task marks
the clock, except ``connecting`` (the scheduler, in the connection's task) and
``ended`` (whoever finishes the request); ``ended`` runs once (``finish`` is first-wins).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, final

import attrs
import trio

if TYPE_CHECKING:
    from ._request import Request

__all__ = ["PhaseClock", "RequestTrace"]


@final
@attrs.frozen(kw_only=True)
class RequestTrace:
    """What happened to one request, emitted as ``"request_end"(trace)`` when it ends.

    Durations are in seconds of ``trio.current_time()`` (virtual under a test's
    ``autojump_clock``, so exact). They are consecutive: ``queued + connect + send + wait +
    receive == total``, counting the phases that were reached; a phase the request never
    reached is None (a request cancelled while queued has only ``queued`` and ``total``), and
    the phase it ended in counts until its end. A request re-sent after its kept-alive
    connection turned out closed (the idempotent retry of the ``retry_idempotent`` option)
    is one request: its trace describes its last connection, the failed try counting as
    ``queued``.

    Attributes:
        method: the request method (``"GET"``).
        url: the absolute URL requested (``"http://host/path?query"``; for ``connect()``,
            the tunnel's authority).
        status: the response status, or None if no response head arrived.
        error: the exception that ended the request, or None if it completed. A request
            whose caller was cancelled (or that was aborted, or whose stream was closed
            before the end of its body) ends with a ``RequestAbortedError``.
        reused_connection: the request was not the first one its connection carried (False
            too when it never got a connection).
        attempt: 1, or which attempt this is of a request ``interceptors.retry()`` sends
            again (``RequestOptions.attempt``).
        queued: waiting for a connection (in the pool's queue, or for a busy connection),
            from the moment the pool of its origin accepted the request; not the connect
            itself. (A ``BalancedPool``'s wait for an eligible upstream and an ``Agent``'s
            for a new Pool to be entered come before that, and are not in the trace.)
        connect: waiting for the new connection opened for it (TCP + TLS, or the
            ``connector``; under an ``Agent``'s ``max_connections``, the wait for a slot of
            that budget too): the whole connect when the connection was opened for this
            request; None on a reused connection. A connect that failed counts until it
            failed.
        send: writing the request (its turn behind pipelined requests included); a
            ``pipeline()`` request's head only.
        wait: from the request written to its response head received.
        receive: from the response head to the end of the body (the end of the request:
            for ``stream()``, when the body was read or the block was left).
        total: from the pool accepting the request to its end.
    """

    method: str
    url: str
    status: int | None
    error: BaseException | None
    reused_connection: bool
    attempt: int
    queued: float | None
    connect: float | None
    send: float | None
    wait: float | None
    receive: float | None
    total: float


class PhaseClock:
    """The moments one traced request passed (see the module docstring); implements
    :class:`~._request.Tracer`."""

    __slots__ = (
        "_attempt",
        "_connected",
        "_emit",
        "_head",
        "_leased",
        "_opened",
        "_origin",
        "_reused",
        "_start",
        "_status",
        "_written",
    )

    def __init__(self, origin: str, attempt: int, emit: Callable[[RequestTrace], None]) -> None:
        self._origin = origin
        self._attempt = attempt
        self._emit = emit
        self._start = trio.current_time()
        self._leased: float | None = None
        self._opened: float | None = None  # the connect it waited for: started...
        self._connected: float | None = None  # ...and ended (None: still connecting)
        self._written: float | None = None
        self._head: float | None = None
        self._status: int | None = None
        self._reused = False

    def leased(self, started: int, opened: float, connected: float) -> None:
        """The request holds a lease on a connection that had ``started`` requests, opened
        at ``opened`` and connected at ``connected`` (a re-send: its latest lease)."""
        self._leased = trio.current_time()
        self._written = self._head = None
        self._reused = started > 0
        if self._reused:
            self._opened = self._connected = None
        else:
            self._opened, self._connected = opened, connected

    def sent(self, written_at: float, started: int) -> None:
        """The request was written at ``written_at``, the ``started``-th on its
        connection (so a pipelined request behind the first one is a reused one)."""
        self._written = written_at
        if started > 1:
            self._reused = True
            self._opened = self._connected = None

    def head(self, status: int) -> None:
        """The response head arrived."""
        self._head = trio.current_time()
        self._status = status

    def connecting(self, opened: float) -> None:
        """It waits for a connection being opened for it since ``opened`` (the connection
        opened for it, or one opened for the queue that failed while it was the head)."""
        self._opened = opened
        self._connected = None

    def ended(self, request: Request) -> None:
        """The request is DONE: emit its trace. Not a checkpoint."""
        end = trio.current_time()
        start = self._start
        # The connect phase: the part of the request's wait while its connection was being
        # opened (all of it when the connection was opened for this request).
        connect = None
        opened = self._opened
        if opened is not None:
            until = self._connected if self._connected is not None else end
            connect = max(0.0, until - max(opened, start))
        waited = (end if self._leased is None else self._leased) - start
        queued = max(0.0, waited - (connect or 0.0))
        send = wait = receive = None
        written = self._written
        if written is not None and self._leased is not None:
            send = written - self._leased
            head = self._head
            if head is not None:
                wait = head - written
                receive = end - head
            else:
                wait = end - written
        elif self._leased is not None:
            send = end - self._leased
        target = request.target.decode("ascii", "replace")
        self._emit(
            RequestTrace(
                method=request.method.decode("ascii", "replace"),
                url=self._origin + target if target.startswith("/") else target,
                status=self._status,
                error=request.error,
                reused_connection=self._reused,
                attempt=self._attempt,
                queued=queued,
                connect=connect,
                send=send,
                wait=wait,
                receive=receive,
                total=end - start,
            )
        )
