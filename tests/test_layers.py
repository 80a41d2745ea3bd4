"""The package's layers: which folder of ``python/mpserver`` may import which.

The rule is the table between ``<!-- layers:begin -->`` and
``<!-- layers:end -->`` in docs/architecture.md (folder, the side of the
process boundary it runs on, its role, what it may import); this test reads
that table, so the documentation and the check cannot drift apart.  Every
import of an mpserver module counts, at any depth (function-level imports
included); imports under ``if TYPE_CHECKING:`` never run and are left out.
A second test starts a real worker process and checks which mpserver
modules it loaded.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'python' / 'mpserver'
TABLE = ROOT / 'docs' / 'architecture.md'
FACE = '(face)'


def _table() -> dict[str, tuple[str, set[str]]]:
    """folder -> (where it runs, the folders it may import)."""
    text = TABLE.read_text(encoding='utf-8')
    m = re.search(r'<!-- layers:begin -->\n(.*?)<!-- layers:end -->', text, re.S)
    assert m, f'{TABLE} has no layers table'
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in m.group(1).splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        folder = cells[0].strip('`').rstrip('/')
        may = {c.strip().strip('`').rstrip('/') for c in cells[3].split(',') if c.strip()}
        rows[folder] = (cells[1], may)
    return rows


def _layer(module: str, folders: set[str]) -> str:
    """The table row of ``mpserver.x.y``: its folder, or the face."""
    parts = module.split('.')
    return parts[1] if len(parts) > 1 and parts[1] in folders else FACE


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix('')
    parts = list(rel.parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == 'TYPE_CHECKING':
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return skip


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every mpserver import in ``path`` that can run."""
    tree = ast.parse(path.read_text(encoding='utf-8'))
    skip = _type_checking_nodes(tree)
    here = _module_name(path)
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split('.')[0] == 'mpserver']
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = here.split('.')
                if not path.name == '__init__.py':
                    base = base[:-1]
                base = base[: len(base) - node.level + 1]
                module = '.'.join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ''
            if module.split('.')[0] != 'mpserver':
                continue
            if module == 'mpserver':  # from mpserver import _core / a submodule
                found += [(node.lineno, f'mpserver.{a.name}') for a in node.names]
            else:
                found.append((node.lineno, module))
    return found


def _violations(table: dict[str, tuple[str, set[str]]]) -> list[str]:
    folders = {f for f in table if f != FACE}
    out = []
    for path in sorted(PACKAGE.rglob('*.py')):
        me = _layer(_module_name(path), folders)
        allowed = table[me][1] if me in table else set()
        for line, target in _imports(path):
            it = _layer(target, folders)
            if it == me or it == FACE and target == 'mpserver':
                continue
            if me == FACE and 'every folder' in allowed:
                continue
            if it not in allowed:
                out.append(f'{path.relative_to(ROOT)}:{line} imports {target} ({me} may not import {it})')
    return out


def test_every_folder_is_in_the_table():
    table = _table()
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name.startswith('_') and p.name != '__pycache__'}
    assert folders == {f for f in table if f not in (FACE, '_core')}, 'docs/architecture.md and the package differ'


def test_no_import_goes_the_wrong_way():
    table = _table()
    assert table['_worker'][0] == 'worker' and table['_serving'][0] == 'main'
    problems = _violations(table)
    assert not problems, 'imports that break the layers of docs/architecture.md:\n' + '\n'.join(problems)


def test_worker_side_imports_only_worker_side():
    """A folder that runs in workers may import only folders that run there
    too (a rule on the table itself: the import check then enforces it)."""
    table = _table()
    for folder, (runs, may) in table.items():
        if runs in ('worker', 'both') and folder != FACE:
            main_only = sorted(m for m in may if table[m][0] == 'main')
            assert not main_only, f'{folder} runs in workers but may import main-only {main_only}'


def test_the_check_sees_a_wrong_way_import(tmp_path, monkeypatch):
    """The check is not vacuous: a worker-side module importing the serving
    layer, even inside a function, is reported."""
    fake = tmp_path / 'mpserver'
    (fake / '_worker').mkdir(parents=True)
    (fake / '_serving').mkdir()
    (fake / '_worker' / 'bad.py').write_text('def f():\n    from mpserver._serving.server import Server\n')
    (fake / '_serving' / 'server.py').write_text('from mpserver._wire import codec\n')  # allowed
    monkeypatch.setattr(sys.modules[__name__], 'PACKAGE', fake)
    monkeypatch.setattr(sys.modules[__name__], 'ROOT', tmp_path)
    problems = _violations(_table())
    assert problems == ['mpserver/_worker/bad.py:2 imports mpserver._serving.server (_worker may not import _serving)']


def test_package_has_no_import_cycle():
    """Module by module (any depth, function-level imports included), the
    imports form an acyclic graph."""
    modules = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
    graph = {m: {t for _, t in _imports(p) if t in modules and t != m} for m, p in modules.items()}
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
    # The check sees the edges it must: the server reaches the stream and the record.
    assert {'mpserver._serving.stream', 'mpserver._serving.running'} <= graph['mpserver._serving.server']


@pytest.mark.timeout(120)
def test_a_worker_process_loads_only_the_worker_side():
    """A real worker process, whose class comes from a module that imports
    only ``mpserver.Worker``, has loaded no main-side module of mpserver."""
    import _layer_workers
    import mpserver

    table = _table()
    folders = {f for f in table if f != FACE}
    with mpserver.Server(mpserver.ProcessServlet(_layer_workers.Modules, cpus=1)) as server:
        loaded = server.call(None)
    assert 'mpserver._worker.loops' in loaded, loaded  # it did look (the entry point itself runs as __main__)
    main_side = sorted(m for m in loaded if table.get(_layer(m, folders), ('main',))[0] == 'main')
    assert not main_side, f'a worker process imported main-side modules: {main_side}'
