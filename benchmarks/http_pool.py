"""HTTP/1.1 GET throughput and latency: ``trio_pool.Pool`` against the other Python clients.

One server, started once in a child process: the embedded target of ``trio-pool bench``
(``python -m trio_pool._server``, loopback only, a 12-byte ``200`` to every GET). The child
prints ``listening HOST PORT`` and exits when its stdin closes, so closing the pipe stops it,
and it dies with this process even on ``SIGKILL``. ``trio_pool._cli.embedded_server`` wraps
the same protocol, but as a Trio async context manager: it would tie the server to one
``trio.run``, and this benchmark needs it across many ``trio.run`` calls, ``asyncio.run``
calls and threads, so the child is started here with ``subprocess`` (the server code itself
is not copied).

Clients, each measured at concurrency 1, 10 and 100 (C tasks/threads, each looping on
``GET /``; the count per measurement is shared, so C=100 sends as many requests as C=1):

* ``Pool``: ``trio_pool.Pool(origin, connections=C, pipelining=1)``.
* ``Pool pipelined``: ``trio_pool.Pool(origin, connections=ceil(C/10), pipelining=10)``.
* ``h11 loop``: hand-written Trio + h11, one keep-alive connection per task, no pool at all:
  the h11 ceiling a pool on h11 can approach but not beat.
* ``httpx``: ``httpx.AsyncClient`` under ``trio.run`` (anyio's Trio backend, httpcore).
* ``aiohttp``: ``aiohttp.ClientSession`` under ``asyncio.run`` in this process (its own event
  loop; aiohttp's C parser when installed).
* ``urllib3``: one ``urllib3.PoolManager(maxsize=C, block=True)`` shared by C threads.

Every measurement opens a fresh client, lets every worker make 2 untimed requests (so the
connections exist and the code paths are warm), then times ``n`` requests (2,000 quick,
10,000 full), bounded by a time guard. Repetitions alternate: each one runs every
(concurrency, client) pair in an order rotated per repetition; the table shows medians, and
each ratio is the median of the per-repetition ratios (see ``_common.paired_ratio``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import select
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio
from _common import Options, Result, format_table, median, now, paired_ratio, quiet_gc, rotated

TITLE = (
    "HTTP/1.1 GET req/s and latency: trio_pool.Pool vs a Trio+h11 loop, httpx (trio), "
    "aiohttp (asyncio), urllib3 (threads), C = 1, 10, 100"
)

CONCURRENCIES = (1, 10, 100)
PIPELINING = 10
WARM_PER_WORKER = 2
SERVER_START_TIMEOUT = 10.0
SERVER_STOP_GRACE = 2.0
REQUEST_TIMEOUT = 10.0
"""Per-request timeout given to the peers that take one (httpx, aiohttp, urllib3)."""

POOL = "Pool"
PIPELINED = "Pool pipelined"
H11 = "h11 loop"
HTTPX = "httpx"
AIOHTTP = "aiohttp"
URLLIB3 = "urllib3"
CLIENTS = (POOL, PIPELINED, H11, HTTPX, AIOHTTP, URLLIB3)
OPTIONAL = {HTTPX: "httpx", AIOHTTP: "aiohttp", URLLIB3: "urllib3"}

# (numerator, denominator, target, concurrencies the target applies to)
TARGETS: tuple[tuple[str, str, float, tuple[int, ...]], ...] = (
    (POOL, H11, 0.90, CONCURRENCIES),
    (POOL, HTTPX, 5.0, CONCURRENCIES),
    (PIPELINED, AIOHTTP, 1.3, (10, 100)),
)


# ---------------------------------------------------------------------------------- server


@contextmanager
def _server() -> Iterator[tuple[str, int, int]]:
    """Run ``python -m trio_pool._server`` on loopback; yield (host, port, pid)."""
    import trio_pool

    package_parent = str(Path(trio_pool.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "trio_pool._server", "--host", "127.0.0.1", "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,  # Ctrl-C reaches this process only; we stop the child
    )
    try:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        line = b""
        deadline = now() + SERVER_START_TIMEOUT
        while not line.endswith(b"\n") and now() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - now()))
            chunk = os.read(fd, 256) if ready else b""
            if not chunk:
                break
            line += chunk
        fields = line.split()
        if len(fields) != 3 or fields[0] != b"listening" or not fields[2].isdigit():
            raise RuntimeError(f"the embedded server did not start (said {line!r})")
        yield "127.0.0.1", int(fields[2]), process.pid
    finally:
        assert process.stdin is not None
        process.stdin.close()  # the server's cue to exit
        try:
            process.wait(SERVER_STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _own_cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads."""
    times = os.times()
    return times.user + times.system


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (Linux ``/proc``), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------- samples


