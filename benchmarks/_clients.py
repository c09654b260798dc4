"""One measurement of one HTTP client: C workers share ``n`` GETs, bounded in time.

Theory of operation
-------------------
:func:`measure` opens a fresh client of the given kind, starts C workers (Trio tasks, asyncio
tasks or threads), lets each make ``warm`` untimed requests (so the connections exist and the
code paths are warm), then opens the timed window: the workers take requests from a shared
count until it runs out, recording each request's latency (call to body fully read). Every
response is checked: a status other than 200 or a body of the wrong length counts as an error.

Both phases are capped in time: set-up (connect and warm) gets ``window`` plus
:data:`SETUP_PER_CONNECTION` per connection and :data:`SETUP_PER_WORKER` per worker, the
timed window ``window``. The sample is taken the moment the window closes (all work done, or
the cap reached, whichever is first), *before* the stragglers are cancelled and the client
closed, so a slow clean-up cannot distort it. A cell that hits a cap is *capped*: its rate
is over the requests completed in the window, zero if it never got through set-up. Clean-up
is bounded too: by the cancel scope for the Trio clients, by cancelling the tasks for
aiohttp, by not waiting for urllib3's straggling threads (each ends with its current
request), and by running httpx and httpcore in a child process that is killed if it overruns
(see :data:`ISOLATED`).

The cyclic GC stays on (what users run) unless ``gc_enabled=False``; either way it is
collected before the client opens. CPU is this process's ``getrusage(RUSAGE_SELF)`` user +
system time over the timed window (all threads; a child's own for the isolated clients).
The pools (and aiohttp's connector) hold at most :data:`MAX_CONNECTIONS` connections, so at
C=10,000 most requests wait in the client's queue; the loops hold one per worker.

The clients (:data:`CLIENTS`; add one by naming it there and teaching
:func:`_open_trio_client` or :func:`_measure_here` to open it):

* ``Pool``: ``trio_pool.Pool(origin, connections=C, pipelining=1)``.
* ``Pool pipelined``: ``trio_pool.Pool(origin, connections=ceil(C/10), pipelining=10)``.
* ``BalancedPool``: ``trio_pool.BalancedPool([a, b], connections=ceil(C/2))`` over the
  server's two upstreams (so C connections in all).
* ``raw loop``, ``fast loop``, ``h11 loop``: the bare loops of ``_loops.py`` (one keep-alive
  connection per task, no pool, on ``Pool``'s I/O path): the I/O ceiling, a minimal
  ``bytes.find`` parser, and h11.
* ``httpx``: ``httpx.AsyncClient`` under ``trio.run`` (anyio's Trio backend, on httpcore).
* ``httpcore``: ``httpcore.AsyncConnectionPool`` under ``trio.run``, without httpx on top.
* ``httpx/trio_pool``: ``httpx.AsyncClient`` under ``trio.run`` over
  ``trio_pool.httpx.AsyncTransport(Pool(origin, connections=C))``.
* ``aiohttp``: ``aiohttp.ClientSession`` under ``asyncio.run`` in this process.
* ``httpx-aiohttp``: ``httpx.AsyncClient`` under ``asyncio.run`` over httpx-aiohttp's
  ``AiohttpTransport`` (the asyncio counterpart of ``httpx/trio_pool``).
* ``urllib3``: one ``urllib3.PoolManager(maxsize=C, block=True)`` shared by C threads.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import select
import ssl
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol

import trio
from _common import now, own_cpu_seconds
from _loops import LOOPS
from _servers import cpu_seconds

if TYPE_CHECKING:
    import httpx

POOL = "Pool"
PIPELINED = "Pool pipelined"
BALANCED = "BalancedPool"
H11 = "h11 loop"
RAW = "raw loop"
FAST = "fast loop"
HTTPX = "httpx"
HTTPCORE = "httpcore"
AIOHTTP = "aiohttp"
URLLIB3 = "urllib3"
HTTPX_TRIO_POOL = "httpx/trio_pool"
HTTPX_AIOHTTP = "httpx-aiohttp"
CLIENTS = (
    POOL,
    PIPELINED,
    BALANCED,
    RAW,
    FAST,
    H11,
    HTTPX,
    HTTPX_TRIO_POOL,
    HTTPCORE,
    AIOHTTP,
    HTTPX_AIOHTTP,
    URLLIB3,
)
OPTIONAL = {
    HTTPX: "httpx",
    HTTPX_TRIO_POOL: "httpx",
    HTTPCORE: "httpcore",
    AIOHTTP: "aiohttp",
    HTTPX_AIOHTTP: "httpx_aiohttp",
    URLLIB3: "urllib3",
}

PIPELINING = 10
MAX_CONNECTIONS = 1000
"""The most connections a pooled client opens (C=10,000 queues the rest of the requests)."""
LOOP_CLIENTS = frozenset(LOOPS)
"""One connection per worker: not run beyond :data:`MAX_CONNECTIONS` workers."""
THREADED = frozenset({URLLIB3})
"""One thread per worker: not run beyond :data:`MAX_CONNECTIONS` workers either."""
REQUEST_TIMEOUT = 10.0
"""Per-request timeout given to the peers that take one (httpx, aiohttp, urllib3)."""
SETUP_PER_CONNECTION = 0.01
"""Seconds allowed per connection, on top of the window, to connect and warm up."""
SETUP_PER_WORKER = 0.002
"""Seconds allowed per worker on top of that: beyond MAX_CONNECTIONS workers, their warm-up
requests queue (10,000 of them take seconds)."""
CLOSE_GRACE = 2.0
"""How long an isolated child may take to close its client after reporting."""
ISOLATED = frozenset({HTTPX, HTTPCORE})
"""Clients measured in a child process, killed if it overruns: cancelling 1,000 in-flight
requests takes them 30 s (httpx) and 120 s (httpcore) on the project's machine, and that
cleanup is shielded from cancellation, so no time guard inside the process can bound it."""


@dataclass(frozen=True)
class Target:
    """What one measurement requests: two origins (upstreams), a path and its body size."""

    origins: tuple[str, str]
    path: str
    body_size: int
    cafile: str | None
    """The CA to trust for https; None for http."""
    server_pids: tuple[int, ...]

    @property
    def url(self) -> str:
        return self.origins[0] + self.path

    def ssl_context(self) -> ssl.SSLContext | None:
        return None if self.cafile is None else ssl.create_default_context(cafile=self.cafile)

    def server_cpu(self) -> float | None:
        """CPU seconds used by the server's processes so far, or None."""
        seconds = [cpu_seconds(pid) for pid in self.server_pids]
        return None if None in seconds else sum(s for s in seconds if s is not None)


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    completed: int
    errors: int
    cut: bool
    server_cpu: float | None
    client_cpu: float
    cpu_us: float = math.nan
    """This process's CPU microseconds per completed request in the window (getrusage)."""
    gc_enabled: bool = True


