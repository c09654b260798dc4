"""Developer sessions. ``nox -s lint typecheck docs tests`` is the gate the README and CI run;
``bench`` runs the benchmark suite."""

from __future__ import annotations

import shutil

import nox

nox.options.sessions = ["lint", "typecheck", "docs", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

# Branch-coverage floor for the test suite. Only ever raise it.
COVERAGE_FLOOR = 94


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite with branch coverage; extra arguments go to pytest."""
    session.install("-e", ".[test]")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "report", f"--fail-under={COVERAGE_FLOOR}")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff's linter and formatter check over the whole tree."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, its tests, examples, benchmarks and this file."""
    session.install("-e", ".[typecheck]")
    session.run("mypy", "trio_pool", "tests", "examples", "benchmarks", "noxfile.py")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx documentation; any warning fails the build."""
    session.install("-e", ".[docs]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite (extra arguments go to benchmarks/run.py).

    The HTTP benchmark measures against nginx when it is installed, else against the embedded
    server. ``--install-nginx`` (consumed here) first installs Debian's nginx with apt-get
    when it is missing; nothing is installed on the system without it.
    """
    args = list(session.posargs)
    if "--install-nginx" in args:
        args.remove("--install-nginx")
        if not (shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")):
            session.run("apt-get", "install", "-y", "nginx", external=True)
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/run.py", *args)