@dataclass
class _Load:
    """The shared state of one measurement's workers."""

    n: int
    concurrency: int
    server_pid: int
    remaining: int = 0
    warmed: int = 0
    errors: int = 0
    t0: float = 0.0
    t1: float = 0.0
    cut: bool = False

    def __post_init__(self) -> None:
        self.remaining = self.n
        self.latencies: list[float] = []
        self._cpu0: tuple[float | None, float] = (None, 0.0)
        self.server_cpu: float | None = None
        self.client_cpu = 0.0

    def start(self) -> None:
        """Open the timed window (CPU counters too)."""
        self._cpu0 = (_cpu_seconds(self.server_pid), _own_cpu_seconds())
        self.t0 = now()

    def stop(self) -> None:
        """Close the timed window."""
        self.t1 = now()
        server0, client0 = self._cpu0
        server1 = _cpu_seconds(self.server_pid)
        self.client_cpu = _own_cpu_seconds() - client0
        if server0 is not None and server1 is not None:
            self.server_cpu = server1 - server0

    def take(self) -> bool:
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


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


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def _sample(load: _Load) -> Sample:
    elapsed = load.t1 - load.t0
    server_cpu, client_cpu = load.server_cpu, load.client_cpu
    ordered = sorted(load.latencies)
    if not ordered:
        return Sample(0.0, math.nan, math.nan, 0, load.errors, load.cut, server_cpu, client_cpu)
    return Sample(
        rps=len(ordered) / elapsed,
        p50_ms=_percentile(ordered, 0.50) * 1e3,
        p99_ms=_percentile(ordered, 0.99) * 1e3,
        completed=len(ordered),
        errors=load.errors,
        cut=load.cut,
        server_cpu=server_cpu / elapsed if server_cpu is not None else None,
        client_cpu=client_cpu / elapsed,
    )


# ---------------------------------------------------------------------------------- trio

_Get = Callable[[], Awaitable[int]]  # one GET; returns the status


async def _trio_worker(get: _Get, load: _Load, all_warm: trio.Event, go: trio.Event) -> None:
    for _ in range(WARM_PER_WORKER):
        await get()
    load.warmed += 1
    if load.warmed == load.concurrency:
        all_warm.set()
    await go.wait()
    latencies = load.latencies
    while load.take():
        started = now()
        status = await get()
        latencies.append(now() - started)
        if status != 200:
            load.errors += 1


async def _trio_measure(
    client: str, host: str, port: int, server_pid: int, concurrency: int, n: int, guard: float
) -> _Load:
    load = _Load(n, concurrency, server_pid)
    async with AsyncExitStack() as stack:
        gets = await _open_trio_client(stack, client, host, port, concurrency)
        all_warm, go = trio.Event(), trio.Event()
        with trio.move_on_after(guard) as scope:
            async with trio.open_nursery() as nursery:
                for get in gets:
                    nursery.start_soon(_trio_worker, get, load, all_warm, go)
                await all_warm.wait()
                load.start()
                go.set()
        load.stop()
        load.cut = scope.cancelled_caught
    return load


async def _open_trio_client(
    stack: AsyncExitStack, client: str, host: str, port: int, concurrency: int
) -> list[_Get]:
    """Open ``client``; return one GET function per worker (shared or not)."""
    origin = f"http://{host}:{port}"
    if client in (POOL, PIPELINED):
        from trio_pool import Pool

        if client == POOL:
            pool = Pool(origin, connections=concurrency, pipelining=1)
        else:
            pool = Pool(
                origin, connections=math.ceil(concurrency / PIPELINING), pipelining=PIPELINING
            )
        await stack.enter_async_context(pool)

        async def pool_get() -> int:
            response = await pool.request("GET", "/")
            return response.status

        return [pool_get] * concurrency
    if client == HTTPX:
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        session = await stack.enter_async_context(
            httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT)
        )
        url = origin + "/"

        async def httpx_get() -> int:
            return (await session.get(url)).status_code

        return [httpx_get] * concurrency
    assert client == H11
    return [await _h11_connection(stack, host, port) for _ in range(concurrency)]


async def _h11_connection(stack: AsyncExitStack, host: str, port: int) -> _Get:
    """The h11 ceiling: one keep-alive connection, one request at a time, no pool."""
    import h11

    stream = await stack.enter_async_context(await trio.open_tcp_stream(host, port))
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target="/", headers=[("host", f"{host}:{port}")])
    end = h11.EndOfMessage()

    async def get() -> int:
        await stream.send_all(conn.send(request) + conn.send(end))  # type: ignore[operator]
        status = 0
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise RuntimeError(f"h11 loop: unexpected {event!r}")
        conn.start_next_cycle()
        return status

    return get


