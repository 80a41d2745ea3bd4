"""Every example and every documented command runs the way its docs say.

**Examples.**  Each ``examples/*.py`` runs as a script, from the repository
root, with the command its docstring gives (``python examples/NAME.py``),
with the mpserver under test first on PYTHONPATH; its output is checked.
An example missing from ``EXAMPLES`` fails the test, as does one whose
docstring does not name the command run here.

**Commands.**  Every command line of a shell block (``bash``, ``console``:
the lines after ``$``) of README.md, CONTRIBUTING.md, benchmarks/README.md
and docs/*.md is accounted for in ``COMMANDS``, with what checks it:

* run here as written (a placeholder program where the command names the
  user's own, such as ``my_service.py``; a free port for a fixed one);
* ``covered``: another test runs it as written (the test must exist);
* ``options``: a long run (benchmarks, soak runs, wheel builds) is not run,
  but its script's ``--help`` must list every option the command uses;
* ``extras``: ``pip install '.[x]'`` names extras that exist in pyproject.toml
  and hold what the page says they bring;
* a reason why it cannot run here (it builds C++ or installs into a venv).

A documented command missing from ``COMMANDS`` fails the test, and so does an
entry that no page documents any more: a command cannot change unnoticed.
(The Python examples of docs/*.md are run by ``tests/test_docs.py``.)
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import importlib.util
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import mpserver
import pytest
from test_docs import parse_blocks

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None  # type: ignore[assignment]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOME = os.path.dirname(os.path.dirname(os.path.abspath(mpserver.__file__)))
PAGES = ['README.md', 'CONTRIBUTING.md', 'benchmarks/README.md', *sorted(glob.glob('docs/*.md', root_dir=ROOT))]
WAIT = 120


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ('MPSERVER_INSTALL', 'PYTHONSAFEPATH', 'RAY_ADDRESS'):
        env.pop(name, None)
    env['PYTHONPATH'] = os.pathsep.join([HOME, *(p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p)])
    env.update(extra)
    return env


def python(*args: str, cwd: Path | str = ROOT, timeout: float = WAIT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=child_env(**env), capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------- examples


def check_hello_service(proc: subprocess.CompletedProcess) -> None:
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r'digest of "mpserver": [0-9a-f]{16}', lines[0]), lines
    assert re.fullmatch(r'2000 digests on \d+ worker processes in [0-9.]+ s; first: \[.*\]', lines[1]), lines
    assert lines[2:] == ['Hello, world!', 'Hello, mpserver!', 'Hello, batching!', 'THREADS WORK TOO']


def check_progress(proc: subprocess.CompletedProcess) -> None:
    assert proc.stdout == 'True\n'
    assert '500/500' in proc.stderr  # tqdm's bar reached the end


def check_ray_pipeline(proc: subprocess.CompletedProcess) -> None:
    assert proc.stdout.splitlines()[-1] == "['5.0', '25.0', '61.0']"


def check_ray_http_per_node(proc: subprocess.CompletedProcess) -> None:
    assert re.fullmatch(r"http://[0-9.]+:\d+/ b'HELLO'", proc.stdout.splitlines()[-1]), proc.stdout


@dataclasses.dataclass
class Example:
    check: Callable[[subprocess.CompletedProcess], None] | None = None
    needs: tuple[str, ...] = ()  # modules it imports beyond mpserver
    covered: str | None = None  # the test that runs it (a service needs a client)


EXAMPLES = {
    'hello_service.py': Example(check_hello_service),
    'progress.py': Example(check_progress, needs=('tqdm',)),
    'asgi_app.py': Example(covered='tests/test_http_asgi.py::test_the_asgi_example_serves_a_request'),
    # These start a local Ray instance each (~10 s): Ray's budget, not the suite's.
    'ray_pipeline.py': Example(check_ray_pipeline, needs=('ray',)),
    'ray_http_per_node.py': Example(check_ray_http_per_node, needs=('ray',)),
    # Services of issue 35's workloads: their test starts each and checks an answer.
    'digits_service.py': Example(covered='tests/test_real_models.py::test_digits_example_answers_the_models_label'),
    'ocr_service.py': Example(covered='tests/test_real_models.py::test_ocr_example_reads_the_text_that_was_drawn'),
}


def test_every_example_is_run_here():
    found = sorted(os.path.basename(p) for p in glob.glob(str(ROOT / 'examples' / '*.py')))
    assert found == sorted(EXAMPLES), 'add the new example to EXAMPLES (how to check its output)'
    for name in found:
        doc = ast.get_docstring(ast.parse((ROOT / 'examples' / name).read_text(encoding='utf-8'))) or ''
        assert f'python examples/{name}' in doc, f'examples/{name} does not say how to run it'


@pytest.mark.parametrize('name', [n for n, ex in EXAMPLES.items() if ex.covered is None])
def test_example(name):
    ex = EXAMPLES[name]
    for module in ex.needs:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f'examples/{name} needs {module}')
    proc = python(f'examples/{name}', timeout=300)
    assert proc.returncode == 0, f'--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}'
    assert ex.check is not None
    ex.check(proc)


# ----------------------------------------------------------------------- commands


def documented_commands() -> dict[str, list[str]]:
    """command (its words, normalised by shlex) -> where the pages show it."""
    found: dict[str, list[str]] = {}
    for page in PAGES:
        for block in parse_blocks((ROOT / page).read_text(encoding='utf-8')):
            if block.info not in ('bash', 'console', 'sh', 'shell'):
                continue
            lines: list[str] = []
            for line in block.body.splitlines():
                if lines and lines[-1].endswith('\\'):
                    lines[-1] = lines[-1][:-1] + ' ' + line.strip()
                else:
                    lines.append(line)
            for line in lines:
                if block.info == 'console':
                    if not line.startswith('$ '):
                        continue  # output
                    line = line[2:]
                words = shlex.split(line, comments=True)
                if words:
                    found.setdefault(' '.join(words), []).append(f'{page}:{block.line}')
    return found


def segment(command: str, script: str) -> list[str]:
    """The words of the part of ``command`` (between ``&&``) that runs ``script``."""
    for part in command.split(' && '):
        words = part.split()
        if script in words:
            return words
    raise AssertionError(f'{script} is not in {command!r}')


# -- checks


def options(script: str) -> Callable[[list[str]], None]:
    """The commands run ``script`` with options its ``--help`` lists."""

    def check(commands: list[str]) -> None:
        proc = python(script, '--help')
        assert proc.returncode == 0, proc.stderr
        for command in commands:
            for word in segment(command, script):
                if word.startswith('-'):
                    option = word.split('=')[0]
                    assert re.search(rf'(^|[\s\[,]){re.escape(option)}\b', proc.stdout), (
                        f'{command!r}: {script} --help does not list {option}\n{proc.stdout}'
                    )

    return check


def extras(*names: str, bring: dict[str, tuple[str, ...]] | None = None) -> Callable[[list[str]], None]:
    """``pip install '.[names]'``: the extras exist and hold what the pages say."""

    def check(commands: list[str]) -> None:
        if tomllib is None:
            pytest.skip('reading pyproject.toml needs tomllib (Python 3.11+)')
        project = tomllib.loads((ROOT / 'pyproject.toml').read_text(encoding='utf-8'))['project']
        optional = project['optional-dependencies']
        for name in names:
            assert name in optional, f'no extra {name!r} in pyproject.toml'
        for name, packages in (bring or {}).items():
            held = {re.split(r'[<>=!;\[ ]', req, maxsplit=1)[0].lower() for req in optional[name]}
            assert set(packages) <= held, f'extra {name!r} lacks {set(packages) - held}'

    return check


def requirements(path: str) -> Callable[[list[str]], None]:
    def check(commands: list[str]) -> None:
        assert (ROOT / path).is_file(), path

    return check


def covered(*tests: str) -> Callable[[list[str]], None]:
    """Other tests run these commands as written; they must exist."""

    def check(commands: list[str]) -> None:
        for test in tests:
            path, name = test.split('::')
            tree = ast.parse((ROOT / path).read_text(encoding='utf-8'))
            assert any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body), f'{test} is gone'

    return check


# -- runs


PROGRAM = '''\
"""{name}: an mpservice program that prints what it ran on, and its arguments."""
import json
import sys

import mpservice.mpserver
from mpservice.mpserver import ProcessServlet, Server, Worker


class Double(Worker):
    def call(self, x):
        return 2 * x


if __name__ == '__main__':
    with Server(ProcessServlet(Double)) as server:
        print(json.dumps({{'on': mpservice.mpserver.__name__, 'argv': sys.argv[1:], 'y': server.call(21)}}))
'''


def run_programs(commands: list[str], tmp_path: Path) -> None:
    """``python -m mpserver PROGRAM ARGS`` / ``-m MODULE ARGS`` with a placeholder
    mpservice program under the name the page gives."""
    for command in commands:
        words = command.split()
        assert words[:3] == ['python', '-m', 'mpserver'], command
        if words[3] == '-m':
            module, args = words[4], words[5:]
            path = tmp_path.joinpath(*module.split('.')).with_suffix('.py')
            for parent in path.relative_to(tmp_path).parents:
                if parent != Path('.'):
                    (tmp_path / parent).mkdir(exist_ok=True)
                    (tmp_path / parent / '__init__.py').touch()
        else:
            path, args = tmp_path / words[3], words[4:]
        path.write_text(PROGRAM.format(name=path.name), encoding='utf-8')
        proc = python(*words[1:], cwd=tmp_path)
        assert proc.returncode == 0, f'{command!r}\n{proc.stderr}'
        assert json.loads(proc.stdout) == {'on': 'mpserver', 'argv': args, 'y': 42}, command


SERVICE = '''\
"""mypackage.service: a servlet for python -m mpserver serve."""
from mpserver import ProcessServlet, Worker


class Upper(Worker):
    def call(self, x):
        return x.upper()


servlet = ProcessServlet(Upper)
'''


def run_serve_and_curl(commands: list[str], tmp_path: Path) -> None:
    """``python -m mpserver serve mypackage.service:servlet --port P``, then the
    page's ``curl`` (on a free port, not 8000), then SIGTERM: it drains and exits 0."""
    serve, curl = commands
    port = str(free_port())
    (tmp_path / 'mypackage').mkdir()
    (tmp_path / 'mypackage' / '__init__.py').touch()
    (tmp_path / 'mypackage' / 'service.py').write_text(SERVICE, encoding='utf-8')
    (tmp_path / 'input.bin').write_bytes(b'hello from a file\n')
    words = serve.replace('8000', port).split()
    proc = subprocess.Popen(
        [sys.executable, *words[1:]],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + WAIT
        while True:  # until it is ready (it answers 503 while its workers start)
            assert proc.poll() is None, proc.communicate()[0]
            try:
                with urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=5):
                    break
            except OSError:  # refused, or an HTTPError (503)
                assert time.monotonic() < deadline, 'serve did not become ready'
                time.sleep(0.1)
        answer = subprocess.run(
            shlex.split(curl.replace('8000', port)), cwd=tmp_path, capture_output=True, timeout=WAIT
        )
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout == b'HELLO FROM A FILE\n'
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run_fuzzer(commands: list[str], tmp_path: Path) -> None:
    """The long fuzzing run, as written but for 1 s instead of 600, with this
    interpreter (the venv's) and the mpserver it imports (installed, or the
    source tree with the in-place build of CONTRIBUTING.md)."""
    if importlib.util.find_spec('atheris') is None:
        pytest.skip('atheris is not installed')
    [command] = commands
    words = command.replace('-max_total_time=600', '-max_total_time=1').split()
    assert words[0] == '.venv/bin/python', command
    proc = python(*words[1:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Done' in proc.stderr


# -- the table


@dataclasses.dataclass
class Entry:
    commands: list[str]
    checks: list[Callable[..., None]] = dataclasses.field(default_factory=list)
    why: str = ''  # why it is not run here (when it is not)

    @property
    def id(self) -> str:
        return self.commands[0][:60]


WHEEL = 'builds the C++ extension (or wheels with zig) and installs into a fresh venv: CI and docs/release.md'
BENCH = 'a benchmark run takes minutes and needs the 2 cores to itself'

COMMANDS = [
    # Running programs
    Entry(['python -m mpserver my_service.py --its-args'], [run_programs]),
    Entry(
        ['python -m mpserver service.py --port 8080', 'python -m mpserver -m mypackage.service --port 8080'],
        [run_programs],
    ),
    Entry(
        ['python -m mpserver service.py'],
        [covered('tests/test_http_asgi.py::test_mpservice_http_script_runs_unchanged_on_mpserver')],
    ),
    Entry(
        [
            'python -m mpserver serve mypackage.service:servlet --port 8000',
            'curl -X POST localhost:8000/ --data-binary @input.bin',
        ],
        [run_serve_and_curl],
    ),
    Entry(
        [
            'python -m mpserver top',
            'python -m mpserver top 12345',
            'python -m mpserver top 12345 --once --interval 2',
        ],
        [
            covered(
                'tests/test_watch.py::test_top_once_shows_a_server_of_another_process',
                'tests/test_watch.py::test_top_follows_a_server_until_it_stops',
                'tests/test_watch.py::test_top_without_a_server_says_so',
            )
        ],
    ),
    # Installing
    Entry(['pip install .'], why=WHEEL),
    Entry(['pip install mpserver[http]'], [extras('http', bring={'http': ('uvicorn', 'starlette')})]),
    Entry(
        ['pip install .[test]'],
        [extras('test', bring={'test': ('mpservice', 'pytest', 'numpy', 'uvloop')})],
        why=WHEEL,
    ),
    Entry(['pip install .[docs]'], [extras('docs', bring={'docs': ('sphinx', 'myst-parser')})], why=WHEEL),
    Entry(
        [
            'python -m venv .venv && .venv/bin/pip install . && .venv/bin/python examples/hello_service.py',
        ],
        [covered('tests/test_commands.py::test_example')],
        why=WHEEL + '; the example is run by test_example',
    ),
    Entry(
        ['python -m venv .venv && .venv/bin/pip install .[test,docs] && .venv/bin/python -m pytest -q'],
        [extras('test', 'docs')],
        why='it is this test suite, in a fresh venv',
    ),
    # Wheels
    Entry(
        ['python -m venv .venv && .venv/bin/pip install -r tools/requirements-wheel.txt'],
        [requirements('tools/requirements-wheel.txt')],
        why=WHEEL,
    ),
    Entry(['.venv/bin/python tools/build_wheel.py --python 3.10 3.11 3.12 3.13'], [options('tools/build_wheel.py')]),
    Entry(['.venv/bin/python tools/test_wheel.py --python 3.10 3.11 3.12 3.13'], [options('tools/test_wheel.py')]),
    # Contributing: the build and the tools
    Entry(
        [
            'cmake -S . -B build/dev -G Ninja -DMPSERVER_BUILD_PYTHON=ON '
            '-Dpybind11_DIR=$(.venv/bin/python -m pybind11 --cmakedir) -DPython_EXECUTABLE=$PWD/.venv/bin/python',
            'cmake --build build/dev -j2 && ln -sf ../../build/dev/$(cd build/dev && ls _core*.so) python/mpserver/',
        ],
        why='builds the extension (minutes); this suite runs on the extension so built',
    ),
    Entry(
        [
            'cmake -S tests/cpp -B build/ctest -G Ninja -DPython_EXECUTABLE=$PWD/.venv/bin/python',
            'cmake --build build/ctest -j2 && ctest --test-dir build/ctest --output-on-failure',
        ],
        [covered('tests/test_cpp_core.py::test_engine_plain_and_under_sanitizers')],
        why='builds C++ three times (minutes): tests/test_cpp_core.py configures, builds and runs CTest',
    ),
    Entry(
        ['PYTHONPATH=$PWD/python .venv/bin/python -m pytest -q -k mpserver tests/test_server.py'],
        why='it is part of this test suite',
    ),
    Entry(
        ['.venv/bin/ruff check . && .venv/bin/ruff format --check .', '.venv/bin/mypy'],
        [
            covered(
                'tests/test_tooling.py::test_ruff_lint_is_clean',
                'tests/test_tooling.py::test_ruff_format_is_clean',
                'tests/test_tooling.py::test_mypy_is_clean',
            )
        ],
    ),
    Entry(
        ['.venv/bin/clang-format -i cpp/*.[ch]pp bindings/*.[ch]pp tests/cpp/*.cpp'],
        [covered('tests/test_tooling.py::test_cpp_is_clang_formatted')],
        why='it rewrites files; the test checks they are formatted',
    ),
    # Long runs: soak, load, fuzzing
    Entry(
        ['.venv/bin/python tests/_chaos.py --items 1000000'],
        [
            options('tests/_chaos.py'),
            covered('tests/test_chaos.py::test_killing_workers_every_half_second_loses_nothing_and_leaks_nothing'),
        ],
        why='84 s of killing workers; tests/test_chaos.py runs a shorter one',
    ),
    Entry(
        ['.venv/bin/python tests/_load.py --seconds 60 --items 1000000'],
        [options('tests/_load.py'), covered('tests/test_load.py::test_a_million_items_through_two_batching_workers')],
        why='a minute and more of load; tests/test_load.py runs its parts',
    ),
    Entry(['.venv/bin/python tests/fuzz/fuzz_frames.py -max_total_time=600'], [run_fuzzer]),
    # Benchmarks
    Entry(
        [
            'python benchmarks/bench.py --rounds 5 --write',
            '.venv/bin/pip install .[bench] && .venv/bin/python benchmarks/bench.py --rounds 5 --write',
            'PYTHONPATH=$PWD/python python benchmarks/bench.py --rounds 5 --write',
            'PYTHONPATH=$PWD/python python benchmarks/bench.py --quick --rounds 1',
            'PYTHONPATH=$PWD/python python benchmarks/bench.py --only echo',
            'PYTHONPATH=$PWD/python python benchmarks/bench.py --rss',
        ],
        [options('benchmarks/bench.py'), extras('bench')],
        why=BENCH,
    ),
    Entry(['PYTHONPATH=$PWD/python python benchmarks/breakdown.py'], [options('benchmarks/breakdown.py')], why=BENCH),
    Entry(
        [
            'python benchmarks/peers.py --write',
            'PYTHONPATH=$PWD/python python benchmarks/peers.py --write',
            'PYTHONPATH=$PWD/python python benchmarks/peers.py --quick',
        ],
        [options('benchmarks/peers.py')],
        why=BENCH,
    ),
    Entry(
        [
            'PYTHONPATH=$PWD/python python benchmarks/serving.py --write',
            'PYTHONPATH=$PWD/python python benchmarks/serving.py --duration 3 --rounds 1',
            'PYTHONPATH=$PWD/python python benchmarks/serving.py --peer mosec --peer mpservice-asgi',
            'python benchmarks/serving.py --from-json run.json --write',
        ],
        [options('benchmarks/serving.py')],
        why=BENCH,
    ),
    Entry(
        [
            'PYTHONPATH=$PWD/python python benchmarks/ray_bench.py',
            'PYTHONPATH=$PWD/python python benchmarks/ray_bench.py --quick',
        ],
        [options('benchmarks/ray_bench.py')],
        why=BENCH,
    ),
    Entry(
        [
            'python benchmarks/real_models.py --install-only',
            'python benchmarks/real_models.py',
            'python benchmarks/real_models.py --quick --peers mpserver-native,fastapi --workloads digits',
            'python benchmarks/real_models.py --from-json run.json',
        ],
        [
            options('benchmarks/real_models.py'),
            covered('tests/test_real_models.py::test_quick_run_serves_digits_with_two_peers_and_reports_them'),
        ],
        why='installs a venv per serving framework (~5 GB) and runs for hours; the --quick run has its own test',
    ),
]


def test_every_documented_command_is_accounted_for():
    documented = documented_commands()
    known = [c for entry in COMMANDS for c in entry.commands]
    assert len(known) == len(set(known)), 'a command is in COMMANDS twice'
    missing = {c: where for c, where in documented.items() if c not in known}
    assert not missing, f'documented commands that no entry of COMMANDS checks: {missing}'
    stale = sorted(set(known) - set(documented))
    assert not stale, f'entries of COMMANDS that no page documents any more: {stale}'
    for entry in COMMANDS:
        assert entry.checks or entry.why, f'{entry.id}: neither checked nor explained'


@pytest.mark.parametrize('entry', [e for e in COMMANDS if e.checks], ids=lambda e: e.id)
def test_documented_command(entry, tmp_path):
    for check in entry.checks:
        if 'tmp_path' in check.__code__.co_varnames[: check.__code__.co_argcount]:
            check(entry.commands, tmp_path)
        else:
            check(entry.commands)
