"""The tooling the code base promises, run as part of the suite: ruff (lint
and format), mypy (strict on the public modules), clang-format on the C++,
the extension module's stub against the module itself, and the import graph
of the package (no cycles).  The tools come with the test extra; a missing
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


def test_package_has_no_import_cycle():
    """Every ``from . import x`` / ``from .x import y`` inside the package,
    at any depth (function-level imports included), forms an acyclic graph."""
    modules = {p.stem: p for p in PACKAGE.glob('*.py')}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split('.')[0])
                else:
                    deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    assert graph, 'no modules found'
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError('import cycle: ' + ' -> '.join([*path[path.index(name) :], name]))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    # The check sees the edges it must: the server reaches the async side.
    assert '_async_port' in graph['_server'] and '_server' in graph['_async']
