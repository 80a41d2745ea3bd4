"""The symbol check of tools/build_wheel.py (docs/release.md, "The symbol
check") on small shared objects compiled here with the system's compilers:
what it must refuse (an unversioned reference nothing defines, a GLIBC_
version newer than 2.28, any GLIBCXX_/CXXABI_ version) and what it must let
through (the Python C API, weak references, symbols of a library the wheel
bundles).  The wheels themselves are checked by .ci/wheels."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tools'))
import build_wheel  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which('gcc') is None or shutil.which('g++') is None, reason='needs gcc, g++')


def _shared(tmp: Path, name: str, source: str, *flags: str, cxx: bool = False) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    src = tmp / (name + ('.cpp' if cxx else '.c'))
    src.write_text(source)
    out = tmp / name
    cmd = ['g++' if cxx else 'gcc', '-shared', '-fPIC', '-o', str(out), str(src), *flags]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def _wheel(tmp: Path, files: dict[str, Path]) -> Path:
    wheel = tmp / 'demo-0-cp310-cp310-linux_x86_64.whl'
    with zipfile.ZipFile(wheel, 'w') as zf:
        for arcname, path in files.items():
            zf.write(path, arcname)
    return wheel


def test_an_unversioned_reference_that_nothing_defines_is_refused(tmp_path):
    module = _shared(
        tmp_path,
        'm.so',
        'extern int not_in_glibc_228(int); extern int PyLong_AsLong(void*);\n'
        'extern int maybe_there(int) __attribute__((weak));\n'
        'int f(int x) { return not_in_glibc_228(x) + PyLong_AsLong(0) + (maybe_there ? maybe_there(x) : 0); }\n',
    )
    problems = build_wheel.check_symbols(_wheel(tmp_path, {'demo/_m.so': module}))
    assert problems == ['demo/_m.so: U not_in_glibc_228  (no version, and nothing the module loads defines it)']


def test_an_unversioned_reference_to_a_bundled_library_passes(tmp_path):
    libs = tmp_path / 'demo.libs'
    lib = _shared(libs, 'libextra.so', 'int not_in_glibc_228(int x) { return x; }\n')
    module = _shared(
        tmp_path,
        'm.so',
        'extern int not_in_glibc_228(int);\nint f(int x) { return not_in_glibc_228(x); }\n',
        f'-L{libs}',
        '-lextra',
    )
    wheel = _wheel(tmp_path, {'demo/_m.so': module, 'demo.libs/libextra.so': lib})
    assert build_wheel.check_symbols(wheel) == []


@pytest.mark.skipif(
    tuple(map(int, os.confstr('CS_GNU_LIBC_VERSION').split()[1].split('.')[:2])) < (2, 32),
    reason='needs a glibc with sigabbrev_np (2.32) to link against',
)
def test_a_glibc_symbol_newer_than_228_is_refused(tmp_path):
    module = _shared(
        tmp_path,
        'm.so',
        '#define _GNU_SOURCE\n#include <string.h>\nconst char* f(int s) { return sigabbrev_np(s); }\n',
    )
    problems = build_wheel.check_symbols(_wheel(tmp_path, {'demo/_m.so': module}))
    assert problems == ['demo/_m.so: U sigabbrev_np@GLIBC_2.32  (needs GLIBC_2.32, newer than GLIBC_2.28)']


def test_libstdcxx_versions_are_refused(tmp_path):
    module = _shared(
        tmp_path,
        'm.so',
        '#include <string>\n#include <stdexcept>\n'
        'extern "C" int f(const char* s) { std::string t(s); if (t.empty()) throw std::runtime_error(t);'
        ' return int(t.size()); }\n',
        cxx=True,
    )
    problems = build_wheel.check_symbols(_wheel(tmp_path, {'demo/_m.so': module}))
    assert problems, 'a module linked against libstdc++ must be refused'
    assert all('(libstdc++)' in p and ('@GLIBCXX_' in p or '@CXXABI_' in p) for p in problems), problems
