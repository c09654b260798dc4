"""The internal record of one request.

Theory of operation
-------------------
A :class:`Request` (built from ``RequestOptions`` by :mod:`._prepare`, which validates
everything a caller controls) moves through ``QUEUED`` (in the scheduler's FIFO) →
``ASSIGNED`` (waiting for the connection being opened for it, or holding a lease it has not
used yet: its ``seat``) → ``RUNNING`` (being written or awaiting/reading its response) →
``DONE``. Every move goes through :meth:`Request.move`, which keeps the owner's (the
scheduler's) counters exact, so ``statistics()`` is O(1) and always consistent. ``DONE`` is
final: whoever gets there first (the connection finishing the response, the caller being
cancelled, ``destroy()``) wins, and the others see ``DONE`` and back off.

This module is the bottom of the HTTP core: the record refers to the layers above only
through the small protocols declared here (:class:`Owner`, :class:`Seat`, :class:`Attempt`,
:class:`Cancellable`, :class:`Tracer`), so nothing here imports them.

:meth:`Request.finish` is the one place a request ends: it counts the request's error in
its owner (``_errors``, for ``statistics()``) and tells its :class:`Tracer`, if it has one
(only when someone listens to ``"request_end"``: the hot path pays one ``None`` test).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterable, Iterable
from typing import TYPE_CHECKING, Protocol

import h11
import trio

if TYPE_CHECKING:
    from .._errors import TrioPoolError

__all__ = [
    "Attempt",
    "Cancellable",
    "Interrupted",
    "Owner",
    "Request",
    "Seat",
    "State",
    "Tracer",
]


class State(enum.IntEnum):
    """Where a request is in its life (see the module docstring).

    An ``IntEnum`` so the owner counts states in a list (no Python-level ``__hash__`` on
    the hot path).
    """

    NEW = 0
    QUEUED = 1
    ASSIGNED = 2
    RUNNING = 3
    DONE = 4


# The members the hot path tests, as module constants: reading an enum member through its
# class costs an attribute lookup on the enum's metaclass, several per request.
_NEW, _DONE = State.NEW, State.DONE


class Cancellable(Protocol):
    """What stops a request's wait: its cancel scope, or (``request()`` on plain TCP)
    the socket's interrupt."""

    def cancel(self) -> None: ...


class Seat(Protocol):
    """Where an ``ASSIGNED`` request sits: the connection being opened for it, or one it
    holds a lease on that it has not used yet (implemented in ``_pooled.py``)."""

    def give_up(self, request: Request) -> None:
        """``request`` ended before using its place: the connection carries on without it
        (for someone else). Not a checkpoint."""


class Attempt(Protocol):
    """The connection of a request's latest exchange, as its runner sees it after a
    deadline cancelled it (implemented by ``_connection.Connection``). The connection, not
    the exchange: the exchange refers to its request, and a request referring back to it
    would leave a reference cycle (garbage for the cyclic collector) per request."""

    def timeout_error(self) -> TrioPoolError:
        """The error of the read whose deadline expired."""


class Tracer(Protocol):
    """The clock of a traced request (implemented in ``_trace.py``): the runner and the
    scheduler mark the moments it passes; :meth:`Request.finish` ends it."""

    def leased(self, started: int, opened: float, connected: float) -> None:
        """It holds a lease on a connection (``started`` requests on it so far, opened at
        ``opened``, connected at ``connected``)."""

    def sent(self, written_at: float, started: int) -> None:
        """It was written at ``written_at``, the ``started``-th request on its connection."""

    def head(self, status: int) -> None:
        """Its response head arrived."""

    def connecting(self, opened: float) -> None:
        """It waits for a connection being opened for it since ``opened``."""

    def ended(self, request: Request) -> None:
        """It is DONE (called once, by :meth:`Request.finish`)."""


class Interrupted(Exception):
    """Internal: an aborted request noticed it at a wait (a request without a cancel
    scope, or woken from waiting for its turn); its error is on it."""


class Owner(Protocol):
    """What a request needs from the scheduler that accepted it: its counters, requests
    per :class:`State` (indexed by it), which :meth:`Request.move` keeps exact (so
    ``_counts[State.DONE]`` is the number of requests that ended), and of those the number
    that ended with an error, which :meth:`Request.finish` keeps."""

    _counts: list[int]
    _errors: int


