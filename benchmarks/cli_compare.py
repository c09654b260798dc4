"""``trio-pool bench`` beside ``wrk`` and ``hey``, against one nginx, in one run.

Usage: ``python benchmarks/cli_compare.py [--seconds S]`` from a venv where trio_pool (or the
tree) is importable, with Debian's ``nginx``, ``wrk`` and ``hey`` installed (a tool that is
missing is left out). Every run is short (``--seconds``, default 3) and targets nginx on
127.0.0.1, started by ``_servers.py`` and stopped afterwards.

For each of C=10 and C=100 connections, plain and with 10 requests pipelined per connection
(``wrk`` through its pipelining script; ``hey`` cannot pipeline): req/s, p99 latency, and the
client's own CPU use (user + system time of the client process, from ``getrusage`` of
children) per request. On a shared machine req/s follows whoever gets the CPU; CPU per request
is the figure that still compares. The trio-pool line also shows the share of a core the bench
reports for itself (its measured run only, without interpreter start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _servers import start

PIPELINE_SCRIPT = """\
init = function(args)
   local r = {}
   for i = 1, 10 do r[i] = wrk.format(nil, "/") end
   req = table.concat(r)
end
request = function() return req end
"""


def _run(argv: list[str]) -> tuple[str, float]:
    """Run ``argv``; return its stdout and the CPU seconds (user + system) it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return completed.stdout, cpu


def _line(rps: float, p99_ms: float, cpu: float, seconds: float) -> str:
    per_request = cpu / (rps * seconds) * 1e6 if rps else float("nan")
    return (
        f"{rps:>9,.0f} req/s  p99 {p99_ms:>8.2f} ms  client CPU {cpu / seconds:4.0%} of a core, "
        f"{per_request:6.1f} us/request"
    )


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def trio_pool_bench(url: str, connections: int, pipelining: int, seconds: float) -> str:
    concurrency = connections * pipelining
    argv = [sys.executable, "-m", "trio_pool", "bench", url, "-d", str(seconds), "--json"]
    argv += ["-c", str(connections), "--concurrency", str(concurrency), "-p", str(pipelining)]
    out, cpu = _run(argv)
    result = json.loads(out)
    line = _line(result["rps"], result["latency_ms"]["p99"], cpu, result["duration_s"])
    return line + f"  (bench's own: {result['cpu']['client']:.0%})"


def wrk(url: str, connections: int, pipelining: int, seconds: float, script: Path) -> str:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url]
    if pipelining > 1:
        argv[1:1] = ["-s", str(script)]
    out, cpu = _run(argv)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    note = "  (wrk times a batch of 10)" if pipelining > 1 else ""
    return _line(rps, p99, cpu, seconds) + note


def hey(url: str, connections: int, seconds: float) -> str:
    out, cpu = _run(["hey", "-z", f"{seconds:g}s", "-c", str(connections), url])
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = float(re.search(r"99%\s+in\s+(\S+)", out).group(1)) * 1000  # type: ignore[union-attr]
    return _line(rps, p99, cpu, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    seconds = parser.parse_args().seconds
    with tempfile.TemporaryDirectory() as tmp, start("nginx") as server:
        script = Path(tmp) / "pipeline.lua"
        script.write_text(PIPELINE_SCRIPT)
        url = server.origins("http")[0] + "/"
        print(f"nginx {url} | {os.cpu_count()} cores | load average {os.getloadavg()}")
        for connections in (10, 100):
            for pipelining in (1, 10):
                print(f"--- C={connections}, -p {pipelining}")
                if shutil.which("wrk"):
                    print("  wrk      ", wrk(url, connections, pipelining, seconds, script))
                if shutil.which("hey") and pipelining == 1:
                    print("  hey      ", hey(url, connections, seconds))
                print("  trio-pool", trio_pool_bench(url, connections, pipelining, seconds))


if __name__ == "__main__":
    main()
