"""Build the sdist and test it from a fresh directory.

    python tools/test_sdist.py                  # python -m build --sdist, then test dist/mpserver-<version>.tar.gz
    python tools/test_sdist.py --tests test_server.py test_docs.py

The sdist must hold every file git tracks (a file missing from it fails here
before anything is built) and LICENSE at its top, which its PKG-INFO declares
(PEP 639: ``License-Expression: MIT``, ``License-File: LICENSE``).  It is
unpacked into a temporary directory, installed from there (a source build:
CMake and a C++20 compiler) into a fresh venv, where the installed metadata
must carry LICENSE too, with the test runner and the reference backend, and
the chosen test files run in the unpacked tree against the installed package.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_wheel import ROOT, log, run  # noqa: E402
from test_wheel import API_TESTS, TEST_DEPS  # noqa: E402


def build_sdist(out: Path) -> Path:
    for old in out.glob('mpserver-*.tar.gz'):
        old.unlink()
    run([sys.executable, '-m', 'build', '--sdist', '--outdir', str(out), str(ROOT)])
    (sdist,) = out.glob('mpserver-*.tar.gz')
    return sdist


def check_manifest(sdist: Path) -> None:
    tracked = subprocess.run(['git', 'ls-files'], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split('/')[0]
        shipped = {name.split('/', 1)[1] for name in tar.getnames() if '/' in name}
    missing = sorted(set(tracked) - shipped)
    if missing:
        sys.exit(f'{sdist.name} lacks {len(missing)} tracked files: {missing[:20]}')
    log(f'{sdist.name}: all {len(tracked)} tracked files are in {top}/')


def check_license(sdist: Path) -> None:
    license_text = (ROOT / 'LICENSE').read_bytes()
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split('/')[0]
        shipped = tar.extractfile(f'{top}/LICENSE')
        if shipped is None or shipped.read() != license_text:
            sys.exit(f"{sdist.name} lacks LICENSE at its top ({top}/LICENSE), or it differs from the checkout's")
        pkg_info = tar.extractfile(f'{top}/PKG-INFO')
        fields = pkg_info.read().decode().splitlines() if pkg_info is not None else []
    for field in ('License-Expression: MIT', 'License-File: LICENSE'):
        if field not in fields:
            sys.exit(f'{sdist.name}: PKG-INFO lacks "{field}"')
    log(f'{sdist.name}: LICENSE at {top}/LICENSE, declared in PKG-INFO (License-Expression: MIT)')


def test_sdist(sdist: Path, tests: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix='mpserver-sdist-test-') as tmp:
        work = Path(tmp)
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter='data')
        (src,) = work.glob('mpserver-*')
        venv = work / 'venv'
        run([sys.executable, '-m', 'venv', str(venv)])
        py = str(venv / 'bin' / 'python')
        pip = [py, '-m', 'pip', 'install', '-q', '--disable-pip-version-check']
        run([*pip, str(src)])
        # The wheel pip built from the sdist installed LICENSE with the metadata.
        check = (
            'import importlib.metadata as m, pathlib; '
            "f = [p for p in m.distribution('mpserver').files if p.name == 'LICENSE']; "
            "assert f and pathlib.Path(f[0].locate()).read_bytes() == pathlib.Path('LICENSE').read_bytes(), f; "
            "print('installed', f[0])"
        )
        run([py, '-c', check], cwd=src)
        run([*pip, *TEST_DEPS])
        run([py, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *[f'tests/{n}' for n in tests]], cwd=src)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dist', type=Path, default=ROOT / 'dist', help='where the sdist goes')
    parser.add_argument('--tests', nargs='+', default=API_TESTS, help='test files of tests/ to run')
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    sdist = build_sdist(args.dist)
    check_manifest(sdist)
    check_license(sdist)
    test_sdist(sdist, args.tests)
    log(f'{sdist.name} builds and passes {" ".join(args.tests)} from a fresh directory ({time.monotonic() - t0:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
