"""``Agent``: one ``Pool`` per origin, made on first use, in the agent's own nursery.

Theory of operation
-------------------
An agent composes ``Pool``s; it does not schedule requests itself. Each origin in use is an
:class:`_Origin` entry: its Pool and a *holder* task in the agent's supervisor that keeps the
Pool's ``async with`` block open (:meth:`AgentBase._hold`). So every Pool is entered by the
agent's task tree, never by the caller's: a request from any task, at any depth of nesting,
may be the one that creates a Pool (entering a Pool lazily from the caller's task is what
corrupts Trio's nursery stack).

A request is *routed* synchronously — the URL split (cached), the entry looked up in a dict,
its ``active`` count raised — then handed to that Pool's own method in the caller's task;
the Pool does all the I/O. The entry for a new origin is made and its holder started in the
same synchronous step, so two tasks racing for a new origin get one Pool; they wait for the
holder to have entered it (``started``). A waiter cancelled there only lowers ``active``: the
Pool is made anyway, serves nobody, and retires like any idle one.

Retiring: when ``active`` falls to 0 the entry notes the time; its holder sleeps in a cancel
scope whose deadline is that time plus ``pool_idle_timeout`` (re-armed only when it moves
earlier, as the connections' keep-alive deadlines are). When it fires with ``active`` still 0,
the entry leaves the origin map (``origins`` shrinks; a later request makes a new Pool) and
the holder leaves the Pool's block, a graceful close. Routing and retiring are synchronous,
so no request is ever routed to a Pool that is leaving.

``max_connections`` is a :class:`~._budget.Budget` shared by the pools through their
connector (see ``_budget.py``): the pool's ``"disconnect"`` event gives a slot back, and
whenever a request ends while attempts wait for a slot the budget closes an idle connection
of another origin (:func:`_close_one_idle`, the one place the agent reaches into a Pool).

State, and who changes it: the origin map ``_pools`` and the holder set ``_held`` change only
here, synchronously; an entry's ``active``/``waiting`` counts change in :meth:`_route` and
:meth:`_done`. Invariants: an entry in ``_pools`` is in ``_held``; its ``active`` counts the
requests routed to it that have not ended; ``_shut`` is set only once closed and ``_held`` is
empty.

Subclasses (``ProxyAgent``, ``EnvHttpProxyAgent``) say how a Pool reaches an origin
(:meth:`AgentBase._pool_kwargs`).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from .._errors import InvalidArgumentError, MaxOriginsReachedError
from .._validate import check_count, check_timeout
from ._budget import Budget, Unneeded, budgeted_connector
from ._dispatch import tell_unrouted
from ._events import EVENTS, Emitter, nest, unnest
from ._interface import Dispatcher
from ._lifecycle import Lifecycle
from ._models import PoolStats, RequestOptions
from ._options import ClientOptions
from ._pool import Pool
from ._url import UrlSplitter, split_url

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._dispatch import Handler
    from ._models import HeadersType, Response, StreamResponse, Upgraded
    from ._origin import Origin
    from ._transport import Connector

__all__ = ["Agent", "AgentBase", "AgentStats"]

_log = logging.getLogger("trio_pool.agent")
_STATS_FIELDS = tuple(field.name for field in attrs.fields(PoolStats))
_TOTALS = tuple(name for name in _STATS_FIELDS if name.endswith("_total"))


@final
@attrs.frozen
class AgentStats(PoolStats):
    """A snapshot of an agent's counters (``statistics()``): the :class:`PoolStats` fields
    summed over its pools (requests waiting for a new pool to be entered count as
    ``queued``), and each live origin's own."""

    origins: dict[str, PoolStats]
    """Origin -> its Pool's statistics, for the origins with a live pool (creation order)."""


