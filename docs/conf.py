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
