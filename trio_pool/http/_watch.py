"""A hook that tells a caller where its request is while it waits for a connection.

Theory of operation
-------------------
A caller that needs to bound the wait for a connection apart from the connect (the httpx
transport: httpx's ``pool`` and ``connect`` timeouts) sets a :class:`Watcher` for the
duration of one dispatcher call with :func:`watch` (undone by :func:`unwatch`). The runner
(``OriginDispatcher._run``, and its re-send after a stale keep-alive connection) reads it once
per lease it arranges, in the caller's task, and calls it synchronously:

* :meth:`Watcher.waiting` with ``connecting=False``: the request waits in the queue for a
  connection (any connection, including one being opened for whoever waits first);
* :meth:`Watcher.waiting` with ``connecting=True``: a connection is being opened for this
  request (an ``Agent``'s ``max_connections`` budget is waited for there, too);
* :meth:`Watcher.leased`: the request holds a connection and is about to be written (also
  when it got one at once, without waiting).

The watcher lives in a :class:`contextvars.ContextVar`, so it follows the caller's task
through every layer that runs requests in that task (``Agent``, ``BalancedPool``,
interceptors) and reaches no other task. With no watcher set the runner pays one
``ContextVar.get`` per request. Nothing here changes the request: a watcher only observes
(it may move a cancel scope's deadline of its own).
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Protocol

__all__ = ["Watcher", "current_watcher", "unwatch", "watch"]


class Watcher(Protocol):
    """Told where a request of its caller is (see the module docstring). Its methods are
    called synchronously in the caller's task, must not raise, and are not checkpoints."""

    def waiting(self, *, connecting: bool) -> None:
        """The request waits: for a connection being opened for it (``connecting``), or in
        the queue for any connection."""

    def leased(self) -> None:
        """The request holds a connection; its write comes next."""


_WATCHER: ContextVar[Watcher | None] = ContextVar("trio_pool_watcher", default=None)

current_watcher = _WATCHER.get
"""The watcher set in this context, or None."""


def watch(watcher: Watcher) -> Token[Watcher | None]:
    """Set ``watcher`` for the requests this task runs until :func:`unwatch` (a pair of
    calls, not a context manager: the transport sets one per request, on its hot path)."""
    return _WATCHER.set(watcher)


def unwatch(token: Token[Watcher | None]) -> None:
    """Undo the :func:`watch` that returned ``token``."""
    _WATCHER.reset(token)