class Request:
    """One accepted request: its wire form, its state and how its caller is woken."""

    __slots__ = (
        "attempt",
        "body",
        "closes",
        "error",
        "head",
        "headers",
        "idempotent",
        "method",
        "owner",
        "pipelineable",
        "reads_whole",
        "replay",
        "retried",
        "scope",
        "seat",
        "seq",
        "state",
        "target",
        "trace",
        "upgrade",
        "waiter",
        "wire",
        "written_at",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | Iterable[bytes] | AsyncIterable[bytes] | None,
        *,
        idempotent: bool,
        upgrade: bool = False,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.idempotent = idempotent
        # Streaming bodies and non-idempotent requests are never written behind others.
        self.pipelineable = idempotent and not upgrade and (body is None or isinstance(body, bytes))
        self.upgrade = upgrade
        # It carries ``connection: close``: computed once, shared by its copies.
        self.closes = asks_to_close(headers)
        self.state = _NEW
        self.owner: Owner | None = None
        # ASSIGNED: the connection it holds an unused lease on, or waits for while it
        # connects (set and cleared by the connection; the scheduler calls give_up on abort).
        self.seat: Seat | None = None
        # Order of acceptance (set by the scheduler): re-sent requests keep their order.
        self.seq = 0
        # The caller's cancel scope while it runs the exchange (request(): while it waits
        # for the socket); aborting cancels it.
        self.scope: Cancellable | None = None
        self.error: BaseException | None = None
        self.attempt: Attempt | None = None  # its latest (whose read may have timed out)
        # Its caller's task while parked (for a connection or a pipelining turn).
        self.waiter: trio.lowlevel.Task | None = None
        self.retried = False
        self.replay = False  # written through a side serializer (pipelined): replay into h11
        # Trio time the request (a duplex one: its head) was written: headers_timeout's start.
        self.written_at = 0.0
        # The fast read mode (request()): its task reads the whole response once its turn
        # comes, without a cancel scope, waiting for nothing but the connection.
        self.reads_whole = False
        self.head: h11.Request | None = None  # the h11 event, once built (see h11_event)
        self.wire: bytes | None = None  # the whole request as bytes, if known in advance
        self.trace: Tracer | None = None  # set by the dispatcher only if "request_end" is heard

    def h11_event(self) -> h11.Request:
        """The request head as an h11 event, built on first use (a write, then a replay
        into the main state machine, share it). Raises h11's ``LocalProtocolError``."""
        head = self.head
        if head is None:
            head = self.head = h11.Request(
                method=self.method, target=self.target, headers=self.headers
            )
        return head

    def copy(self) -> Request:
        """A new request with the same wire form (sharing its immutable parts). Not a
        checkpoint.

        Built without ``__init__``: what it derives from the wire form (``pipelineable``,
        ``closes``) is copied rather than worked out again (a prepared request's copy is
        made per ``request()``)."""
        request = _new_request(Request)
        request.method = self.method
        request.target = self.target
        request.headers = self.headers
        request.body = self.body
        request.idempotent = self.idempotent
        request.pipelineable = self.pipelineable
        request.upgrade = self.upgrade
        request.closes = self.closes
        request.state = _NEW
        request.owner = None
        request.seat = None
        request.seq = 0
        request.scope = None
        request.error = None
        request.attempt = None
        request.waiter = None
        request.retried = False
        request.replay = False
        request.written_at = 0.0
        request.reads_whole = False
        request.head = self.head
        request.wire = self.wire
        request.trace = None
        return request

    def move(self, new: State) -> None:
        """Change state, keeping the owner's counters exact. Not a checkpoint."""
        old, self.state = self.state, new
        assert self.owner is not None
        counts = self.owner._counts
        counts[old] -= 1
        counts[new] += 1

    @property
    def ended(self) -> bool:
        """``DONE`` (a property, so type checkers do not assume it unchanged by an await)."""
        return self.state is _DONE

    async def park(self) -> None:
        """Sleep until :meth:`wake` (or a cancellation). A checkpoint.

        A parked task rather than a ``trio.Event``: nothing is allocated for it, which
        matters for a queue of thousands of requests."""
        self.waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._unpark)

    def _unpark(self, raise_cancel: object) -> trio.lowlevel.Abort:
        self.waiter = None  # cancelled while parked: a later wake() must not touch it
        return trio.lowlevel.Abort.SUCCEEDED

    def wake(self) -> None:
        """Wake the caller if it is parked (for a connection or its turn)."""
        task = self.waiter
        if task is not None:
            self.waiter = None
            trio.lowlevel.reschedule(task)

    def finish(self, error: BaseException | None) -> None:
        """Mark the request DONE (first caller wins), count its error, end its trace (if
        traced) and wake its caller. Not a checkpoint."""
        if self.state is _DONE:
            return
        self.error = error
        self.move(_DONE)
        if error is not None:
            owner = self.owner
            assert owner is not None
            owner._errors += 1
        if self.trace is not None:
            self.trace.ended(self)
        self.wake()

    def hand_out_error(self) -> BaseException:
        """The error the request ended with, to raise to its caller or give its handler; the
        request keeps a traceback-free twin of it. Not a checkpoint.

        Why: the error leaves with a traceback through frames that hold this request (the
        reader's, the runner's), so a request keeping the error itself would be a reference
        cycle per failed request (issue #16). The twin (same type, ``args``, attributes and
        cause) is what a later look sees: ``Controller.aborted``, a read of a body that
        failed before (which hands out the twin, keeping another), statistics.
        """
        error = self.error
        assert error is not None
        self.error = _twin(error)
        return error


_new_request = object.__new__


def asks_to_close(headers: list[tuple[bytes, bytes]]) -> bool:
    """The header fields carry ``connection: close`` (h11's reading: a comma list, any
    case)."""
    for name, value in headers:
        if (
            len(name) == 10
            and name.lower() == b"connection"
            and b"close" in [token.strip() for token in value.lower().split(b",")]
        ):
            return True
    return False


def _twin(error: BaseException) -> BaseException:
    """A copy of ``error`` without its traceback: built by ``__new__`` (a subclass's
    ``__init__`` may want other arguments than its ``args``), then given the original's
    attributes, and a twin of its cause (whose own traceback may hold the parser's
    frames)."""
    twin = type(error).__new__(type(error), *error.args)
    twin.__dict__.update(error.__dict__)
    cause = error.__cause__
    twin.__cause__ = None if cause is None else _twin(cause)
    twin.__suppress_context__ = True
    return twin