def connections(concurrency: int) -> int:
    """How many connections a pooled client gets at ``concurrency``."""
    return min(concurrency, MAX_CONNECTIONS)


@dataclass
class _Load:
    """The shared state of one measurement's workers.

    The timed window is opened by :meth:`start` once every worker is warm, and closed by
    :meth:`stop` when the last worker is done or the window's time is up, whichever comes
    first; the sample is taken at that moment, before the client is closed (or cancelled).
    """

    target: Target
    n: int
    concurrency: int
    warm: int
    window: float
    report: Callable[[Sample], None]
    """Called with the sample the moment the window closes (a child prints it)."""
    remaining: int = 0
    warmed: int = 0
    finished: int = 0
    errors: int = 0
    t0: float | None = None
    t1: float | None = None
    deadline: float = math.inf
    cut: bool = False
    latencies: list[float] = field(default_factory=list)
    server_cpu: float | None = None
    client_cpu: float = 0.0
    _cpu0: tuple[float | None, float] = (None, 0.0)

    def __post_init__(self) -> None:
        self.remaining = self.n

    def start(self) -> None:
        """Open the timed window (CPU counters too)."""
        self._cpu0 = (self.target.server_cpu(), own_cpu_seconds())
        self.t0 = now()
        self.deadline = self.t0 + self.window

    def stop(self) -> Sample:
        """Close the timed window; cut if some work was left. Returns the sample."""
        self.t1 = now()
        self.cut = self.finished < self.concurrency
        server0, client0 = self._cpu0
        server1 = self.target.server_cpu()
        self.client_cpu = own_cpu_seconds() - client0
        if server0 is not None and server1 is not None:
            self.server_cpu = server1 - server0
        sample = self._sample(sorted(self.latencies))
        self.report(sample)
        return sample

    def take(self) -> bool:
        if self.remaining <= 0 or now() > self.deadline:
            return False
        self.remaining -= 1
        return True

    def check(self, status: int, size: int) -> None:
        if status != 200 or size != self.target.body_size:
            self.errors += 1

    def _sample(self, ordered: list[float]) -> Sample:
        if not ordered or self.t0 is None or self.t1 is None:
            return Sample(
                0.0, math.nan, math.nan, 0, self.errors, True, None, 0.0, gc_enabled=gc.isenabled()
            )
        elapsed = self.t1 - self.t0
        return Sample(
            rps=len(ordered) / elapsed,
            p50_ms=_percentile(ordered, 0.50) * 1e3,
            p99_ms=_percentile(ordered, 0.99) * 1e3,
            completed=len(ordered),
            errors=self.errors,
            cut=self.cut,
            server_cpu=self.server_cpu / elapsed if self.server_cpu is not None else None,
            client_cpu=self.client_cpu / elapsed,
            cpu_us=self.client_cpu / len(ordered) * 1e6,
            gc_enabled=gc.isenabled(),
        )


