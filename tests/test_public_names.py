"""Every public name is exported once, from its documented place, and public classes that are
not meant to be subclassed are ``@typing.final`` (as trio does).

The public namespaces are ``trio_pool`` (everything), ``trio_pool.errors`` (the error
hierarchy again, documented as ``from trio_pool.errors import *``) and ``trio_pool.testing``.
The subpackages ``trio_pool.http`` and ``trio_pool.resources`` are private: they export
nothing.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import pytest

import trio_pool
import trio_pool.errors
import trio_pool.http
import trio_pool.resources
import trio_pool.testing

DOCS = Path(__file__).resolve().parent.parent / "docs"

# Classes meant to be subclassed: exceptions (users derive their own, and ``except`` needs the
# hierarchy), the ``Dispatcher`` ABC, ``PoolStats`` (``AgentStats`` extends it), and Protocols
# (implemented, not inherited from).
SUBCLASSABLE = {trio_pool.Dispatcher, trio_pool.PoolStats}

# Public classes not marked final *yet*: other parts of the core redesign (issue 11) add the
# decorator. Remove a class from here when it becomes final (the test says so).
NOT_YET_FINAL: set[str] = set()


def public(module: ModuleType) -> dict[str, object]:
    """What ``from module import <name>`` offers without an underscore (submodules aside)."""
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }


def public_classes() -> dict[str, type]:
    return {
        f"{module.__name__}.{name}": value
        for module in (trio_pool, trio_pool.testing)
        for name, value in public(module).items()
        if isinstance(value, type)
    }


def test_each_object_has_one_public_name() -> None:
    names: dict[int, list[str]] = defaultdict(list)
    for module in (trio_pool, trio_pool.testing):
        for name, value in public(module).items():
            if isinstance(value, type) or inspect.isfunction(value):
                names[id(value)].append(f"{module.__name__}.{name}")
    aliases = [sorted(found) for found in names.values() if len(found) > 1]
    assert aliases == []


def test_all_lists_exactly_the_public_names_once() -> None:
    for module in (trio_pool.testing, trio_pool.errors):
        listed = list(module.__all__)
        assert len(listed) == len(set(listed)), f"{module.__name__}.__all__ repeats a name"
        assert sorted(listed) == sorted(public(module)), module.__name__


def test_errors_is_the_error_hierarchy_of_trio_pool() -> None:
    errors = {
        name: value
        for name, value in public(trio_pool).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    }
    assert public(trio_pool.errors) == errors


def test_the_private_subpackages_export_nothing() -> None:
    assert public(trio_pool.http) == {}
    assert public(trio_pool.resources) == {}


@pytest.mark.parametrize("module", [trio_pool, trio_pool.testing], ids=lambda m: m.__name__)
def test_every_class_and_function_says_where_it_is_imported_from(module: ModuleType) -> None:
    """``__module__`` names the public package (reprs, tracebacks, pickles and the docs say
    ``trio_pool.Pool``), and importing it from there gives the very object."""
    for name, value in public(module).items():
        if not (isinstance(value, type) or inspect.isfunction(value)):
            continue  # type aliases
        assert value.__module__ == module.__name__, name
        assert getattr(importlib.import_module(value.__module__), value.__qualname__) is value


def test_every_testing_name_is_in_the_testing_reference() -> None:
    page = (DOCS / "testing.rst").read_text()
    assert ".. currentmodule:: trio_pool.testing" in page
    documented = re.findall(r"^\.\. auto(?:class|exception|function|data):: (\w+)$", page, re.M)
    assert sorted(documented) == sorted(public(trio_pool.testing))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="typing.final sets __final__ from 3.11")
def test_public_classes_are_final_unless_meant_to_be_subclassed() -> None:
    not_final = []
    now_final = []
    for name, cls in sorted(public_classes().items()):
        if cls in SUBCLASSABLE or issubclass(cls, BaseException):
            continue
        if getattr(cls, "_is_protocol", False):
            continue  # a Protocol (TaskStarter): implemented, not inherited from
        final = getattr(cls, "__final__", False)
        if not final and name not in NOT_YET_FINAL:
            not_final.append(name)
        if final and name in NOT_YET_FINAL:
            now_final.append(name)
    assert not_final == [], "public classes without @typing.final"
    assert now_final == [], "final now: remove these from NOT_YET_FINAL"
    print("not final yet:", ", ".join(sorted(NOT_YET_FINAL)))  # shown with -s / -rP


def test_exceptions_and_the_dispatcher_can_be_subclassed() -> None:
    for cls in [
        trio_pool.Dispatcher,
        trio_pool.TrioPoolError,
        trio_pool.testing.MockNotMatchedError,
    ]:
        assert not getattr(cls, "__final__", False), cls
