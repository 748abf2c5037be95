"""Sphinx configuration for the seedkit documentation."""

from __future__ import annotations

import importlib.util
import os
import sys

from sphinx.util import logging

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
# The docs extra (pip install -e ".[docs]") brings both of these; CI checks that the
# built pages use them. Without them the pages still build: formulas then need
# MathJax from the network and the changelog shows as Markdown source.
#: MathJax bundled into _static/mathjax: formulas render offline.
OFFLINE_MATH = importlib.util.find_spec("sphinx-mathjax-offline") is not None
#: The changelog (CHANGELOG.md) rendered as a page, not shown as Markdown source.
MARKDOWN = importlib.util.find_spec("myst_parser") is not None
if OFFLINE_MATH:
    extensions.append("sphinx-mathjax-offline")
if MARKDOWN:
    extensions.append("myst_parser")
    source_suffix = {".rst": "restructuredtext"}  # Markdown only through the changelog's include
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
html_static_path = ["_static/css"]
html_css_files = ["seedkit.css"]
exclude_patterns = ["_build"]
suppress_warnings = ["ref.python"]

#: The changelog page: CHANGELOG.md rendered (its "# Changelog" is the title), or its source.
_CHANGELOG = {
    True: ".. include:: ../CHANGELOG.md\n   :parser: myst_parser.sphinx_\n",
    False: (
        "Changelog\n=========\n\n.. literalinclude:: ../CHANGELOG.md\n   :language: markdown\n"
    ),
}


def _changelog_source(app, docname: str, source: list[str]) -> None:
    """Fill the changelog page (``docs/changelog.rst`` holds only a placeholder)."""
    if docname == "changelog":
        source[0] = source[0].replace(".. changelog-body::\n", _CHANGELOG[MARKDOWN])


def setup(app) -> None:
    app.connect("source-read", _changelog_source)
    missing = [
        name
        for name, present in (("sphinx-mathjax-offline", OFFLINE_MATH), ("myst-parser", MARKDOWN))
        if not present
    ]
    if missing:
        logging.getLogger(__name__).info(
            "seedkit docs: %s not installed (pip install -e '.[docs]'): formulas need MathJax "
            "from the network and the changelog shows as Markdown source",
            ", ".join(missing),
        )
