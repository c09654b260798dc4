"""Fake resources and backends for the ResourcePool / Cluster tests.

A :class:`FakeBackend` hands out :class:`FakeResource` objects through either form the pool
accepts: ``acquire=`` + ``dispose=`` callbacks, or ``open=`` (an async context manager that the
pool runs in its own task). It records every call with its virtual time, and tracks how many
resources exist or are being created at once (``peak_outstanding``), so tests can check the
pool's ``max`` from the outside, independently of ``statistics()``.

Knobs (set them on the backend or on one resource before the pool uses it):

* ``fail_next`` / ``fail_always``: the next N (or every) allocation raises ``AllocationError``;
* ``acquire_delay`` / ``acquire_hangs``: allocations take time or never finish;
* ``late_delays``: per-attempt delays run under a *shield*, so the allocation ignores the pool's
  cancel scope and returns its resource late;
* ``FakeResource.alive`` / ``ping_hangs``: the ping fails or never returns;
* ``ping_delay``: every ping takes that long (``pinging`` lists the pings under way);
* ``FakeResource.dispose_error`` / ``dispose_hangs`` (and ``FakeBackend.dispose_hangs``): the
  dispose callback (or the ``open=`` context manager's exit) raises or never returns.

A dispose (or exit) that runs to completion is recorded in ``dispose_finished``; one cut short
(for instance because it ran in an already-cancelled scope) is only in ``disposed`` /
``exits``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio.testing

import trio_pool

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

CALLBACKS = "callbacks"
OPEN = "open"
FORMS = (CALLBACKS, OPEN)


class AllocationError(Exception):
    """What a failing fake allocation raises."""


class DisposeError(Exception):
    """What a failing fake dispose (or ``open=`` exit) raises."""


class PingError(Exception):
    """What the fake ping raises for a dead resource."""


class ResourceDiedError(Exception):
    """What an ``open=`` resource's own background task raises when the resource dies."""


@attrs.define(eq=False)
class FakeResource:
    id: int
    label: str = "r"
    alive: bool = True
    ping_hangs: bool = False
    dispose_error: BaseException | None = None
    dispose_hangs: bool = False

    def __repr__(self) -> str:
        return f"<{self.label}{self.id}>"


@attrs.define(eq=False)
class FakeBackend:
    label: str = "r"
    # knobs
    fail_next: int = 0
    fail_always: bool = False
    acquire_delay: float = 0.0
    acquire_hangs: bool = False
    late_delays: list[float] = attrs.field(factory=list)
    dispose_hangs: bool = False
    ping_delay: float = 0.0
    attempt_hook: Callable[[int], Awaitable[None]] | None = None
    # records
    attempts: list[float] = attrs.field(factory=list)
    errors: list[AllocationError] = attrs.field(factory=list)
    created: list[FakeResource] = attrs.field(factory=list)
    created_at: list[float] = attrs.field(factory=list)
    disposed: list[FakeResource] = attrs.field(factory=list)
    dispose_finished: list[FakeResource] = attrs.field(factory=list)
    destroyed: list[FakeResource] = attrs.field(factory=list)
    pinged: list[FakeResource] = attrs.field(factory=list)
    pinging: list[FakeResource] = attrs.field(factory=list)
    exits: list[tuple[FakeResource, str]] = attrs.field(factory=list)
    in_flight: int = 0
    failed_since_success: bool = False
    peak_in_flight: int = 0
    peak_outstanding: int = 0
    _closed: set[int] = attrs.field(factory=set)

    # ------------------------------------------------------------------ bookkeeping

    @property
    def alive_resources(self) -> list[FakeResource]:
        """Created, and neither disposed (exit begun) nor destroyed."""
        return [r for r in self.created if id(r) not in self._closed]

    @property
    def outstanding(self) -> int:
        """Resources that exist or are being created: what ``max`` bounds."""
        return self.in_flight + len(self.alive_resources)

    @property
    def closed(self) -> list[FakeResource]:
        """Resources whose dispose / exit / destroy has begun, in creation order."""
        return [r for r in self.created if id(r) in self._closed]

    @property
    def gracefully_closed(self) -> list[FakeResource]:
        """Disposed (callbacks form) or whose context manager exited normally (open form)."""
        normal = {id(r) for r, kind in self.exits if kind == "normal"}
        return [r for r in self.created if r in self.disposed or id(r) in normal]

    def note_removed(self, resource: FakeResource) -> None:
        """The test is about to ``remove()`` this resource: from then on the pool no longer
        counts it (its dispose may start a moment later, in the background)."""
        self._note_closed(resource)

    def _note_closed(self, resource: FakeResource) -> None:
        self._closed.add(id(resource))

    def _update_peaks(self) -> None:
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.peak_outstanding = max(self.peak_outstanding, self.outstanding)

    # ------------------------------------------------------------------ callbacks

    async def acquire(self) -> FakeResource:
        self.attempts.append(trio.current_time())
        number = len(self.attempts)
        self.in_flight += 1
        self._update_peaks()
        try:
            if self.attempt_hook is not None:
                await self.attempt_hook(number)
            if self.acquire_hangs:
                await trio.sleep_forever()
            if self.late_delays:
                delay = self.late_delays.pop(0)
                with trio.CancelScope(shield=True):
                    await trio.sleep(delay)
            elif self.acquire_delay:
                await trio.sleep(self.acquire_delay)
            if self.fail_always or self.fail_next > 0:
                self.fail_next = max(0, self.fail_next - 1)
                error = AllocationError(f"allocation #{number} failed")
                self.errors.append(error)
                self.failed_since_success = True
                raise error
            resource = FakeResource(len(self.created), self.label)
            self.created.append(resource)
            self.created_at.append(trio.current_time())
            self.failed_since_success = False
        finally:
            self.in_flight -= 1
        self._update_peaks()
        return resource

    async def _dispose_behaviour(self, resource: FakeResource) -> None:
        # Like any real close, it does I/O: a dispose run in a cancelled scope is cut short
        # here, and never reaches ``dispose_finished``.
        await trio.lowlevel.checkpoint()
        if self.dispose_hangs or resource.dispose_hangs:
            await trio.sleep_forever()
        if resource.dispose_error is not None:
            raise resource.dispose_error
        self.dispose_finished.append(resource)

    async def dispose(self, resource: FakeResource) -> None:
        self.disposed.append(resource)
        self._note_closed(resource)
        await self._dispose_behaviour(resource)

    def destroy(self, resource: FakeResource) -> None:
        self.destroyed.append(resource)
        self._note_closed(resource)

    async def ping(self, resource: FakeResource) -> None:
        self.pinged.append(resource)
        if resource.ping_hangs:
            await trio.sleep_forever()
        if self.ping_delay:
            self.pinging.append(resource)
            try:
                await trio.sleep(self.ping_delay)
            finally:
                self.pinging.remove(resource)
        if not resource.alive:
            # The pool removes it now; its dispose follows in the background.
            self._note_closed(resource)
            raise PingError(f"{resource!r} is dead")

    @asynccontextmanager
    async def open(self) -> AsyncIterator[FakeResource]:
        resource = await self.acquire()
        try:
            yield resource
        except BaseException as exc:
            self.exits.append((resource, type(exc).__name__))
            self._note_closed(resource)
            raise
        self.exits.append((resource, "normal"))
        self._note_closed(resource)
        await self._dispose_behaviour(resource)

    # ------------------------------------------------------------------ pool options

    def options(self, form: str = CALLBACKS, *, ping: bool = False) -> dict[str, Any]:
        """Keyword arguments wiring this backend into a ``ResourcePool``."""
        if form == CALLBACKS:
            options: dict[str, Any] = {"acquire": self.acquire, "dispose": self.dispose}
        elif form == OPEN:
            options = {"open": self.open}
        else:  # pragma: no cover - a typo in a test
            raise AssertionError(form)
        options["destroy"] = self.destroy
        if ping:
            options["ping"] = self.ping
        return options


