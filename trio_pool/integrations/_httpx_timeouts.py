"""httpx's timeouts over one request: a cancel scope whose deadline follows the request's phase.

Theory of operation
-------------------
Timeouts (httpx's ``timeout`` extension: ``connect``, ``read``, ``write``, ``pool``, each
seconds or None) are deadlines of one cancel scope per request up to its head
(:class:`HeadScope`), moved as the request goes from one phase (:class:`Phase`) to the next.
Two sources tell the phases:

* The dispatcher, through the hook of ``trio_pool.http._watch``: the head scope is set as
  the watcher of the ``stream()`` call, and the runner says whether the request waits in the
  queue (``QUEUED``: ``pool`` bounds the wait, ``PoolTimeout``), waits for a connection being
  opened for it (``CONNECTING``: ``connect``, ``ConnectTimeout``), or holds its connection
  (then the writes and the wait for the head). So ``pool`` bounds only the wait for a
  connection and ``connect`` only the connect, as httpcore's do. A request re-sent after a
  stale keep-alive connection goes through them again. (Over the ``retry`` interceptor, a
  backoff is waited out in the phase the last attempt reached: ``read`` bounds it too.)
* A streamed request body, the *upload probe* (:class:`Upload`): while a chunk is being
  written (``WRITING``) the deadline is ``write`` (``WriteTimeout``; the request head, written
  first, counts as one); while httpx's body iterator makes the next chunk there is none (the
  producer is not the network, ``PRODUCING``); once the body has been written (``READING``)
  it is ``read`` (``ReadTimeout``).

A request without a streamed body (none, or one httpx already holds as bytes, which the
dispatcher may then re-send after a stale keep-alive connection) shows nothing between its
lease and its head: ``read`` bounds that, extended by ``write`` when there is a body.
``None`` is no bound. Until the dispatcher tells anything (``UNTOLD``) the deadline is that
of a request leased at once, so a lease at once changes no deadline; a ``Dispatcher`` of
another kind, which never tells, keeps it (its waits count as ``read``). The reads of the
response body are bounded by the exchange (``_httpx_common``), each in a scope with the
``read`` deadline.

A head scope's phase and deadline are changed only by its own methods, called synchronously
(never a checkpoint) by the dispatcher's runner through the watch hook, in the request's task,
and by the request's upload probe as the dispatcher pulls the body. When its deadline expires,
:meth:`HeadScope.enter` raises the flavour's timeout error of the phase it expired in.
"""

from __future__ import annotations

import enum
import math
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeVar

import trio

import trio_pool
from trio_pool.http._watch import unwatch, watch

from ._httpx_flavour import Flavour

__all__ = ["HeadScope", "Phase", "Timeouts", "Upload"]

T = TypeVar("T")


class Phase(enum.Enum):
    """Where an exchange's request is on its way to the response head (see the module
    docstring); each phase has its own deadline and its own timeout error."""

    UNTOLD = "untold"  # nothing told yet: as if leased at once
    QUEUED = "queued"  # waiting in the queue for a connection: ``pool``
    CONNECTING = "connecting"  # a connection is being opened for it: ``connect``
    PRODUCING = "producing"  # httpx's body iterator is making the next chunk: no limit
    WRITING = "writing"  # the dispatcher is writing the head or a chunk: ``write``
    READING = "reading"  # the request has been written (or is, unseen): ``read``


class Timeouts:
    """httpx's ``timeout`` extension, as seconds or None (no limit). Read once per request: a
    plain slotted class, cheaper to make than an attrs one."""

    __slots__ = ("connect", "pool", "read", "write")

    def __init__(
        self,
        connect: float | None = None,
        read: float | None = None,
        write: float | None = None,
        pool: float | None = None,
    ) -> None:
        for key, value in (("connect", connect), ("read", read), ("write", write), ("pool", pool)):
            if value is not None and not isinstance(value, int | float):
                raise trio_pool.InvalidArgumentError(f"invalid timeout {key!r}: {value!r}")
        self.connect = connect
        self.read = read
        self.write = write
        self.pool = pool

    @classmethod
    def of(cls, extensions: Mapping[str, object]) -> Timeouts:
        given = extensions.get("timeout")
        if not isinstance(given, Mapping):
            return cls()
        return cls(given.get("connect"), given.get("read"), given.get("write"), given.get("pool"))


def _bound(own: float | None, *hidden: float | None) -> float:
    """A phase's budget: its ``own`` timeout (None: unbounded), extended by the timeouts of
    the phases hidden in it (None adds nothing)."""
    if own is None:
        return math.inf
    return own + sum(part for part in hidden if part is not None)


