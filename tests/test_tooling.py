"""The tooling the code base promises, run as part of the suite: ruff (lint
and format), mypy (strict on the public modules), clang-format on the C++,
the extension module's stub against the module itself (the package's
import graph: test_layers.py).  The tools come with the test extra; a missing
tool fails here rather than passing silently."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'python' / 'mpserver'
CPP_SOURCES = sorted([*ROOT.glob('cpp/*.[ch]pp'), *ROOT.glob('bindings/*.[ch]pp'), *ROOT.glob('tests/cpp/*.cpp')])


def _tool(name: str) -> str:
    """The tool installed next to this interpreter (the venv's), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f'{name} is not installed: it comes with the test extra (pip install ".[test]")', pytrace=False)
    return found


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_lint_is_clean():
    proc = _run(_tool('ruff'), 'check', '--no-cache', '.')
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_ruff_format_is_clean():
    proc = _run(_tool('ruff'), 'format', '--check', '--no-cache', '.')
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_mypy_is_clean():
    # The configuration (strict on the public modules) is in pyproject.toml.
    proc = _run(_tool('mypy'), '--no-incremental')
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_cpp_is_clang_formatted():
    assert CPP_SOURCES, 'no C++ sources found'
    proc = _run(_tool('clang-format'), '--dry-run', '--Werror', *map(str, CPP_SOURCES))
    assert proc.returncode == 0, proc.stderr[-6000:]


def _stub_names() -> set[str]:
    tree = ast.parse((PACKAGE / '_core.pyi').read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_core_stub_declares_exactly_what_the_module_defines():
    from mpserver import _core

    defined = {n for n in vars(_core) if not n.startswith('__') or n == '__version__'}
    stub = _stub_names()
    assert defined - stub == set(), 'defined by _core but missing from _core.pyi'
    assert stub - defined == set(), 'declared in _core.pyi but not defined by _core'
