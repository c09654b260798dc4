"""``BalancedPool``: one ``Pool`` per upstream origin, weighted round-robin between them.

Theory of operation
-------------------
Each upstream is an :class:`Upstream`: its ``Pool``, its capability tags, its weight, and a
*holder* task in the BalancedPool's supervisor that keeps the Pool's ``async with`` block open
(:meth:`BalancedPool._hold`). Every Pool's lifetime therefore nests inside the BalancedPool's
block, an upstream added later gets its holder then, and a removed upstream's holder leaves
the Pool's block — a graceful close — once the requests routed to it have ended.

A request is first *routed* to an upstream, then handed to that Pool's own method in the
caller's task; the Pool does all the I/O. Routing decides synchronously:

* An upstream is *eligible* for a request when it carries the requested capability, its Pool
  is open and entered, nothing is queued in that Pool (it can take the request at once or
  after the work already on its connections) and no waiter has been promised it.
* Among them, undici's interleaved weighted round-robin picks one, preferring an upstream
  that can start the request at once (a free connection or slot) to one where it would
  wait behind the work in flight: :class:`~._weights.Router` (its docstring has the
  details: a pick probes O(1) upstreams, asking never moves a cursor (undici#4839), after
  an outage traffic returns to the upstreams that recovered, one cursor per capability).
* When no capable upstream is eligible, the request waits in this BalancedPool's FIFO queue
  (the one hand-off, :class:`~trio_pool._handoff.HandoffQueue`, keyed by a :class:`Waiter`
  naming its capability). :meth:`BalancedPool._pump` hands upstreams to waiters (in order)
  whenever one may have become eligible: an event from a Pool, or the end of a request
  routed through here. It looks at the head first and copies the queue only when a waiter
  for a capability has to be passed over. A cancelled waiter leaves the queue at once;
  nothing is ever handed to a cancelled waiter.

Weights start at ``max_weight_per_server``; a Pool's ``"connect"`` event adds
``error_penalty`` (capped), a ``"connection_error"`` with a ``ConnectError`` or a
``"disconnect"`` with a ``SocketError`` subtracts it (floor 1). As in undici, the GCD step is
recomputed when a weight falls or the upstreams change, not when a weight rises; undici's
published selection sequences depend on that.

With ``failover`` (the default) the request methods run through :mod:`._failover`: a
``ConnectError`` from the routed Pool sends the request to an untried upstream
(:meth:`BalancedPool._attempt`); ``dispatch`` fails over through a relay handler that shows
its handler one request (:func:`~._failover.dispatch_failing_over`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, final

import attrs
import trio

from .._errors import (
    ConnectError,
    InvalidArgumentError,
    SocketError,
)
from .._handoff import HandoffQueue
from .._validate import check_count, check_timeout
from ._dispatch import check_dispatch_args, tell_unrouted
from ._events import EVENTS, Emitter, nest, unnest
from ._failover import dispatch_failing_over, fail_over, failing_over
from ._interface import Dispatcher
from ._lifecycle import Lifecycle
from ._models import PoolStats, RequestOptions
from ._options import ClientOptions
from ._origin import parse_origin
from ._pool import Pool
from ._prepare import origin_form
from ._weights import Router, Upstream, Waiter, can_start

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._dispatch import Handler
    from ._models import HeadersType, Response, StreamResponse, Upgraded

__all__ = ["BalancedPool"]

_log = logging.getLogger("trio_pool.balanced")
T = TypeVar("T")

# Pool's own keyword options; every other one is a Client option.
_POOL_ONLY_OPTIONS = ("connections", "client_ttl", "connector")
_STATS_FIELDS = tuple(field.name for field in attrs.fields(PoolStats))
_TOTALS = tuple(name for name in _STATS_FIELDS if name.endswith("_total"))


def _sum_statistics(held: Iterable[Upstream], retired: dict[str, int], waiting: int) -> PoolStats:
    """``BalancedPool.statistics()``: the Pools' sum, ``retired`` and ``waiting`` added."""
    totals = dict.fromkeys(_STATS_FIELDS, 0)
    totals.update(retired)
    for upstream in held:
        stats = upstream.pool.statistics()
        for name in _STATS_FIELDS:
            totals[name] += getattr(stats, name)
    for name in ("pending", "queued", "size"):
        totals[name] += waiting
    return PoolStats(**totals)