class HeadScope:
    """The cancel scope a request runs in up to its response head, whose deadline follows
    the request's phase (see the module docstring). It is the dispatcher's
    :class:`~trio_pool.http._watch.Watcher` while the head is awaited, and the upload probe's
    :class:`_Progress`. Changed only by its own methods."""

    __slots__ = ("_body", "_phase", "_streamed", "scope", "timeouts")

    def __init__(self, timeouts: Timeouts, *, body: bool, streamed: bool) -> None:
        self.timeouts = timeouts
        self._body = body  # a request body is sent
        self._streamed = streamed  # ... from httpx's stream, through an upload probe
        self._phase = Phase.UNTOLD
        # Until the dispatcher tells where the request is (at once: a lease, or a wait), the
        # deadline is that of a request leased at once; a dispatcher of another kind that
        # never tells keeps it.
        budget = _bound(timeouts.read, timeouts.write if body else None)
        self.scope = trio.CancelScope(deadline=trio.current_time() + budget)

    def _enter(self, phase: Phase, budget: float) -> None:
        self._phase = phase
        self.scope.deadline = trio.current_time() + budget

    def waiting(self, *, connecting: bool) -> None:
        """The dispatcher: the request waits for a connection (``pool``) or for the one
        being opened for it (``connect``)."""
        timeouts = self.timeouts
        if connecting:
            self._enter(Phase.CONNECTING, _bound(timeouts.connect))
        else:
            self._enter(Phase.QUEUED, _bound(timeouts.pool))

    def leased(self) -> None:
        """The dispatcher: the request has its connection and is written next. A streamed
        body shows its writes (the probe); otherwise the writes hide in the wait for the
        head, and ``write`` (if there is a body) extends ``read``."""
        timeouts = self.timeouts
        if self._phase is Phase.UNTOLD and not self._streamed:
            # Leased at once: the deadline set a moment ago is this one's (no scope change).
            self._phase = Phase.READING
        elif self._streamed:
            self._enter(Phase.WRITING, _bound(timeouts.write))
        else:
            self._enter(
                Phase.READING, _bound(timeouts.read, timeouts.write if self._body else None)
            )

    def producing(self) -> None:
        """The probe: httpx's iterator makes the next chunk (not the network: no limit)."""
        self._enter(Phase.PRODUCING, math.inf)

    def writing(self) -> None:
        """The probe: a chunk goes to the dispatcher to be written."""
        self._enter(Phase.WRITING, _bound(self.timeouts.write))

    def written(self) -> None:
        """The probe: the body has been written; the head is awaited."""
        self._enter(Phase.READING, _bound(self.timeouts.read))

    @property
    def writing_body(self) -> bool:
        """Whether a write was under way (a dropped connection is then a write error)."""
        return self._phase is Phase.WRITING

    def expired(self, flavour: Flavour[object]) -> Exception:
        """The flavour's timeout error for the phase whose deadline expired."""
        phase = self._phase
        if phase is Phase.QUEUED:
            return flavour.pool_timeout("timed out waiting for a connection")
        if phase is Phase.CONNECTING:
            return flavour.connect_timeout("timed out connecting")
        if phase is Phase.WRITING:
            return flavour.write_timeout("timed out writing the request")
        return flavour.read_timeout("timed out waiting for the response head")

    async def enter(self, context: AbstractAsyncContextManager[T], flavour: Flavour[object]) -> T:
        """Enter ``context`` (the dispatcher's ``stream()`` or ``upgrade()``) in this scope,
        telling the dispatcher about it; its result. A checkpoint. Raises the flavour's
        errors: a timeout for the phase that expired, or the translated trio_pool error."""
        with self.scope:
            token = watch(self)
            try:
                return await context.__aenter__()
            except trio_pool.TrioPoolError as exc:
                if self.scope.cancel_called:  # the request failed of our own deadline
                    raise self.expired(flavour) from exc
                raise flavour.translate(exc, writing=self.writing_body) from exc
            finally:
                unwatch(token)
        raise self.expired(flavour)


class _Progress(Protocol):
    """What an :class:`Upload` tells (a :class:`HeadScope`)."""

    def producing(self) -> None: ...
    def writing(self) -> None: ...
    def written(self) -> None: ...


class Upload:
    """The request body handed to the dispatcher: httpx's stream, telling its ``progress``
    when a chunk is being produced and when written (the probe of the module docstring)."""

    __slots__ = ("_iterator", "_source", "progress")

    def __init__(self, source: object) -> None:
        self._source = source
        self._iterator: AsyncIterator[bytes] | None = None
        self.progress: _Progress | None = None

    def __aiter__(self) -> Upload:
        return self

    async def __anext__(self) -> bytes:
        progress = self.progress
        if self._iterator is None:
            if not isinstance(self._source, AsyncIterable):
                raise trio_pool.InvalidArgumentError("invalid request stream: not async")
            self._iterator = aiter(self._source)
        if progress is not None:
            progress.producing()
        try:
            chunk = await self._iterator.__anext__()
        except StopAsyncIteration:
            if progress is not None:
                progress.written()
            raise
        if progress is not None:
            progress.writing()
        return chunk
