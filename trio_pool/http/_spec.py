"""``ConnectionSpec``: what a new connection is opened with, as one frozen value.

A scheduler makes one per connection (a ``Pool`` with a ``factory`` asks it for a ``Client``
and takes the spec from it; a ``Pool`` without one shares its own validated options and
leaves the ``Client`` to be made when an event needs it; a ``Client`` is its own spec) and
the pooled connection reads nothing else: no connection ever holds the dispatcher object
that carried its options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._events import Emitter
    from ._options import ClientOptions
    from ._origin import Origin
    from ._transport import Connector

__all__ = ["ConnectionSpec"]


@attrs.frozen(eq=False)
class ConnectionSpec:
    """Everything a connection is opened with.

    Attributes:
        origin: where it connects.
        options: its validated options (timeouts, pipelining, limits).
        connector: replaces TCP+TLS (``connector=``), or None.
        targets: the objects that hear its events, outermost first (``[pool, client]``).
        identity: makes the innermost target, when ``targets`` lacks it: a ``Pool``
            without a factory gives its connections a ``Client`` only when an event of
            theirs is heard (see :meth:`~._pooled.PooledConnection.emit`). An idle
            connection would otherwise carry a whole dispatcher (~3 KiB, issue #16).
    """

    origin: Origin
    options: ClientOptions
    connector: Connector | None = None
    targets: tuple[Emitter, ...] = ()
    identity: Callable[[], Emitter] | None = None