# ---------------------------------------------------------------------------------- asyncio


async def _aiohttp_measure(
    host: str, port: int, server_pid: int, concurrency: int, n: int, guard: float
) -> _Load:
    import aiohttp

    load = _Load(n, concurrency, server_pid)
    url = f"http://{host}:{port}/"
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        all_warm, go = asyncio.Event(), asyncio.Event()
        problems: list[Exception] = []

        async def get() -> int:
            async with session.get(url) as response:
                await response.read()
                return response.status

        async def worker() -> None:
            try:
                for _ in range(WARM_PER_WORKER):
                    await get()
            except Exception as exc:
                problems.append(exc)
                all_warm.set()  # do not leave everything() waiting for the guard
                raise
            load.warmed += 1
            if load.warmed == concurrency:
                all_warm.set()
            await go.wait()
            latencies = load.latencies
            while load.take():
                started = now()
                status = await get()
                latencies.append(now() - started)
                if status != 200:
                    load.errors += 1

        async def everything() -> None:
            tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
            try:
                await all_warm.wait()
                load.start()
                go.set()
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        try:
            await asyncio.wait_for(everything(), guard)
        except asyncio.TimeoutError:
            load.cut = True
        load.stop()
    if problems:
        raise problems[0]
    return load


# ---------------------------------------------------------------------------------- threads


def _urllib3_measure(
    host: str, port: int, server_pid: int, concurrency: int, n: int, guard: float
) -> _Load:
    import urllib3

    load = _Load(n, concurrency, server_pid)
    url = f"http://{host}:{port}/"
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)
    deadline = now() + guard
    timeout = urllib3.Timeout(total=REQUEST_TIMEOUT)
    problems: list[BaseException] = []

    def take() -> bool:
        with lock:
            return load.take()

    with urllib3.PoolManager(maxsize=concurrency, block=True) as manager:

        def get() -> int:
            response = manager.request("GET", url, retries=False, timeout=timeout)
            return response.status

        def worker() -> None:
            try:
                for _ in range(WARM_PER_WORKER):
                    get()
            except BaseException as exc:
                problems.append(exc)
                barrier.abort()
                return
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return
            latencies = load.latencies
            try:
                while take():
                    if now() > deadline:
                        load.cut = True
                        return
                    started = now()
                    status = get()
                    latencies.append(now() - started)
                    if status != 200:
                        with lock:
                            load.errors += 1
            except BaseException as exc:
                problems.append(exc)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        with suppress(threading.BrokenBarrierError):  # a worker failed: raised below
            barrier.wait(timeout=guard)
        load.start()
        for thread in threads:
            thread.join(max(0.0, deadline - now()) + REQUEST_TIMEOUT)
        load.stop()
        if problems:
            raise problems[0]
    return load


# ---------------------------------------------------------------------------------- harness


def _measure(
    client: str, server: tuple[str, int, int], concurrency: int, n: int, guard: float
) -> Sample:
    host, port, pid = server
    with quiet_gc():
        if client == AIOHTTP:
            load = asyncio.run(_aiohttp_measure(host, port, pid, concurrency, n, guard))
        elif client == URLLIB3:
            load = _urllib3_measure(host, port, pid, concurrency, n, guard)
        else:
            load = trio.run(_trio_measure, client, host, port, pid, concurrency, n, guard)
    return _sample(load)


def _available_clients() -> tuple[list[str], list[str]]:
    clients, notes = [], []
    for client in CLIENTS:
        module = OPTIONAL.get(client)
        if module is not None and importlib.util.find_spec(module) is None:
            notes.append(f"{client}: skipped ({module} is not installed; pip install '.[bench]')")
            continue
        clients.append(client)
    return clients, notes


def _collect(options: Options) -> dict[str, Any]:
    reps = options.reps(quick=3, full=5)
    n = 2_000 if options.quick else 10_000
    guard = 3.0 if options.quick else 20.0
    clients, notes = _available_clients()
    samples: dict[tuple[int, str], list[Sample]] = {
        (c, client): [] for c in CONCURRENCIES for client in clients
    }
    with _server() as server:
        for client in clients:  # warm-up, untimed: imports, first connections, JIT-free caches
            _measure(client, server, 10, 200, guard)
        for rep in range(reps):
            for concurrency in rotated(CONCURRENCIES, rep):
                for client in rotated(clients, rep):
                    samples[concurrency, client].append(
                        _measure(client, server, concurrency, n, guard)
                    )
    return {
        "requests": n,
        "repetitions": reps,
        "guard_s": guard,
        "clients": clients,
        "notes": notes,
        "samples": samples,
    }


