"""Sphinx configuration for trio_pool's documentation.

Built with ``nox -s docs`` (``sphinx-build -W --keep-going -b html docs docs/_build/html``):
every warning is an error. The build needs no network access, so there is no intersphinx.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document the working tree, installed or not

import trio_pool  # noqa: E402

project = "trio_pool"
author = "The trio_pool developers"
copyright = "the trio_pool developers"
release = trio_pool.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
root_doc = "index"
pygments_style = "default"

# -- autodoc -------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_class_signature = "mixed"
autodoc_typehints_description_target = "documented"

# -- napoleon: Google-style docstrings -------------------------------------------------------
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

# -- HTML ------------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"trio_pool {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Trio-native, structured-concurrency pools",
    "fixed_sidebar": True,
}


# -- attribute docstrings of classes re-exported from private modules ------------------------
# trio_pool renames its public classes' ``__module__`` to ``trio_pool`` (so reprs say
# ``trio_pool.PoolStats``). autodoc reads attribute docstrings (``x: int`` followed by a
# string, as in ``PoolStats``) from the source of ``__module__``, which would then be the
# package's ``__init__.py``: point the classes that have such docstrings back at the module
# that defines them. Only the build sees this; the documented names stay ``trio_pool.X``.
def _restore_defining_modules() -> None:
    import pkgutil

    from sphinx.pycode import ModuleAnalyzer

    for info in pkgutil.walk_packages(trio_pool.__path__, "trio_pool."):
        analyzer = ModuleAnalyzer.for_module(info.name)
        documented = {scope for scope, _ in analyzer.find_attr_docs() if scope}
        for name in documented:
            public = getattr(trio_pool, name, None)
            if isinstance(public, type) and public.__module__ == "trio_pool":
                public.__module__ = info.name


_restore_defining_modules()