def _ignore_sample(sample: Sample) -> None:
    pass


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def measure(
    client: str,
    target: Target,
    concurrency: int,
    n: int,
    warm: int,
    window: float,
    *,
    gc_enabled: bool = True,
) -> Sample:
    """Measure ``client`` once: ``n`` GETs of ``target`` by ``concurrency`` workers.

    Connecting and warming up may take ``window`` plus :data:`SETUP_PER_CONNECTION` per
    connection; the timed window at most ``window`` seconds. The cyclic GC runs unless
    ``gc_enabled`` is False.
    """
    spec = (client, target, concurrency, n, warm, window, gc_enabled)
    if client in ISOLATED:
        return _measure_in_child(*spec)
    return _measure_here(*spec)


def _setup_cap(client: str, concurrency: int, window: float) -> float:
    """Seconds allowed to connect and warm up (see the module docstring)."""
    opened = concurrency if client in LOOP_CLIENTS | THREADED else connections(concurrency)
    return window + SETUP_PER_CONNECTION * opened + SETUP_PER_WORKER * concurrency


@contextmanager
def _gc_mode(enabled: bool) -> Iterator[None]:
    """Collect, then run with the cyclic GC on or off; restore it afterwards."""
    gc.collect()
    was_enabled = gc.isenabled()
    if enabled:
        gc.enable()
    else:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        else:
            gc.disable()


def _measure_here(
    client: str,
    target: Target,
    concurrency: int,
    n: int,
    warm: int,
    window: float,
    gc_enabled: bool = True,
    report: Callable[[Sample], None] = _ignore_sample,
) -> Sample:
    load = _Load(target, n, concurrency, warm, window, report)
    setup = _setup_cap(client, concurrency, window)
    with _gc_mode(gc_enabled):
        if client in (AIOHTTP, HTTPX_AIOHTTP):
            return asyncio.run(_asyncio_measure(client, load, setup))
        if client == URLLIB3:
            return _urllib3_measure(load, setup)
        return trio.run(_trio_measure, client, load, setup)