async def quiet() -> None:
    """Let every task run until all are blocked (the pool is at rest)."""
    await trio.testing.wait_all_tasks_blocked()


def make_pool(
    backend: FakeBackend, form: str = CALLBACKS, *, ping: bool = False, **options: Any
) -> trio_pool.ResourcePool[FakeResource]:
    """A ``ResourcePool`` over ``backend``; ``options`` are passed through."""
    return trio_pool.ResourcePool(**backend.options(form, ping=ping), **options)


def snapshot(pool: trio_pool.ResourcePool[Any]) -> dict[str, Any]:
    """The statistics fields the tests compare, as a dict (nicer assertion diffs)."""
    stats = pool.statistics()
    return {
        "allocated": stats.allocated,
        "available": stats.available,
        "queued": stats.queued,
    }


def idle_values(allocated: int) -> dict[str, Any]:
    """What ``snapshot`` shows for a quiet pool holding ``allocated`` idle resources."""
    return {"allocated": allocated, "available": allocated, "queued": 0}


@attrs.define(eq=False)
class Holder:
    """One acquirer, run as a task: checks a resource out and keeps it until told."""

    pool: Any
    name: str = ""
    order: list[str] | None = None
    state: str = "new"  # new -> waiting -> holding | failed | cancelled
    resource: FakeResource | None = None
    error: BaseException | None = None
    got_at: float | None = None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.done.set()

    async def _run(self) -> None:
        self.state = "waiting"
        with self.scope:
            try:
                self.resource = await self.pool.checkout()
            except trio_pool.TrioPoolError as exc:
                self.error = exc
                self.state = "failed"
                return
            self.got_at = trio.current_time()
            self.state = "holding"
            if self.order is not None:
                self.order.append(self.name)
            return
        self.state = "cancelled"

    def release(self) -> None:
        assert self.resource is not None
        self.pool.release(self.resource)
        self.state = "released"


async def start_holders(
    nursery: trio.Nursery, pool: Any, names: list[str], order: list[str] | None = None
) -> list[Holder]:
    """Start one Holder per name, each parked before the next starts (so arrival order is
    the list order)."""
    holders = []
    for name in names:
        holder = Holder(pool, name, order)
        nursery.start_soon(holder.run)
        await trio.testing.wait_all_tasks_blocked()
        holders.append(holder)
    return holders


def error_chain_contains(errors: list[BaseException], wanted: BaseException) -> bool:
    """True if ``wanted`` is in ``errors``, directly, as a cause/context, or inside a group."""
    seen: set[int] = set()
    stack: list[BaseException] = list(errors)
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if error is wanted:
            return True
        if isinstance(error, BaseExceptionGroup):
            stack.extend(error.exceptions)
        for linked in (error.__cause__, error.__context__):
            if linked is not None:
                stack.append(linked)
    return False
