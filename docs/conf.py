"""Sphinx configuration for the seedkit documentation."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src")))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import seedkit

project = "seedkit"
author = "seedkit maintainers"
copyright = "2026, seedkit maintainers"
release = seedkit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Attributes sections as :ivar: fields, so NamedTuple fields are not described twice.
napoleon_use_ivar = True
nitpicky = False
html_theme = "furo"
html_title = f"seedkit {release}"
exclude_patterns = ["_build"]
suppress_warnings = ["ref.python"]