def _measure_in_child(
    client: str,
    target: Target,
    concurrency: int,
    n: int,
    warm: int,
    window: float,
    gc_enabled: bool,
) -> Sample:
    """Run :func:`_measure_here` in ``python _clients.py SPEC``; kill it if it overruns.

    The child prints the sample as soon as its window closes, then closes its client; that
    close is what may take minutes, so the child gets :data:`CLOSE_GRACE` and is then killed.
    """
    spec = json.dumps([client, asdict(target), concurrency, n, warm, window, gc_enabled])
    limit = window + _setup_cap(client, concurrency, window) + CLOSE_GRACE
    with subprocess.Popen(
        [sys.executable, __file__, spec],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    ) as child:
        assert child.stdout is not None
        fd = child.stdout.fileno()
        deadline = now() + limit
        line = b""
        while not line.endswith(b"\n") and now() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - now()))
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                break
            line += chunk
        try:
            child.wait(CLOSE_GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
    if not line.endswith(b"\n"):
        return Sample(0.0, math.nan, math.nan, 0, 0, True, None, 0.0, gc_enabled=gc_enabled)
    return Sample(**json.loads(line))


def _child_main(spec: str) -> None:
    client, target, concurrency, n, warm, window, gc_enabled = json.loads(spec)
    target["origins"] = tuple(target["origins"])
    target["server_pids"] = tuple(target["server_pids"])
    _measure_here(
        client, Target(**target), concurrency, n, warm, window, gc_enabled, report=_print_sample
    )


def _print_sample(sample: Sample) -> None:
    print(json.dumps(asdict(sample)), flush=True)


# ---------------------------------------------------------------------------------- trio

_Get = Callable[[], Awaitable[tuple[int, int]]]  # one GET; returns (status, body bytes)


class _Event(Protocol):
    """What a worker needs of an event: ``trio.Event`` and ``asyncio.Event`` both fit."""

    def set(self) -> None: ...
    async def wait(self) -> object: ...


async def _worker(get: _Get, load: _Load, all_warm: _Event, go: _Event, all_done: _Event) -> None:
    """One worker's warm-up then measured GETs; the same loop on trio and on asyncio (it only
    awaits ``get()`` and the events)."""
    for _ in range(load.warm):
        await get()
    load.warmed += 1
    if load.warmed == load.concurrency:
        all_warm.set()
    await go.wait()
    latencies = load.latencies
    while load.take():
        started = now()
        status, size = await get()
        latencies.append(now() - started)
        load.check(status, size)
    load.finished += 1
    if load.finished == load.concurrency:
        all_done.set()


async def _trio_measure(client: str, load: _Load, setup: float) -> Sample:
    all_warm, go, all_done = trio.Event(), trio.Event(), trio.Event()
    async with AsyncExitStack() as stack:
        gets = await _open_trio_client(stack, client, load.target, load.concurrency)
        async with trio.open_nursery() as nursery:
            for get in gets:
                nursery.start_soon(_worker, get, load, all_warm, go, all_done)
            with trio.move_on_after(setup):
                await all_warm.wait()
            if all_warm.is_set():
                load.start()
                go.set()
                with trio.move_on_after(load.window):
                    await all_done.wait()
            sample = load.stop()
            nursery.cancel_scope.cancel()  # the stragglers of a cut measurement
    return sample


async def _open_trio_client(
    stack: AsyncExitStack, client: str, target: Target, concurrency: int
) -> list[_Get]:
    """Open ``client`` (no I/O yet); return one GET function per worker (shared or not)."""
    if client in LOOPS:
        loop = LOOPS[client]
        return [
            loop(stack, target.origins[0], target.path, target.cafile) for _ in range(concurrency)
        ]
    if client in (HTTPX, HTTPCORE):
        return [await _httpcore_get(stack, client, target, concurrency)] * concurrency
    from trio_pool import BalancedPool, Pool

    context = target.ssl_context()
    pool: Pool | BalancedPool
    if client == HTTPX_TRIO_POOL:
        import httpx

        from trio_pool.httpx import AsyncTransport

        pool = Pool(target.origins[0], connections=connections(concurrency), ssl_context=context)
        await stack.enter_async_context(pool)
        session = await stack.enter_async_context(
            httpx.AsyncClient(transport=AsyncTransport(pool), timeout=REQUEST_TIMEOUT)
        )
        return [_httpx_get(session, target.url)] * concurrency
    if client == POOL:
        pool = Pool(
            target.origins[0],
            connections=connections(concurrency),
            pipelining=1,
            ssl_context=context,
        )
    elif client == PIPELINED:
        pool = Pool(
            target.origins[0],
            connections=connections(math.ceil(concurrency / PIPELINING)),
            pipelining=PIPELINING,
            ssl_context=context,
        )
    else:
        assert client == BALANCED
        pool = BalancedPool(
            list(target.origins),
            connections=math.ceil(connections(concurrency) / 2),
            ssl_context=context,
        )
    await stack.enter_async_context(pool)
    path = target.path

    async def pool_get() -> tuple[int, int]:
        response = await pool.request("GET", path)
        return response.status, len(response.body)

    return [pool_get] * concurrency


def _httpx_get(session: httpx.AsyncClient, url: str) -> _Get:
    """One GET through an httpx client, whatever its transport (on trio or asyncio)."""

    async def httpx_get() -> tuple[int, int]:
        response = await session.get(url)
        return response.status_code, len(response.content)

    return httpx_get


async def _httpcore_get(
    stack: AsyncExitStack, client: str, target: Target, concurrency: int
) -> _Get:
    """httpx's AsyncClient, or the httpcore pool underneath it used directly."""
    url = target.url
    context = target.ssl_context()
    if client == HTTPX:
        import httpx

        most = connections(concurrency)
        limits = httpx.Limits(max_connections=most, max_keepalive_connections=most)
        session = await stack.enter_async_context(
            httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT, verify=context or True)
        )
        return _httpx_get(session, url)
    import httpcore

    pool = await stack.enter_async_context(
        httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=connections(concurrency),
            max_keepalive_connections=connections(concurrency),
        )
    )

    async def httpcore_get() -> tuple[int, int]:
        response = await pool.request("GET", url)
        return response.status, len(response.content)

    return httpcore_get


