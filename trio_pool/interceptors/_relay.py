"""What interceptors that send one request several times share (``redirect()``, ``retry()``).

Theory of operation
-------------------
Such an interceptor gives the handler it wraps (the *outer* handler) one request, however
many it sends below: the outer handler hears ``on_request_start`` once, then either the
response it is meant to see or one ``on_response_error``. It talks to the outer handler
through a :class:`Relay`, a controller whose ``abort()`` reaches whichever request is
current (set by the interceptor on each ``on_request_start`` it receives) and which may
carry the request's current URL (``url``, read by the composed dispatcher for
``Response.url``).

A response the interceptor does not pass on (a redirect it follows, a status it retries)
is *discarded*: :class:`Discard` counts its body and, past :data:`DRAIN_LIMIT` bytes, aborts
it, which closes its connection rather than reading on; a short one is read to its end, so
its connection is reused. Either way nothing holds a connection once the request ended.

Between two requests the interceptor may wait (:func:`between`: a backoff, a body's rewind);
the outer handler, already started, is told of a failure or a cancellation there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ..http._dispatch import Controller, call, tell_cancelled

if TYPE_CHECKING:
    from ..http._dispatch import Handler
    from ._replay import Replay

__all__ = ["DRAIN_LIMIT", "Discard", "Relay", "between"]

DRAIN_LIMIT = 65536
"""Bytes of a discarded body read to keep its connection; past them it is closed instead."""


class Relay(Controller):
    """The controller an interceptor gives its outer handler (see the module docstring)."""

    __slots__ = ("_aborted", "_url", "inner")

    def __init__(self, url: str | None = None) -> None:  # no request of its own
        self.inner: Controller | None = None
        self._url = url
        self._aborted = False

    @property
    def url(self) -> str | None:
        """The URL of the current request if this interceptor moved it, else what the
        controller below says (None if nobody moved it)."""
        if self._url is not None:
            return self._url
        url = getattr(self.inner, "url", None)
        return url if isinstance(url, str) else None

    @url.setter
    def url(self, value: str) -> None:
        self._url = value

    @property
    def origin(self) -> str | None:
        """The origin running the current request: what the controller below says."""
        return None if self.inner is None else self.inner.origin

    @property
    def aborted(self) -> bool:
        """True once the outer handler aborted, or the current request ended with an error."""
        return self._aborted or (self.inner is not None and self.inner.aborted)

    def abort(self, reason: object = None) -> None:
        """Abort the current request (and send no other). Not a checkpoint."""
        self._aborted = True
        if self.inner is not None:
            self.inner.abort(reason)


class Discard:
    """Counts a discarded response's body; aborts it past :data:`DRAIN_LIMIT` bytes."""

    __slots__ = ("size",)

    def __init__(self) -> None:
        self.size = 0

    def data(self, controller: Controller, chunk: bytes) -> None:
        """Count ``chunk``; abort the response once it is too long to drain. Not a
        checkpoint."""
        self.size += len(chunk)
        if self.size > DRAIN_LIMIT:
            controller.abort("a discarded response body too long to drain")


async def between(outer: Handler, relay: Relay, wait: float, replay: Replay | None) -> bool:
    """Before sending again: sleep ``wait`` seconds, then rewind the body (``replay``, if
    given). A checkpoint. Returns False if the rewind failed (``outer`` heard the error); a
    cancellation is told to ``outer`` (``on_response_error``) and propagates."""
    try:
        if wait > 0:
            await trio.sleep(wait)
        if replay is not None:
            await replay.rewind()
    except trio.Cancelled:
        await tell_cancelled(outer, relay, None)
        raise
    except Exception as exc:  # a file that cannot seek back after all
        await call(outer.on_response_error, relay, exc)
        return False
    return True
