"""``Pool``: many connections (``Client``s) to one origin, one FIFO queue."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

from .._errors import InvalidArgumentError
from .._validate import check_count, check_timeout
from ._client import Client
from ._dispatcher import OriginDispatcher
from ._options import ClientOptions
from ._spec import ConnectionSpec

if TYPE_CHECKING:
    from ._scheduler import ConnectionGate
    from ._transport import Connector

__all__ = ["Pool"]


@final
class Pool(OriginDispatcher):
    """A pool of connections to ``origin`` (undici's ``Pool``).

    Args:
        origin: ``"http://host[:port]"`` or ``"https://host[:port]"``.
        connections: the most connections open at once; None or 0 = unlimited.
        factory: ``factory(origin, **options) -> Client`` makes the ``Client`` whose options
            a new connection uses (default: ``Client``).
        client_ttl: seconds since connect after which a connection is retired (once its
            current work is done); None = never.
        connector: see :class:`Client`.
        **options: ``Client`` options (see :class:`Client`), passed to ``factory``.

    Requests wait in one FIFO queue while every connection is busy. Each connection is a
    task of the pool (so a caller that gives up never orphans one), and a new one is opened
    when work waits and ``connections`` allows.

    Internal: ``_gate`` (a ``ConnectionGate``) is an outside budget of connections that a
    new connection must also fit in (the coming ``Agent``'s, shared by its Pools).
    """

    _log = logging.getLogger("trio_pool.pool")

    def __init__(
        self,
        origin: str,
        *,
        connections: int | None = None,
        factory: Callable[..., Client] | None = None,
        client_ttl: float | None = None,
        connector: Connector | None = None,
        _gate: ConnectionGate | None = None,
        **options: Any,
    ) -> None:
        connections = check_count("connections", connections, allow_none=True)
        if factory is not None and not callable(factory):
            raise InvalidArgumentError("invalid factory: expected a callable")
        validated = ClientOptions.from_kwargs(options)
        super().__init__(
            origin,
            validated,
            max_connections=connections or None,
            client_ttl=check_timeout("client_ttl", client_ttl),
            gate=_gate,
        )
        self._factory = factory
        self._connector = connector
        self._client_kwargs = options
        if connector is not None:
            self._client_kwargs = {**options, "connector": connector}

    def _connection_spec(self) -> ConnectionSpec:
        if self._factory is None:
            # The connection's Client (its identity in the events' ``targets``, [pool,
            # client]) is made only if an event of it is heard: nobody else can reach it,
            # and an idle connection carrying a whole dispatcher cost ~3 KiB (issue #16).
            # The options are this pool's own, validated from the same keywords.
            return ConnectionSpec(
                self._origin, self._options, self._connector, (self,), self._make_client
            )
        client = self._factory(self._origin.text, **self._client_kwargs)
        if not isinstance(client, Client):
            raise InvalidArgumentError(f"invalid factory: it returned {client!r}, not a Client")
        return client._spec_under(self)

    def _make_client(self) -> Client:
        """A connection's ``Client`` as the default factory makes it (see above)."""
        return Client(self._origin.text, **self._client_kwargs)
