"""Shared test configuration.

Being here (the first directory of the test tree without an ``__init__.py``), this file
makes pytest put ``tests/`` on ``sys.path``, so every test module, in any subdirectory, can
``from _helpers import assert_idle`` (mypy finds it the same way, from ``tests/*.py``).
"""
