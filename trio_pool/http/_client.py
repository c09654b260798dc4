"""``Client``: one connection at a time to one origin."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, final

from ._dispatcher import OriginDispatcher
from ._options import ClientOptions
from ._spec import ConnectionSpec

if TYPE_CHECKING:
    from ._events import Emitter
    from ._transport import Connector

__all__ = ["Client"]


@final
class Client(OriginDispatcher):
    """A dispatcher with at most one connection to ``origin``, up to ``pipelining`` requests
    in flight on it (undici's ``Client``).

    Use it as ``async with Client(origin, **options) as client:``; the options and their
    defaults are listed under *Client options* in the API reference. Extra keyword
    argument: ``connector``, an async function ``(origin) -> trio.abc.Stream`` that
    replaces TCP+TLS (tests use in-memory streams; a Unix socket, an SSH tunnel...); it
    receives the :class:`~trio_pool.Origin` (``scheme``, ``host``, ``port``, ``text``,
    ``authority``) and its stream is used as is. What it raises fails the request as a
    ``ConnectError`` (its cause the root ``OSError``, if any).

    A ``Client`` made by a ``Pool``'s ``factory`` is never entered: it gives the pool's
    connection its options and identity (the ``targets`` of events), and its own ``on()``
    listeners hear that connection's events.
    """

    _log = logging.getLogger("trio_pool.client")

    def __init__(self, origin: str, *, connector: Connector | None = None, **options: Any) -> None:
        super().__init__(origin, ClientOptions.from_kwargs(options), max_connections=1)
        self._connector = connector

    def _connection_spec(self) -> ConnectionSpec:
        # Made per connection, not kept: a spec naming this Client as its target, stored on
        # it, would be a reference cycle (issue #16).
        return ConnectionSpec(self._origin, self._options, self._connector, (self,))

    def _spec_under(self, owner: Emitter) -> ConnectionSpec:
        """The spec of a connection of ``owner`` (a ``Pool``) that this Client describes:
        its origin, options and connector, its events heard by ``owner`` then by it."""
        return ConnectionSpec(self._origin, self._options, self._connector, (owner, self))
