"""Every Python example in the docs and the README runs, as written, with warnings as errors.

Each ``.. code-block:: python`` of ``docs/*.rst`` and each ```` ```python ```` block of
``README.md`` is a complete program; it runs in its own interpreter (so examples cannot
leak state into each other or into this process) with a bounded run time. An example that
only shows a fragment would have to say so by not being marked as Python.
"""

from __future__ import annotations

import re
import textwrap

import pytest
from _python_run import ROOT, run_python

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
    result = run_python("-c", code)
    assert result.returncode == 0, f"{where} failed:\n{result.stderr}"
