"""Test a repaired wheel from outside the source tree.

    python tools/test_wheel.py --python 3.12          # the wheel in wheelhouse/ for 3.12
    python tools/test_wheel.py --python 3.10 3.11 3.12 3.13

For each version: a fresh venv in a temporary directory, the mpserver wheel
from ``wheelhouse/`` installed with ``pip install --no-index
--only-binary=:all:`` (nothing is compiled, nothing comes from the checkout),
then, in a second pip call from PyPI, the reference backend (mpservice
0.16.8) and the test runner.  The API test files (``API_TESTS``) and their
helpers (``tests/conftest.py``, ``tests/_*.py``) are copied into the temporary
directory and run there with the venv's pytest, with no PYTHONPATH: the
script first checks that ``import mpserver`` resolves inside the venv.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_wheel import ROOT, find_python, log, run  # noqa: E402

# The API tests: the Server, the composed servlets, the Worker options and
# AsyncServer, each on both backends (about 200 tests, a minute and a half).
# They exercise pickling, multiprocessing start-up, threads and asyncio, the
# parts that differ between Python versions.
API_TESTS = ['test_server.py', 'test_compose.py', 'test_worker.py', 'test_async.py']
TEST_DEPS = ['mpservice==0.16.8', 'pytest>=7', 'pytest-asyncio>=0.23', 'pytest-timeout>=2.1', 'numpy', 'uvloop']
PYTEST_INI = """[pytest]
asyncio_default_fixture_loop_scope = function
timeout = 300
"""


def test_version(spec: str, wheelhouse: Path, tests: list[str]) -> None:
    python = find_python(spec)
    with tempfile.TemporaryDirectory(prefix='mpserver-wheel-test-') as tmp:
        work = Path(tmp)
        venv = work / 'venv'
        run([python, '-m', 'venv', str(venv)])
        py = str(venv / 'bin' / 'python')
        pip = [py, '-m', 'pip', 'install', '-q', '--disable-pip-version-check']
        run([*pip, '--no-index', '--only-binary=:all:', '--find-links', str(wheelhouse), 'mpserver'])
        run([*pip, *TEST_DEPS])
        suite = work / 'tests'
        suite.mkdir()
        for path in [ROOT / 'tests' / 'conftest.py', *sorted((ROOT / 'tests').glob('_*.py'))]:
            shutil.copy(path, suite)
        for name in tests:
            shutil.copy(ROOT / 'tests' / name, suite)
        (work / 'pytest.ini').write_text(PYTEST_INI)
        env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV')}
        # The package under test is the wheel's, not the checkout's.
        check = (
            'import mpserver, mpserver._core as c, sys; '
            f'assert all(p.startswith({str(venv)!r}) for p in (mpserver.__file__, c.__file__)), '
            '(mpserver.__file__, c.__file__); '
            'print("mpserver", mpserver.__version__, "from", mpserver.__file__)'
        )
        run([py, '-c', check], cwd=work, env=env)
        run(
            [py, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '--rootdir', str(work), '-c', str(work / 'pytest.ini'),
             *[f'tests/{n}' for n in tests]],
            cwd=work, env=env,
        )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--python', nargs='+', default=[sys.executable], help='versions or interpreters to test')
    parser.add_argument('--wheelhouse', type=Path, default=ROOT / 'wheelhouse', help='where the repaired wheels are')
    parser.add_argument('--tests', nargs='+', default=API_TESTS, help='test files of tests/ to run')
    args = parser.parse_args(argv)
    for spec in args.python:
        t0 = time.monotonic()
        test_version(spec, args.wheelhouse.resolve(), args.tests)
        log(f'Python {spec}: the wheel passes {" ".join(args.tests)} ({time.monotonic() - t0:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