def _fmt_cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _analyse(raw: dict[str, Any]) -> Result:
    clients: list[str] = raw["clients"]
    samples: dict[tuple[int, str], list[Sample]] = raw["samples"]
    failures: list[str] = []
    notes: list[str] = list(raw["notes"])

    def rps(c: int, client: str) -> list[float]:
        return [s.rps for s in samples[c, client]]

    rows = []
    for c in CONCURRENCIES:
        for client in clients:
            ss = samples[c, client]
            cut = sum(s.cut for s in ss)
            errors = sum(s.errors for s in ss)
            server_cpus = [s.server_cpu for s in ss if s.server_cpu is not None]
            rows.append(
                [
                    f"C={c}",
                    client,
                    f"{median(rps(c, client)):,.0f}",
                    f"{median([s.p50_ms for s in ss]):.3f}",
                    f"{median([s.p99_ms for s in ss]):.3f}",
                    _fmt_cpu(median(server_cpus) if server_cpus else None),
                    _fmt_cpu(median([s.client_cpu for s in ss])),
                    f"{cut}/{len(ss)}" if cut else "",
                    str(errors) if errors else "",
                ]
            )
            if cut:
                notes.append(
                    f"C={c} {client}: {cut} of {len(ss)} measurements cut by the"
                    f" {raw['guard_s']:g} s guard (req/s is over the requests completed)"
                )
            if errors:
                failures.append(f"C={c} {client}: {errors} non-200 responses")
    table = format_table(
        ["", "client", "req/s", "p50 ms", "p99 ms", "server CPU", "client CPU", "cut", "errors"],
        rows,
    )

    ratio_rows = []
    ratios: dict[str, dict[int, float | None]] = {}
    for num, den, target, where in TARGETS:
        name = f"{num} / {den}"
        ratios[name] = {}
        cells = []
        for c in CONCURRENCIES:
            if num not in clients or den not in clients:
                ratios[name][c] = None
                cells.append("-")
                continue
            ratio = paired_ratio(rps(c, num), rps(c, den))
            ratios[name][c] = ratio
            mark = ""
            if c in where and ratio < target:
                mark = " MISSED"
                failures.append(f"C={c}: {name} = {ratio:.2f}x < {target:g}x")
            cells.append(f"{ratio:.2f}x{mark}")
        applies = "C=" + ",".join(str(c) for c in where)
        ratio_rows.append([name, *cells, f">= {target:g}x at {applies}"])
    flatness = {}
    for client in (POOL, PIPELINED, H11):  # the h11 loop's: how much is the machine's
        flatness[client] = paired_ratio(rps(100, client), rps(10, client))
        ratio_rows.append(
            [
                f"flatness {client} C=100 / C=10",
                "",
                "",
                f"{flatness[client]:.2f}x",
                "(1.00x: no slow-down with 10x tasks)",
            ]
        )
    ratio_table = format_table(
        ["ratio of req/s", *(f"C={c}" for c in CONCURRENCIES), "target"], ratio_rows
    )

    spreads = [
        ((max(v) - min(v)) / median(v), f"C={c} {client}")
        for (c, client), ss in samples.items()
        if (v := [s.rps for s in ss]) and median(v) > 0
    ]
    worst_spread, worst_where = max(spreads)
    text = "\n".join(
        [
            f"{raw['requests']:,} GETs per measurement (after 2 untimed per worker), median of"
            f" {raw['repetitions']} alternating repetitions; one embedded server process;"
            f" guard {raw['guard_s']:g} s per measurement",
            "urllib3: one PoolManager shared by C threads; CPU columns: CPU-seconds per"
            " second of timed window (100% = one core busy)",
            "",
            table,
            *(f"note: {note}" for note in notes),
            "",
            ratio_table,
            "",
            "ratios are medians of per-repetition ratios (paired samples); targets are goals",
            f"noise: widest (max-min)/median req/s across repetitions = {worst_spread:.0%}"
            f" ({worst_where})",
        ]
    )
    data = {
        "requests": raw["requests"],
        "repetitions": raw["repetitions"],
        "guard_s": raw["guard_s"],
        "notes": raw["notes"],
        "samples": {
            f"C={c} {client}": [asdict(s) for s in ss] for (c, client), ss in samples.items()
        },
        "ratios": {name: {f"C={c}": r for c, r in by_c.items()} for name, by_c in ratios.items()},
        "flatness_c100_over_c10": flatness,
        "targets": {f"{num} / {den}": t for num, den, t, _ in TARGETS},
    }
    return Result(name="http", text=text, data=data, failures=failures)


def run(options: Options) -> Result:
    return _analyse(_collect(options))
