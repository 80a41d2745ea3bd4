"""Sphinx configuration for the mpserver documentation.

Build (warnings are errors)::

    pip install '.[docs]'
    python -m sphinx -W -b html docs /tmp/docs-html

The pages are Markdown (MyST).  The API reference is generated from the
docstrings (numpy style) of the ``mpserver`` package: the installed one if
``import mpserver`` works, otherwise the source tree's ``python/`` directory
(with the C++ extension mocked if it has not been built).

Conventions of the Markdown pages (checked by ``tests/test_docs.py``): every
```` ```python ```` block is a complete script that the tests run; a fenced
block preceded by ``<!-- expected-output -->`` is the exact stdout of the
python block above it; ``<!-- run: python -m mpserver -->`` before a python
block runs it through ``python -m mpserver``.  Non-Python snippets use
``text``, ``console`` or ``bash`` fences.
"""

from __future__ import annotations

import importlib
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_TREE = os.path.join(os.path.dirname(HERE), 'python')

autodoc_mock_imports: list[str] = []


def _import_mpserver():
    try:
        return importlib.import_module('mpserver')
    except ImportError:
        pass
    if SOURCE_TREE not in sys.path:
        sys.path.insert(0, SOURCE_TREE)
    try:
        return importlib.import_module('mpserver')
    except ImportError:
        # The extension module is not built: document the Python layer anyway.
        for name in [m for m in sys.modules if m == 'mpserver' or m.startswith('mpserver.')]:
            del sys.modules[name]
        autodoc_mock_imports.append('mpserver._core')
        from sphinx.ext.autodoc.mock import mock

        with mock(autodoc_mock_imports):
            return importlib.import_module('mpserver')


def _version() -> str:
    try:
        return _import_mpserver().__version__
    except Exception:  # noqa: BLE001 - fall back to pyproject.toml
        with open(os.path.join(os.path.dirname(HERE), 'pyproject.toml'), encoding='utf-8') as f:
            m = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.M)
        return m[1] if m else 'unknown'


project = 'mpserver'
author = 'the mpserver authors'
copyright = 'the mpserver authors'
release = version = _version()

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
]

source_suffix = {'.md': 'markdown', '.rst': 'restructuredtext'}
root_doc = 'index'
# benchmark-run.md is what `benchmarks/bench.py --out docs/benchmark-run.md`
# writes: a raw run, not a page of the documentation.
exclude_patterns = ['_build', 'benchmark-run.md', 'Thumbs.db', '.DS_Store']

# MyST: anchors for headings down to ###, so pages can link to sections
# ([text](semantics.md#deliberate-differences-from-mpservice)).
myst_heading_anchors = 3

# autodoc + napoleon: numpy-style docstrings.
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = 'bysource'
autodoc_typehints = 'signature'
autodoc_class_signature = 'mixed'

html_theme = 'alabaster'
html_title = f'mpserver {release}'
html_theme_options = {
    'description': 'The mpservice.mpserver API on a C++ shared-memory core',
    'fixed_sidebar': True,
}
pygments_style = 'sphinx'