@final
class BalancedPool(Lifecycle, Emitter, Dispatcher):
    """A pool of ``Pool``s, one per upstream origin, balanced by weighted round-robin
    (undici's ``BalancedPool``).

    Args:
        upstreams: an origin or a list of origins (each gets a ``Pool``; duplicates are
            ignored).
        factory: ``factory(origin, **options) -> Pool`` makes each upstream's Pool
            (default: ``Pool``).
        error_penalty: weight added on a successful connect and subtracted on a connect
            error or a socket error.
        max_weight_per_server: the starting and highest weight of an upstream.
        failover: a request whose connection to an upstream could not be opened
            (``ConnectError``, ``ConnectTimeoutError``: nothing was sent) goes to the next
            capable upstream, each at most once; when all fail, the last error is raised
            with the others in its notes. Off: the first such error is the caller's.
        **options: ``Pool`` options (``connections``, ``client_ttl`` and the ``Client``
            options), passed to every Pool.

    Use it as ``async with BalancedPool(upstreams, ...) as pool:``. The dispatcher methods
    are ``Pool``'s; ``capability=`` restricts a request to upstreams tagged with it.
    Events from every Pool are heard here with ``targets`` ``[balanced_pool, pool, client]``.

    Raises:
        InvalidArgumentError: a bad argument (the message names it).
    """

    _log = _log  # where Lifecycle reports close/destroy

    def __init__(
        self,
        upstreams: str | Iterable[str],
        *,
        factory: Callable[..., Pool] | None = None,
        error_penalty: int = 15,
        max_weight_per_server: int = 100,
        failover: bool = True,
        **options: Any,
    ) -> None:
        Lifecycle.__init__(self)
        Emitter.__init__(self)
        if factory is not None and not callable(factory):
            raise InvalidArgumentError("invalid factory: expected a callable")
        penalty = check_count("error_penalty", error_penalty)
        max_weight = check_count("max_weight_per_server", max_weight_per_server, minimum=1)
        assert penalty is not None
        assert max_weight is not None
        check_count("connections", options.get("connections"), allow_none=True)
        check_timeout("client_ttl", options.get("client_ttl"))
        ClientOptions.from_kwargs(
            {name: value for name, value in options.items() if name not in _POOL_ONLY_OPTIONS}
        )
        if type(failover) is not bool:
            raise InvalidArgumentError(f"invalid failover: expected a bool, got {failover!r}")
        if isinstance(upstreams, str):
            upstreams = [upstreams]
        elif not isinstance(upstreams, Iterable):
            raise InvalidArgumentError(
                f"invalid upstreams: expected an origin or a list of origins, got {upstreams!r}"
            )
        self._factory: Callable[..., Pool] = factory or Pool
        self._failover = failover
        self._options = options
        self._penalty = penalty
        self._max_weight = max_weight
        self._order: list[Upstream] = []  # current upstreams, insertion order
        self._held: set[Upstream] = set()  # upstreams whose holder task has not ended
        self._retired = dict.fromkeys(_TOTALS, 0)  # the cumulative counters of ended Pools
        self._router = Router()
        self._waiting: HandoffQueue[Waiter, Upstream] = HandoffQueue()
        for origin in upstreams:
            self.add_upstream(origin)

    # ------------------------------------------------------------------ upstreams

    def add_upstream(self, origin: str, *, capabilities: Iterable[str] = ()) -> None:
        """Add an upstream origin with capability tags; a present origin is left as it is
        (capabilities included).

        Not a checkpoint. Inside the ``async with`` block the new Pool is entered by a
        background task and takes requests from then on.

        Raises:
            InvalidArgumentError: a bad origin or capabilities, or the factory did not
                return a fresh ``Pool``.
            ClientClosedError, ClientDestroyedError: the BalancedPool no longer takes work.
        """
        text = parse_origin(origin).text
        tags = () if isinstance(capabilities, str) else tuple(capabilities)
        if isinstance(capabilities, str) or not all(isinstance(tag, str) for tag in tags):
            raise InvalidArgumentError(
                f"invalid capabilities: expected a sequence of strings, got {capabilities!r}"
            )
        self._check_open(entered=False)  # upstreams may be added before the block
        present = self._find(text)
        if present is not None:
            if not present.pool.closed:
                return
            self._drop(present)  # its Pool was closed behind our back: replace it
        pool = self._factory(text, **self._options)
        if not isinstance(pool, Pool):
            raise InvalidArgumentError(f"invalid factory: it returned {pool!r}, not a Pool")
        if pool.closed or any(up.pool is pool for up in (*self._order, *self._held)):
            raise InvalidArgumentError("invalid factory: it returned a closed or used Pool")
        upstream = Upstream(text, pool, frozenset(tags), self._max_weight)
        for event in EVENTS:
            pool.on(event, functools.partial(self._on_pool_event, upstream, event))
        nest(pool, self)  # its "request_end" events are this pool's
        self._order.append(upstream)
        self._update_step()
        _log.debug("upstream %s added (capabilities %s)", text, sorted(tags))
        if self._supervisor.running:
            self._start_holder(upstream)

    def remove_upstream(self, origin: str) -> None:
        """Stop routing requests to ``origin``; absent origins are ignored.

        Graceful: requests already routed there finish, then its Pool is closed in the
        background. Waiters that no remaining upstream can serve fail with
        ``BalancedPoolMissingUpstreamError``. Not a checkpoint.
        """
        upstream = self._find(parse_origin(origin).text)
        if upstream is not None:
            self._drop(upstream)
            _log.debug("upstream %s removed", upstream.origin)

    @property
    def upstreams(self) -> list[str]:
        """The upstream origins (normalised), in the order they were added."""
        return [up.origin for up in self._order if not up.pool.closed]

    def get_upstream(self, origin: str) -> Pool | None:
        """The Pool of upstream ``origin``, or None (absent, or its Pool was closed)."""
        upstream = self._find(parse_origin(origin).text)
        return None if upstream is None or upstream.pool.closed else upstream.pool

    def _origin_form(self, path: str) -> str:
        """An absolute URL of any upstream, as a path: the request is balanced as usual."""
        origins = [parse_origin(up.origin) for up in self._order if not up.pool.closed]
        return origin_form(path, origins)  # type: ignore[return-value]  # a bad path as is

    def _find(self, text: str) -> Upstream | None:
        return next((up for up in self._order if up.origin == text), None)

    def _drop(self, upstream: Upstream) -> None:
        self._order.remove(upstream)
        self._update_step()
        upstream.retire_when_idle()
        self._pump()  # fails the waiters that only this upstream could serve

    def _update_step(self) -> None:
        self._router.changed(self._order)

    # ------------------------------------------------------------------ lifetime

    async def __aenter__(self) -> Self:
        self._check_enter()
        await self._supervisor.enter()
        for upstream in self._order:
            self._start_holder(upstream)
        # The block starts with every upstream able to take requests, in its turn.
        try:
            for upstream in list(self._order):
                await upstream.started.wait()
        except BaseException as exc:  # cancelled: no block to leave, so close down here
            await self._leave(exc)
            raise
        return self

    def _start_holder(self, upstream: Upstream) -> None:
        self._held.add(upstream)
        self._supervisor.start_soon(self._hold, upstream, name=f"trio_pool: {upstream.origin}")

    async def _hold(self, upstream: Upstream) -> None:
        """Keep ``upstream``'s Pool entered until it is removed or this pool shuts down.
        A background task; never raises (but ``Cancelled``, which destroys the Pool)."""
        try:
            async with upstream.pool:
                upstream.entered = True
                upstream.started.set()
                self._pump()
                await upstream.leave.wait()
                if self._destroyed:
                    await upstream.pool.destroy(self._destroy_error)
                # Leaving the block closes the Pool gracefully (nothing is routed to it now).
        except Exception:
            # Only a factory handing out a Pool entered elsewhere gets here.
            _log.exception("upstream %s: its Pool could not be entered", upstream.origin)
            if upstream in self._order:
                self._drop(upstream)
        finally:
            upstream.entered = False
            upstream.started.set()
            self._held.discard(upstream)
            unnest(upstream.pool)
            stats = upstream.pool.statistics()
            for name in _TOTALS:
                self._retired[name] += getattr(stats, name)
            self._check_shutdown()

    def _describe(self) -> str:
        return f"upstreams={self.upstreams}"

    def _abort_all(self, error: Callable[[], BaseException]) -> None:
        self._waiting.fail_all(lambda _: error())
        for upstream in self._held:
            upstream.leave.set()  # its holder destroys the Pool

    def _check_shutdown(self) -> None:
        if not self._closed or self._waiting:
            return
        for upstream in self._held:
            upstream.retire_when_idle()
        if not self._held:
            self._shut.set()

    # ------------------------------------------------------------------ statistics, events

    def statistics(self) -> PoolStats:
        """The sum of the Pools' statistics (including Pools of removed upstreams still
        finishing their requests), plus the requests waiting in this pool's own queue,
        counted as ``queued``. The cumulative ``*_total`` counters include those of the
        Pools of upstreams removed since. O(number of upstreams), not a checkpoint."""
        return _sum_statistics(self._held, self._retired, len(self._waiting))

    def _origin_statistics(self) -> list[tuple[str, PoolStats]]:
        """Each upstream's origin and its Pool's statistics, removed upstreams still
        finishing their requests included. Not a checkpoint."""
        return [(upstream.origin, upstream.pool.statistics()) for upstream in self._held]

    def _on_pool_event(
        self, upstream: Upstream, event: str, origin: str, targets: list[Emitter], *extra: object
    ) -> None:
        """A listener on every upstream Pool: adjust its weight, pass the event on."""
        error = extra[0] if extra else None
        if event == "connect":
            if upstream.weight < self._max_weight:
                upstream.weight = min(self._max_weight, upstream.weight + self._penalty)
                self._router.rose()
        elif (event == "connection_error" and isinstance(error, ConnectError)) or (
            event == "disconnect" and isinstance(error, SocketError)
        ):
            upstream.weight = max(1, upstream.weight - self._penalty)
            self._update_step()
            _log.debug("upstream %s: weight %d after %r", origin, upstream.weight, error)
        self._emit(event, origin, [self, *targets], *extra)
        self._pump()  # a connection ended, drained or appeared: a waiter may go now

    # ------------------------------------------------------------------ routing

    def _pick(self, capability: str | None, tried: list[str] | None = None) -> Upstream | None:
        """:meth:`~._weights.Router.choose` on this pool's upstreams. Not a checkpoint."""
        return self._router.choose(self._order, capability, tried)

    def _pump(self) -> None:
        """Give eligible upstreams to waiters, in queue order. Not a checkpoint."""
        if self._waiting:
            self._router.hand_out(self._waiting, self._order)
        self._check_shutdown()

    def _check_invariants(self) -> None:
        """Assert the invariants of every upstream's Pool and of the routing counters
        (tests and soaks call it, when every task is blocked)."""
        for upstream in self._held:
            assert upstream.active >= upstream.promised >= 0, f"{upstream.origin}: counts"
            if upstream.entered:
                upstream.pool._check_invariants()
        if self._waiting and self._waiting.head().capability is None:
            assert not any(not up.pool.closed and can_start(up) for up in self._order), (
                "an eligible upstream while a request waits"
            )

    def _release(self, upstream: Upstream) -> None:
        """A request routed to ``upstream`` ended (or was never sent)."""
        upstream.active -= 1
        if upstream.removed and upstream.active == 0:
            upstream.leave.set()
        self._pump()

    async def _route(self, capability: str | None) -> Upstream:
        """The upstream for one request; waits in the queue while no capable upstream is
        eligible. A checkpoint only when it waits; a cancelled waiter leaves the queue and
        passes on an upstream it was given.

        Raises:
            InvalidArgumentError: ``capability`` is not a str or None.
            BalancedPoolMissingUpstreamError: no upstream carries ``capability``.
            ClientClosedError, ClientDestroyedError: the BalancedPool no longer takes work.
        """
        if capability is not None and not isinstance(capability, str):
            raise InvalidArgumentError(f"invalid capability {capability!r}: expected a str")
        self._check_open()
        # Earlier waiters first: whatever is still eligible afterwards, they cannot use.
        self._pump()
        upstream = self._pick(capability)
        if upstream is not None:
            return upstream
        try:
            # A cancelled waiter leaves the queue before anything can be handed to it; one
            # that was handed an upstream returns it (no checkpoint until _routed's try).
            upstream = await self._waiting.park(Waiter(capability))
        except BaseException:
            self._check_shutdown()
            raise
        upstream.promised -= 1
        return upstream

    @asynccontextmanager
    async def _routed(
        self, capability: str | None, handler: Handler | None = None
    ) -> AsyncIterator[Pool]:
        try:
            upstream = await self._route(capability)
        except trio.Cancelled:
            if handler is not None:
                await tell_unrouted(handler)
            raise
        try:
            yield upstream.pool
        finally:
            self._release(upstream)

    # ------------------------------------------------------------------ requests

    @asynccontextmanager
    async def _attempt(
        self, capability: str | None, tried: list[str]
    ) -> AsyncIterator[tuple[str, Pool] | None]:
        """One attempt (:mod:`._failover`'s ``route``): the first routed as usual, a later
        one to an untried upstream at once (None if none is left)."""
        upstream: Upstream | None
        if not tried:
            upstream = await self._route(capability)
        else:
            upstream = None if self._destroyed else self._pick(capability, tried)
            if upstream is None:
                yield None
                return
        try:
            yield upstream.origin, upstream.pool
        finally:
            self._release(upstream)

    def _request_plain(
        self, method: str, path: str, reset: bool, capability: str | None
    ) -> Awaitable[Response]:
        # The routed Pool's own hot path (no RequestOptions).
        return self._whole(
            capability, lambda pool: pool._request_plain(method, path, reset, capability)
        )

    def _request_options(self, options: RequestOptions) -> Awaitable[Response]:
        return self._whole(options.capability, lambda pool: pool._request_options(options))

    async def _whole(
        self, capability: str | None, send: Callable[[Pool], Awaitable[Response]]
    ) -> Response:
        """``request()``: the first attempt here (no context manager: the hot path), the
        next ones, if it could not connect, in :func:`~._failover.fail_over`."""
        upstream = await self._route(capability)
        try:
            return await send(upstream.pool)
        except ConnectError as exc:
            if not self._failover:
                raise
            failed = [(upstream.origin, exc)]
        finally:
            self._release(upstream)
        return await fail_over(functools.partial(self._attempt, capability), send, failed)

    def _stream(
        self, options: RequestOptions, *, duplex: bool
    ) -> AbstractAsyncContextManager[StreamResponse]:
        return self._entering(options.capability, lambda pool: pool._stream(options, duplex=duplex))

    @asynccontextmanager
    async def _entering(
        self, capability: str | None, enter: Callable[[Pool], AbstractAsyncContextManager[T]]
    ) -> AsyncIterator[T]:
        """``async with enter(pool)`` on a routed upstream (failing over while entering)."""
        if self._failover:
            async with failing_over(functools.partial(self._attempt, capability), enter) as value:
                yield value
            return
        async with self._routed(capability) as pool, enter(pool) as value:
            yield value

    async def dispatch(self, options: RequestOptions, handler: Handler) -> None:
        """Like ``Pool.dispatch``, on an upstream carrying ``options.capability``.
        A checkpoint.

        Raises:
            BalancedPoolMissingUpstreamError: no upstream carries the capability.
            Like ``Pool.dispatch`` otherwise.
        """
        check_dispatch_args(options, handler)
        if type(options.path) is not str or options.path[:1] != "/":
            options = attrs.evolve(options, path=self._origin_form(options.path))
        if self._failover:
            route = functools.partial(self._attempt, options.capability)
            await dispatch_failing_over(route, options, handler)
            return
        async with self._routed(options.capability, handler) as pool:
            await pool.dispatch(options, handler)

    def upgrade(
        self, path: str, *, protocol: str = "websocket", headers: HeadersType | None = None
    ) -> AbstractAsyncContextManager[Upgraded]:
        """Like ``Pool.upgrade``, on the next upstream. Entering is a checkpoint."""
        return self._entering(
            None, lambda pool: pool.upgrade(path, protocol=protocol, headers=headers)
        )

    def connect(
        self, authority: str, *, headers: HeadersType | None = None
    ) -> AbstractAsyncContextManager[Upgraded]:
        """Like ``Pool.connect``, on the next upstream. Entering is a checkpoint."""
        return self._entering(None, lambda pool: pool.connect(authority, headers=headers))
