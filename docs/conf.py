"""Sphinx configuration of the brainjepa documentation (``make docs``; pages in Markdown through MyST).

Builds offline: no intersphinx, no remote images. References generated from the code: the CLI (sphinx-argparse
over ``brainjepa.cli.build_parser``), the workflow config (``_ext/brainjepa_docs.py`` renders
``workflow/schemas/config.schema.yaml``), the training and evaluation configs (autodoc and the ``dataclass-fields``
directive).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

import brainjepa  # noqa: E402

project = "brainjepa"
author = "brainjepa contributors"
copyright = "brainjepa contributors"
release = brainjepa.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinxarg.ext",
    "brainjepa_docs",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "README.md"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
myst_ref_domains = ["std", "py"]  # not sphinx-argparse's domain, which cannot resolve MyST links

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": False}
autodoc_mock_imports: list[str] = []
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"brainjepa {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
