"""``meters.py``'s two builds of one source tree: meters on and meters compiled out.

:func:`snapshot` copies the sources the build reads into ``build/meters/src``
(from the working tree, or a git revision), rewriting only files whose
contents changed; :func:`build` configures and builds one variant from it
(``-DMPSERVER_METERS=ON`` / ``OFF``) and assembles its package in
``build/meters/{on,off}/mpserver/``; :func:`variant_env` is the environment
of an interpreter that imports that variant, and :func:`check_variant` says
whether an interpreter really did.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time

from harness import ROOT, git, log

OUT = os.path.join(ROOT, 'build', 'meters')
SNAPSHOT = os.path.join(OUT, 'src')
#: What the build reads, relative to the repository root.
SOURCES = ('CMakeLists.txt', 'pyproject.toml', 'cpp', 'bindings', 'python/mpserver')
#: Variant name -> the value of MPSERVER_METERS (and of _core.METERS).
VARIANTS = {'on': True, 'off': False}
#: Set in a measuring interpreter (and so in its workers) to the variant's name.
VARIANT_ENV = 'MPSERVER_METERS_BENCH'


def _files(top: str, roots: tuple[str, ...] = SOURCES) -> dict[str, str]:
    """Relative path -> absolute path of the files under ``top``/``roots`` (no .so, .pyc, __pycache__)."""
    out = {}
    for rel in roots:
        path = os.path.join(top, rel)
        if os.path.isfile(path):
            out[rel] = path
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = [d for d in dirnames if d != '__pycache__']
            for name in filenames:
                if name.endswith(('.so', '.pyc')):
                    continue
                full = os.path.join(dirpath, name)
                out[os.path.relpath(full, top)] = full
    return out


def _same(a: str, b: str) -> bool:
    if not os.path.exists(b) or os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        return fa.read() == fb.read()


def _sync(files: dict[str, str], dest: str, roots: tuple[str, ...] = SOURCES) -> int:
    """Make ``dest`` hold exactly ``files`` (relative -> source path); rewrite
    only files whose contents differ, so that unchanged files keep their
    modification times and the build does not redo them.  Returns files written."""
    written = 0
    for rel, src in files.items():
        dst = os.path.join(dest, rel)
        if not _same(src, dst):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst)
            written += 1
    for rel in set(_files(dest, roots)) - set(files):
        os.remove(os.path.join(dest, rel))
    return written


def snapshot(commit: str | None) -> str:
    """Copy the sources into SNAPSHOT (from the working tree, or git ``commit``); return a content hash."""
    if commit is None:
        _sync(_files(ROOT), SNAPSHOT)
    else:
        archive = ['git', 'archive', '--format=tar', commit, *SOURCES]
        tar = subprocess.run(archive, cwd=ROOT, check=True, capture_output=True).stdout
        with tempfile.TemporaryDirectory() as tmp:
            with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
                tf.extractall(tmp, **({'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}))
            _sync(_files(tmp), SNAPSHOT)
    digest = hashlib.sha256()
    for rel, path in sorted(_files(SNAPSHOT).items()):
        digest.update(rel.encode() + b'\0')
        with open(path, 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()[:12]


def _tool(name: str) -> str | None:
    """A build tool from the running venv, else from PATH (None if neither has it)."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.access(beside, os.X_OK) else shutil.which(name)


def build(variant: str, jobs: int | None) -> str:
    """Configure and build one variant from SNAPSHOT; assemble and check its package; return its directory."""
    try:
        import pybind11
    except ImportError:
        raise SystemExit('pybind11 is not importable: run this with the venv python (.venv/bin/python)') from None
    cmake, ninja = _tool('cmake'), _tool('ninja')
    if cmake is None:
        raise SystemExit('cmake not found: pip install cmake ninja into the venv')
    build_dir = os.path.join(OUT, f'{variant}-cmake')
    configure = [
        cmake,
        '-S',
        SNAPSHOT,
        '-B',
        build_dir,
        '-DCMAKE_BUILD_TYPE=Release',
        '-DMPSERVER_BUILD_PYTHON=ON',
        f'-DMPSERVER_METERS={"ON" if VARIANTS[variant] else "OFF"}',
        f'-Dpybind11_DIR={pybind11.get_cmake_dir()}',
        f'-DPython_EXECUTABLE={sys.executable}',
    ]
    if ninja and not os.path.exists(os.path.join(build_dir, 'CMakeCache.txt')):
        configure += ['-G', 'Ninja', f'-DCMAKE_MAKE_PROGRAM={ninja}']
    log(f'build {variant}: configure')
    subprocess.run(configure, check=True, stdout=subprocess.DEVNULL)
    start = time.perf_counter()
    cmd = [cmake, '--build', build_dir, '--target', '_core'] + (['-j', str(jobs)] if jobs else [])
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    log(f'build {variant}: built in {time.perf_counter() - start:.0f} s')

    so_name = '_core' + sysconfig.get_config_var('EXT_SUFFIX')
    home = os.path.join(OUT, variant)
    package = {rel: path for rel, path in _files(SNAPSHOT).items() if rel.startswith('python/mpserver/')}
    files = {os.path.relpath(rel, 'python'): path for rel, path in package.items()}
    files[os.path.join('mpserver', so_name)] = os.path.join(build_dir, so_name)
    _sync(files, home, roots=('mpserver',))
    check = subprocess.run(
        [
            sys.executable,
            '-c',
            'import json, mpserver, mpserver._core as c; print(json.dumps([mpserver.__file__, c.METERS]))',
        ],
        env=variant_env(variant),
        check=True,
        capture_output=True,
        text=True,
    )
    path, meters = json.loads(check.stdout)
    check_variant(variant, path, meters, 'a fresh interpreter')
    return home


def variant_env(variant: str) -> dict[str, str]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.path.join(OUT, variant)
    env[VARIANT_ENV] = variant
    return env


def check_variant(variant: str, path: str, meters: bool, where: str) -> None:
    home = os.path.join(OUT, variant)
    if os.path.commonpath([os.path.abspath(path), home]) != home or meters is not VARIANTS[variant]:
        raise RuntimeError(
            f'variant {variant!r}: {where} imported mpserver from {path} with METERS={meters}, '
            f'expected {home} with METERS={VARIANTS[variant]}'
        )


def source_description(commit: str | None, digest: str) -> str:
    """What was built, as of the snapshot (call it right after :func:`snapshot`)."""
    if commit is not None:
        return f'git revision {commit[:7]} (snapshot {digest})'
    head = git('rev-parse', '--short', 'HEAD') or 'unknown'
    dirty = git('status', '--porcelain', '--', *SOURCES)
    return f'working tree at {head}' + (' with uncommitted changes' if dirty else '') + f' (snapshot {digest})'