@attrs.define(eq=False)
class _Origin:
    """One origin in use: its Pool and what the agent knows about it."""

    text: str
    pool: Pool
    started: trio.Event = attrs.Factory(trio.Event)  # entered, or entering failed
    entered: bool = False
    error: BaseException | None = None  # why entering failed
    active: int = 0  # requests routed here that have not ended
    waiting: int = 0  # of those, waiting for the holder to enter the Pool
    idle_since: float = -math.inf  # when ``active`` last fell to 0
    wake: trio.CancelScope | None = None  # the holder's sleep
    leave: trio.Event = attrs.Factory(trio.Event)  # tells the holder to leave the block

    def ready(self) -> bool:
        """The Pool is entered and takes requests."""
        return self.entered and self.error is None


def _close_one_idle(pool: Pool) -> bool:
    """Close the least recently used idle connection of ``pool``; False if it has none.

    The one internal hook of the Pool the agent uses (the scheduler's). Not a checkpoint:
    the connection's task closes it and reports ``"disconnect"``.
    """
    return pool._close_one_idle()


class AgentBase(Lifecycle, Emitter, Dispatcher):
    """The machinery of ``Agent``, ``ProxyAgent`` and ``EnvHttpProxyAgent`` (see the module
    docstring); not public."""

    _log = _log

    def __init__(
        self,
        *,
        connections: int | None = None,
        max_connections: int | None = None,
        max_origins: int | None = None,
        pool_idle_timeout: float | None = 60.0,
        factory: Callable[..., Pool] | None = None,
        client_ttl: float | None = None,
        connector: Connector | None = None,
        **options: Any,
    ) -> None:
        Lifecycle.__init__(self)
        Emitter.__init__(self)
        self._connections = check_count("connections", connections, allow_none=True) or None
        self._max_origins = check_count("max_origins", max_origins, minimum=1, allow_none=True)
        limit = check_count("max_connections", max_connections, minimum=1, allow_none=True)
        self._idle_timeout = check_timeout("pool_idle_timeout", pool_idle_timeout)
        if factory is not None and not callable(factory):
            raise InvalidArgumentError("invalid factory: expected a callable")
        if connector is not None and not callable(connector):
            raise InvalidArgumentError("invalid connector: expected an async callable")
        self._client_ttl = check_timeout("client_ttl", client_ttl)
        self._client_options = ClientOptions.from_kwargs(options)
        self._options = options
        self._connector = connector
        self._factory: Callable[..., Pool] = factory or Pool
        self._budget = None if limit is None else Budget(limit, self._make_room)
        self._pools: dict[str, _Origin] = {}  # live origins, creation order
        self._held: set[_Origin] = set()  # entries whose holder task has not ended
        self._retired = dict.fromkeys(_TOTALS, 0)  # the cumulative counters of ended pools
        self._split = UrlSplitter()

    # ------------------------------------------------------------------ public

    @property
    def origins(self) -> list[str]:
        """The origins with a live pool, in creation order. Not a checkpoint."""
        return list(self._pools)

    def get_pool(self, origin: str) -> Pool | None:
        """The Pool of ``origin`` (an origin or any absolute URL on it), or None. Not a
        checkpoint.

        Raises:
            InvalidArgumentError: ``origin`` is not an absolute http(s) URL.
        """
        entry = self._pools.get(split_url(origin, "origin")[0].text)
        return None if entry is None else entry.pool

    def statistics(self) -> AgentStats:
        """The sum of the pools' statistics (including pools still closing), plus requests
        waiting for a new pool, as ``queued``; ``origins`` has each live pool's own. The
        cumulative ``*_total`` counters include those of pools already retired
        (``pool_idle_timeout``). O(number of pools), not a checkpoint."""
        totals = dict.fromkeys(_STATS_FIELDS, 0)
        totals.update(self._retired)
        waiting = 0
        for entry in self._held:
            stats = entry.pool.statistics()
            for name in _STATS_FIELDS:
                totals[name] += getattr(stats, name)
            waiting += entry.waiting
        for name in ("pending", "queued", "size"):
            totals[name] += waiting
        origins = {text: entry.pool.statistics() for text, entry in self._pools.items()}
        return AgentStats(**totals, origins=origins)

    def _origin_statistics(self) -> list[tuple[str, PoolStats]]:
        """Each live pool's origin and statistics (``statistics().origins``, without the
        sum). Not a checkpoint."""
        return [(text, entry.pool.statistics()) for text, entry in self._pools.items()]

    # ------------------------------------------------------------------ lifetime

    async def __aenter__(self) -> Self:
        self._check_enter()
        await self._supervisor.enter()
        return self

    def _describe(self) -> str:
        return f"origins={len(self._pools)}"

    def _abort_all(self, error: Callable[[], BaseException]) -> None:
        for entry in self._held:
            entry.leave.set()  # its holder destroys the Pool
            if entry.wake is not None:
                entry.wake.cancel()

    def _check_shutdown(self) -> None:
        if not self._closed:
            return
        for entry in self._held:
            if entry.active == 0:
                entry.leave.set()
        if not self._held:
            self._shut.set()

    # ------------------------------------------------------------------ pools

    def _pool_kwargs(self, origin: Origin) -> tuple[Connector | None, dict[str, Any]]:
        """How a Pool reaches ``origin``: the connector that opens its transport (None: TCP
        or ``socket_path``, then TLS) and extra keyword options for its factory."""
        return self._connector, {}

    def _new_entry(self, origin: Origin) -> _Origin:
        """Make the Pool of a new origin and start its holder. Not a checkpoint."""
        if self._max_origins is not None and len(self._pools) >= self._max_origins:
            raise MaxOriginsReachedError(
                f"cannot send to {origin.text}: the Agent already serves"
                f" max_origins={self._max_origins} origins"
            )
        connector, extra = self._pool_kwargs(origin)
        kwargs: dict[str, Any] = {**self._options, **extra}
        if self._connections is not None:
            kwargs["connections"] = self._connections
        if self._client_ttl is not None:
            kwargs["client_ttl"] = self._client_ttl
        if self._budget is not None:
            # The budget's connector applies connect_timeout itself, after the wait for a
            # slot (which is a queue, not part of connecting).
            kwargs["connector"] = budgeted_connector(
                self._budget, origin.text, self._client_options, connector
            )
            kwargs["connect_timeout"] = None
        elif connector is not None:
            kwargs["connector"] = connector
        pool = self._factory(origin.text, **kwargs)
        if not isinstance(pool, Pool) or pool.closed or pool._supervisor.running:
            raise InvalidArgumentError(f"invalid factory: it returned {pool!r}, not a new Pool")
        entry = _Origin(origin.text, pool)
        for event in EVENTS:
            pool.on(event, functools.partial(self._on_pool_event, event))
        nest(pool, self)  # its "request_end" events are the agent's
        self._pools[origin.text] = entry
        self._held.add(entry)
        self._supervisor.start_soon(self._hold, entry, name=f"trio_pool: agent {origin.text}")
        _log.debug("pool for %s created", origin.text)
        return entry

    async def _hold(self, entry: _Origin) -> None:
        """Keep ``entry``'s Pool entered until it retires or the agent shuts down.
        A background task; never raises (but ``Cancelled``, which destroys the Pool)."""
        try:
            async with entry.pool:
                entry.entered = True
                entry.started.set()
                await self._live(entry)
                if self._destroyed:
                    await entry.pool.destroy(self._destroy_error)
                # Leaving the block closes the Pool gracefully (nothing is routed to it now).
        except Exception as exc:  # a factory's Pool that cannot be entered
            _log.exception("the pool for %s could not be entered", entry.text)
            entry.error = InvalidArgumentError(f"invalid factory: its Pool failed: {exc!r}")
        finally:
            entry.entered = False
            entry.started.set()
            if self._pools.get(entry.text) is entry:
                del self._pools[entry.text]
            self._held.discard(entry)
            unnest(entry.pool)
            stats = entry.pool.statistics()
            for name in _TOTALS:
                self._retired[name] += getattr(stats, name)
            self._check_shutdown()

    async def _live(self, entry: _Origin) -> None:
        """Sleep until told to leave, or until the Pool has been idle ``pool_idle_timeout``
        seconds (then retire it from the origin map)."""
        timeout = self._idle_timeout
        while not entry.leave.is_set():
            deadline = math.inf
            if entry.active == 0 and timeout is not None:
                deadline = entry.idle_since + timeout
            with trio.CancelScope(deadline=deadline) as entry.wake:
                await entry.leave.wait()
            entry.wake = None
            if (
                entry.active == 0
                and timeout is not None
                and trio.current_time() >= entry.idle_since + timeout
            ):
                del self._pools[entry.text]  # synchronous with the check: no request races it
                _log.debug("pool for %s retired after %s s idle", entry.text, timeout)
                return

    def _on_pool_event(self, event: str, origin: str, targets: list[Emitter], *extra: Any) -> None:
        """A listener on every Pool: keep the budget, pass the event on."""
        budget = self._budget
        if budget is not None and event == "disconnect":
            budget.release()
        if event == "connection_error" and isinstance(extra[0], Unneeded):
            return  # not an error: nobody needed that connection any more
        self._emit(event, origin, [self, *targets], *extra)

    def _make_room(self, owner: Hashable) -> bool:
        """Close an idle connection (the budget asks, for a waiter of ``owner``): another
        origin's if there is one, else ``owner``'s own — today's Pool has given the waiting
        request to the connection being opened for it, and an idle connection of its own
        origin must not hold the slot it waits for. False if nothing is idle anywhere."""
        entries = sorted(self._held, key=lambda entry: entry.text == owner)
        return any(_close_one_idle(entry.pool) for entry in entries)

    # ------------------------------------------------------------------ routing

    async def _route(self, origin: Origin) -> _Origin:
        """The entry of ``origin`` with its Pool entered, counted ``active`` (the caller
        must call :meth:`_done`). A checkpoint only if the Pool is new.

        Raises:
            MaxOriginsReachedError: a new origin beyond ``max_origins``.
            ClientClosedError, ClientDestroyedError: the agent no longer takes requests.
        """
        self._check_open()
        entry = self._pools.get(origin.text)
        if entry is None:
            entry = self._new_entry(origin)
        entry.active += 1
        if entry.entered:
            return entry
        entry.waiting += 1
        try:
            await entry.started.wait()
        except BaseException:
            entry.waiting -= 1
            self._done(entry)
            raise
        entry.waiting -= 1
        if not entry.ready():  # entering failed, or the agent shut down meanwhile
            self._done(entry)
            self._check_open()
            raise entry.error or InvalidArgumentError("invalid factory: its Pool ended at once")
        return entry

    def _done(self, entry: _Origin) -> None:
        """A request routed to ``entry`` ended (or was never sent). Not a checkpoint."""
        entry.active -= 1
        budget = self._budget
        if budget is not None:
            if budget.waiting(entry.text):
                # Its attempts beyond what the pool still needs (a cancelled request's).
                budget.prune(entry.text, entry.pool.statistics().pending)
            budget.make_room()  # a connection may have become idle
        if entry.active == 0:
            entry.idle_since = trio.current_time()
            wake = entry.wake
            if wake is not None and self._idle_timeout is not None:
                wake.deadline = min(wake.deadline, entry.idle_since + self._idle_timeout)
            if self._closed:
                self._check_shutdown()

    @asynccontextmanager
    async def _routed(
        self, url: str, handler: Handler | None = None
    ) -> AsyncIterator[tuple[Pool, str]]:
        origin, target = self._split(url)
        try:
            entry = await self._route(origin)
        except trio.Cancelled:
            if handler is not None:
                await tell_unrouted(handler)
            raise
        try:
            yield entry.pool, target
        finally:
            self._done(entry)

    # ------------------------------------------------------------------ requests

    async def _request_plain(
        self, method: str, path: str, reset: bool, capability: str | None
    ) -> Response:
        # The common case inline: a URL seen before, to an open origin, no budget.
        split = self._split.cache.get(path) if type(path) is str else None
        origin, target = split if split is not None else self._split(path)
        entry = self._pools.get(origin.text)
        if entry is not None and entry.entered and not self._closed:
            entry.active += 1
        else:
            entry = await self._route(origin)
        try:
            return await entry.pool._request_plain(method, target, reset, capability)
        finally:
            if entry.active > 1 and self._budget is None:
                entry.active -= 1
            else:
                self._done(entry)

    async def _request_options(self, options: RequestOptions) -> Response:
        async with self._routed(options.path) as (pool, target):
            return await pool._request_options(attrs.evolve(options, path=target))

    @asynccontextmanager
    async def _stream(
        self, options: RequestOptions, *, duplex: bool
    ) -> AsyncIterator[StreamResponse]:
        async with (
            self._routed(options.path) as (pool, target),
            pool._stream(attrs.evolve(options, path=target), duplex=duplex) as response,
        ):
            yield response

    async def dispatch(self, options: RequestOptions, handler: Handler) -> None:
        """Like ``Pool.dispatch``; ``options.path`` is an absolute URL. A checkpoint.

        Raises:
            InvalidArgumentError: a bad argument (nothing was sent).
            MaxOriginsReachedError: a new origin beyond ``max_origins``.
            ClientClosedError, ClientDestroyedError: the agent no longer takes requests.
        """
        if not isinstance(options, RequestOptions):
            raise InvalidArgumentError("invalid options: expected a RequestOptions")
        async with self._routed(options.path, handler) as (pool, target):
            await pool.dispatch(attrs.evolve(options, path=target), handler)

    @asynccontextmanager
    async def upgrade(
        self, path: str, *, protocol: str = "websocket", headers: HeadersType | None = None
    ) -> AsyncIterator[Upgraded]:
        """Like ``Pool.upgrade``, to the absolute URL ``path``. Entering is a checkpoint."""
        async with (
            self._routed(path) as (pool, target),
            pool.upgrade(target, protocol=protocol, headers=headers) as upgraded,
        ):
            yield upgraded

    @asynccontextmanager
    async def connect(
        self, authority: str, *, headers: HeadersType | None = None
    ) -> AsyncIterator[Upgraded]:
        """``CONNECT`` through an HTTP proxy: ``authority`` is an absolute URL whose origin is
        the proxy and whose path is the tunnel's target (``"http://proxy:3128/host:443"``,
        undici's ``{origin, path}``). Entering is a checkpoint; like ``Pool.connect``."""
        async with (
            self._routed(authority) as (pool, target),
            pool.connect(target.lstrip("/"), headers=headers) as tunnel,
        ):
            yield tunnel


@final
class Agent(AgentBase):
    """A dispatcher for every origin: one ``Pool`` per origin, made on first use in the
    agent's own nursery and retired after ``pool_idle_timeout`` seconds without requests
    (undici's ``Agent``).

    Args:
        connections: the most connections per origin (as ``Pool``); None = unlimited.
        max_connections: the most connections open at once across all origins; when it is
            spent, a new connection waits (FIFO across origins) and an idle connection of
            another origin is closed to make room. None = unlimited.
        max_origins: the most origins with a live pool; one more raises
            ``MaxOriginsReachedError``. None = unlimited.
        pool_idle_timeout: seconds a pool may go without requests before it is closed;
            None or 0 = never.
        factory: ``factory(origin, **options) -> Pool`` makes each origin's Pool (default
            ``Pool``).
        client_ttl, connector: as for ``Pool``.
        **options: ``Client`` options, given to every Pool.

    Use it as ``async with Agent(...) as agent:``. Every dispatcher method takes an absolute
    ``http``/``https`` URL where a ``Pool`` takes a path (``connect()``: see there); the rest
    is ``Pool``'s. Events of every Pool are heard here with ``targets``
    ``[agent, pool, client]``.

    Raises:
        InvalidArgumentError: a bad argument (the message names it).
    """
