"""Sphinx configuration for the flask-memqueue documentation.

Built with warnings as errors by ``tests/test_docs.py`` (``sphinx-build -W``),
so a broken link, a reST error in a docstring or a page left out of the
toctree fails the test suite. No intersphinx: the build needs no network.
Pages are reST or Markdown (MyST).
"""

from __future__ import annotations

import flask_memqueue

project = "Flask-MemQueue"
author = "the flask-memqueue authors"
copyright = "2026, the flask-memqueue authors"
version = release = flask_memqueue.__version__

extensions = ["sphinx.ext.autodoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True}

html_theme = "furo"
html_title = f"Flask-MemQueue {release}"
html_static_path = ["_static"]
