"""Runs the C++ engine's unit and stress tests (Catch2, tests/cpp/*.cpp) through
CMake and CTest: tests/cpp/CMakeLists.txt compiles every tests/cpp/*.cpp and
cpp/*.cpp three times -- plain (-O2), with ASan+UBSan and with TSan (the HTTP
front's Asio/Beast code and its tests only with the sanitizers) -- and
registers every TEST_CASE once per build as a CTest test of its own
("plain: ring mpmc", "asan: ring mpmc", "tsan: ring mpmc", ...), whose verdict
is Catch2's exit code; one more CTest test checks that the registered cases
are exactly the runner's.  This test configures, builds and runs that
(cmake, cmake --build, ctest) and fails on any step's failure, with the tail
of its output.

The build directory build/ctest-py<major><minor> is kept, so re-runs only
rebuild what changed; from clean it takes about 3-4 minutes on 2 cores.
Needs g++ (skipped without it); cmake and ninja come with the test extra
(looked up next to sys.executable, then on PATH), the Boost headers from the
system or the boost-headers package, and Catch2 v2 from the system, from the
comma-deps-catch2 package, or from that wheel downloaded into the build
directory (see tests/cpp/CMakeLists.txt)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / 'tests' / 'cpp'
BUILD = ROOT / 'build' / f'ctest-py{sys.version_info.major}{sys.version_info.minor}'
VARIANTS = ('plain', 'asan', 'tsan')
# Two cases at a time, measured on 2 cores: the 49 CTest tests take 5.5 s one
# at a time, 3.7 s two at a time, 3.2 s four at a time -- but at four the
# stress tests are starved (TSan's ring mpmc 1.7 s -> 3.1 s, the guardian
# teardown race 0.2 s -> 1.5 s), at two they run nearly as fast as alone.
CTEST_JOBS = 2


def _tool(name: str) -> str | None:
    """The tool installed next to this interpreter (the venv's), else on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def _run(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    proc = subprocess.run(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )
    return proc.returncode, proc.stdout


def _labels(test: dict) -> list[str]:
    """A test's LABELS (the build it belongs to) in ctest --show-only=json-v1."""
    return next((p['value'] for p in test.get('properties', []) if p['name'] == 'LABELS'), [])


def _check(step: str, argv: list[str], rc: int, out: str) -> None:
    __tracebackhide__ = True  # the message holds the output's tail; no need for this frame's arguments too
    assert rc == 0, f'{step} failed (exit code {rc}): {" ".join(argv)}\n...\n{out[-8000:]}'


@pytest.mark.timeout(3600)
@pytest.mark.skipif(shutil.which('g++') is None, reason='needs g++ to build the C++ tests')
def test_engine_plain_and_under_sanitizers():
    cmake, ctest = _tool('cmake'), _tool('ctest')
    if cmake is None or ctest is None:
        pytest.fail('cmake is not installed: it comes with the test extra (pip install ".[test]")', pytrace=False)
    ninja = _tool('ninja')
    # The venv's tools (ninja for cmake) need not be on PATH when the venv is not activated.
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get('PATH', '')]))
    generator = ['-G', 'Ninja', f'-DCMAKE_MAKE_PROGRAM={ninja}'] if ninja else ['-G', 'Unix Makefiles']
    configure = [cmake, '-S', str(SOURCE), '-B', str(BUILD), *generator]
    configure += [f'-DPython_EXECUTABLE={sys.executable}', '-DCMAKE_BUILD_TYPE=Debug']
    build = [cmake, '--build', str(BUILD), '-j', '2']
    run = [ctest, '--test-dir', str(BUILD), '--output-on-failure', '--no-tests=error', '-j', str(CTEST_JOBS)]

    BUILD.parent.mkdir(parents=True, exist_ok=True)
    with open(BUILD.parent / f'{BUILD.name}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one run at a time per build directory

        rc, out = _run(configure, env, timeout=600)
        if rc != 0 and (BUILD / 'CMakeCache.txt').exists():
            # A cache this configure cannot reuse (another generator, a moved
            # checkout, a removed compiler): start that build directory afresh.
            shutil.rmtree(BUILD)
            rc, out = _run(configure, env, timeout=600)
        _check('configure', configure, rc, out)

        rc, out = _run(build, env, timeout=2400)
        _check('build', build, rc, out)

        # Every build has its cases registered (an empty registration must not pass).
        listing = [ctest, '--test-dir', str(BUILD), '--show-only=json-v1']
        proc = subprocess.run(listing, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        _check('listing the CTest tests', listing, proc.returncode, proc.stdout + proc.stderr)
        tests = json.loads(proc.stdout)['tests']
        cases = {v: sorted(t['name'].split(':', 1)[1] for t in tests if v in _labels(t)) for v in VARIANTS}
        assert all(cases.values()), f'a build without registered cases: {cases}'
        # The sanitizer builds have every case; the plain one all but the HTTP
        # front's (tests/cpp/CMakeLists.txt: MPSERVER_HTTP_VARIANTS).
        assert cases['asan'] == cases['tsan'], cases
        only_sanitized = set(cases['asan']) - set(cases['plain'])
        assert set(cases['plain']) < set(cases['asan']), cases
        assert only_sanitized and all(name.strip().startswith('http ') for name in only_sanitized), only_sanitized

        rc, out = _run(run, env, timeout=2400)
        _check('ctest', run, rc, out)
