"""Every Python example in the docs and the README runs, as written, with warnings as errors.

Each ``.. code-block:: python`` of ``docs/*.rst`` and each ```` ```python ```` block of
``README.md`` is a complete program; it runs in its own interpreter (so examples cannot
leak state into each other or into this process) with a bounded run time. An example that
only shows a fragment would have to say so by not being marked as Python.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_RST_BLOCK = re.compile(r"^\.\. code-block:: python\n((?:\n|   .*\n)+)", re.MULTILINE)
_MD_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _examples() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for page in sorted((ROOT / "docs").glob("*.rst")):
        text = page.read_text()
        for match in _RST_BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{page.name}:{line}", textwrap.dedent(match.group(1))))
    readme = (ROOT / "README.md").read_text()
    for match in _MD_BLOCK.finditer(readme):
        line = readme.count("\n", 0, match.start()) + 1
        found.append((f"README.md:{line}", match.group(1)))
    return found


EXAMPLES = _examples()


def test_the_docs_have_examples() -> None:
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize(("where", "code"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_example_runs(where: str, code: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stderr}"
