"""Every program in ``examples/`` runs, as written, and the README lists every one of them.

Each ``examples/*.py`` whose name does not start with ``_`` (those are helper modules, such as
``_pgserver.py``) runs as ``python -W error examples/<name>.py`` in its own interpreter from the
repository root, and must exit 0. The examples check their own results and exit non-zero when
the library misbehaves, so this runs them as tests, not only as smoke. An example that imports
pg-purepy needs PostgreSQL: it carries the ``postgres`` marker and follows the integration
suite's rule (``tests/integration/availability.py``): skipped when pg-purepy or the server
binaries are missing, failed instead under ``TRIO_POOL_REQUIRE_POSTGRES=1``. One that imports
coredis needs ``redis-server``, by ``tests/integration/redis.py``'s rule likewise
(``TRIO_POOL_REQUIRE_REDIS=1``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _python_run import ROOT, run_python
from integration.availability import require_postgres
from integration.redis import require_redis

_IMPORTS_PG_PUREPY = re.compile(r"^(?:from|import) pg_purepy\b", re.MULTILINE)
_IMPORTS_COREDIS = re.compile(r"^(?:from|import) coredis\b", re.MULTILINE)
_MENTIONED = re.compile(r"examples/(\w+\.py)")


def _examples() -> list[Path]:
    return sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))


def _needs_postgres(example: Path) -> bool:
    return _IMPORTS_PG_PUREPY.search(example.read_text()) is not None


EXAMPLES = _examples()


def _readme_section(heading: str) -> str:
    """The text of the README's ``## heading`` section, up to the next ``## `` heading."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert match is not None, f"README.md has no '## {heading}' section"
    return match.group(1)


def test_there_are_examples() -> None:
    names = {example.name for example in EXAMPLES}
    assert "postgres_pool.py" in names
    assert len(names) >= 5


def test_the_readme_lists_every_example_and_no_other() -> None:
    listed = set(_MENTIONED.findall(_readme_section("Examples")))
    assert listed == {example.name for example in EXAMPLES}


@pytest.mark.parametrize(
    "example",
    [
        pytest.param(example, marks=[pytest.mark.postgres] if _needs_postgres(example) else [])
        for example in EXAMPLES
    ],
    ids=[example.name for example in EXAMPLES],
)
def test_example_runs(example: Path) -> None:
    if _needs_postgres(example):
        require_postgres()
    if _IMPORTS_COREDIS.search(example.read_text()):
        require_redis()
    result = run_python(str(example.relative_to(ROOT)))
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, f"{example.name} exited {result.returncode}\n{output}"
    assert result.stdout.strip(), f"{example.name} printed nothing\n{output}"
