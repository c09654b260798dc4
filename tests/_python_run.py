"""Runs a Python program in a fresh interpreter, as a user would: for the docs and examples tests.

A fresh interpreter per program keeps examples from leaking state into each other or into the
test process. It runs from the repository root with trio_pool importable from the source tree
(it need not be installed), with warnings as errors, and with a bound on its run time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The longest a single program may run (they take a second or a few; this is a hang guard).
TIMEOUT = 50


def run_python(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs ``python -W error *args`` from the repository root; returns its exit and output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-W", "error", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        env=env,
        check=False,
    )