# ---------------------------------------------------------------------------------- asyncio


@asynccontextmanager
async def _asyncio_get(client: str, load: _Load) -> AsyncIterator[_Get]:
    """aiohttp's session, or httpx over httpx-aiohttp's transport on that session."""
    import aiohttp

    url = load.target.url
    connector = aiohttp.TCPConnector(
        limit=connections(load.concurrency), ssl=load.target.ssl_context() or True
    )
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if client == HTTPX_AIOHTTP:
            import httpx
            from httpx_aiohttp import AiohttpTransport

            transport = AiohttpTransport(client=session, verify=load.target.ssl_context() or True)
            async with httpx.AsyncClient(transport=transport, timeout=REQUEST_TIMEOUT) as hx:
                yield _httpx_get(hx, url)
            return

        async def get() -> tuple[int, int]:
            async with session.get(url) as response:
                return response.status, len(await response.read())

        yield get


async def _asyncio_measure(client: str, load: _Load, setup: float) -> Sample:
    async with _asyncio_get(client, load) as get:
        all_warm, go, all_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
        problems: list[Exception] = []

        async def worker() -> None:
            try:
                await _worker(get, load, all_warm, go, all_done)
            except Exception as exc:
                problems.append(exc)
                all_warm.set()  # do not leave the measurement waiting for its guard
                all_done.set()
                raise

        tasks = [asyncio.ensure_future(worker()) for _ in range(load.concurrency)]
        try:
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(all_warm.wait(), setup)
            if all_warm.is_set() and not problems:
                load.start()
                go.set()
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(all_done.wait(), load.window)
            sample = load.stop()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    if problems:
        raise problems[0]
    return sample


# ---------------------------------------------------------------------------------- threads


def _urllib3_measure(load: _Load, setup: float) -> Sample:
    import urllib3

    url = load.target.url
    lock = threading.Lock()
    # The last thread to arrive opens the window, before any thread is released.
    barrier = threading.Barrier(load.concurrency + 1, action=load.start)
    timeout = urllib3.Timeout(total=REQUEST_TIMEOUT)
    problems: list[tuple[float, BaseException]] = []  # (when, what)

    def take() -> bool:
        with lock:
            return load.take()

    manager = urllib3.PoolManager(
        maxsize=load.concurrency, block=True, ssl_context=load.target.ssl_context()
    )
    with manager:

        def get() -> tuple[int, int]:
            response = manager.request("GET", url, retries=False, timeout=timeout)
            return response.status, len(response.data)

        def worker() -> None:
            try:
                for _ in range(load.warm):
                    get()
                barrier.wait()
                latencies = load.latencies
                while take():
                    started = now()
                    status, size = get()
                    latencies.append(now() - started)
                    with lock:
                        load.check(status, size)
            except threading.BrokenBarrierError:
                return
            except BaseException as exc:
                problems.append((now(), exc))
                barrier.abort()

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(load.concurrency)]
        for thread in threads:
            thread.start()
        with suppress(threading.BrokenBarrierError):  # a worker failed (raised below) or setup
            barrier.wait(timeout=setup)
        if load.t0 is not None:
            end = now() + load.window
            for thread in threads:
                thread.join(max(0.0, end - now()))
            load.finished = sum(not thread.is_alive() for thread in threads)
        sample = load.stop()
        barrier.abort()
        # The stragglers of a cut measurement are not waited for: each ends on its own with
        # its current request (take() refuses more), at most REQUEST_TIMEOUT later. What they
        # raise after the window closed (timeouts, mostly) is a consequence of the cut.
        early = [exc for when, exc in problems if load.t1 is None or when <= load.t1]
        if early:
            raise early[0]
    return sample


if __name__ == "__main__":
    _child_main(sys.argv[1])
