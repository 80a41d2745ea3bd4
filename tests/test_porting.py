"""Porting unchanged: mpservice programs run on mpserver via ``python -m mpserver``
or ``mpserver.install()``.

These tests are for mpserver only (not two-backend tests): every program runs
in a subprocess, ``sys.executable [-S] -m mpserver ...``, with PYTHONPATH
pointing at the mpserver package under test.  The programs are in
``porting_scripts/``; they are written for mpservice and import
``mpservice.mpserver``.  An environment *without* mpservice is made by copying
the mpserver package to a temporary directory and running with ``-S`` (no
site-packages).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import mpserver
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, 'porting_scripts')
PACKAGE_DIR = os.path.dirname(os.path.abspath(mpserver.__file__))
HOME = os.path.dirname(PACKAGE_DIR)
HAVE_MPSERVICE = importlib.util.find_spec('mpservice') is not None
needs_mpservice = pytest.mark.skipif(not HAVE_MPSERVICE, reason='mpservice is not installed')


def run(*args: str, cwd: str, home: str = HOME, timeout: float = 120) -> subprocess.CompletedProcess:
    """``sys.executable *args`` with ``home`` first on PYTHONPATH."""
    env = dict(os.environ)
    for name in ('MPSERVER_INSTALL', 'PYTHONSAFEPATH'):
        env.pop(name, None)
    env['PYTHONPATH'] = os.pathsep.join([home, *(p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p)])
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def json_lines(proc: subprocess.CompletedProcess) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]


@pytest.fixture
def no_mpservice(tmp_path) -> str:
    """A directory holding a copy of mpserver, where ``python -S`` finds no mpservice."""
    shutil.copytree(PACKAGE_DIR, tmp_path / 'mpserver', ignore=shutil.ignore_patterns('__pycache__'))
    home = str(tmp_path)
    proc = run('-S', '-c', 'import mpservice', cwd=home, home=home)
    assert proc.returncode != 0 and 'mpservice' in proc.stderr, proc.stderr
    return home


@pytest.fixture
def site_without_mpservice(no_mpservice) -> str:
    """Like ``no_mpservice``, plus every other package of this interpreter's
    site-packages (uvicorn, starlette, ...), linked in: the installed
    environment of a user who never had mpservice."""
    import site

    for sp in site.getsitepackages():
        if not os.path.isdir(sp):
            continue
        for entry in os.listdir(sp):
            low = entry.lower()
            if low.startswith(('mpservice', 'mpserver', '__pycache__')) or low.endswith('.pth'):
                continue
            target = os.path.join(no_mpservice, entry)
            if not os.path.exists(target):
                os.symlink(os.path.join(sp, entry), target)
    proc = run('-S', '-c', 'import uvicorn, starlette; import mpservice', cwd=no_mpservice, home=no_mpservice)
    assert "No module named 'mpservice'" in proc.stderr, proc.stderr
    return no_mpservice


# -- the command line ------------------------------------------------------------


@pytest.mark.parametrize('args', [[], ['-h'], ['--help']], ids=['no-args', '-h', '--help'])
def test_usage(args, tmp_path):
    proc = run('-m', 'mpserver', *args, cwd=str(tmp_path))
    assert proc.returncode == 2
    assert proc.stdout == ''
    assert 'usage: python -m mpserver SCRIPT [ARGS...]' in proc.stderr
    assert 'python -m mpserver -m MODULE [ARGS...]' in proc.stderr


@pytest.mark.parametrize(
    'args, message',
    [(['-m'], 'option -m needs a module name'), (['-x', 'a.py'], "unknown option '-x'")],
)
def test_usage_errors(args, message, tmp_path):
    proc = run('-m', 'mpserver', *args, cwd=str(tmp_path))
    assert proc.returncode == 2
    assert message in proc.stderr and 'usage:' in proc.stderr


def test_missing_script_or_module(tmp_path):
    proc = run('-m', 'mpserver', 'no_such_script.py', cwd=str(tmp_path))
    assert proc.returncode == 2  # like python
    assert "can't open file" in proc.stderr and 'no_such_script.py' in proc.stderr
    proc = run('-m', 'mpserver', '-m', 'no_such_module', cwd=str(tmp_path))
    assert proc.returncode == 1  # like python -m
    assert 'No module named no_such_module' in proc.stderr


def test_script_argv_name_and_path():
    proc = run('-m', 'mpserver', 'argv_echo.py', 'a', '-b', '--c=d', cwd=SCRIPTS)
    [info] = json_lines(proc)
    assert info['argv'] == ['argv_echo.py', 'a', '-b', '--c=d']
    assert info['name'] == '__main__'
    assert info['path0'] == os.path.realpath(SCRIPTS)
    assert info['mpserver_module'] == 'mpserver'
    assert info['remote_exception_module'] == 'mpserver._wire.remote'


@needs_mpservice
def test_script_runs_like_plain_python(tmp_path):
    """argv, __name__ and sys.path[0] are what ``python SCRIPT`` gives; ``__file__`` is
    the path as given (runpy.run_path), which Python (3.9+) makes absolute."""
    script = os.path.relpath(os.path.join(SCRIPTS, 'argv_echo.py'), tmp_path)
    [ours] = json_lines(run('-m', 'mpserver', script, 'x', '--y', cwd=str(tmp_path)))
    [plain] = json_lines(run(script, 'x', '--y', cwd=str(tmp_path)))
    for key in ('argv', 'name', 'path0'):
        assert ours[key] == plain[key], key
    assert os.path.normpath(os.path.join(str(tmp_path), ours['file'])) == os.path.normpath(plain['file'])
    assert plain['mpserver_module'] == 'mpservice.mpserver'
    assert ours['mpserver_module'] == 'mpserver'


@pytest.mark.parametrize('status', [0, 3])
def test_exit_status(status):
    proc = run('-m', 'mpserver', 'argv_echo.py', '--exit', str(status), cwd=SCRIPTS)
    assert proc.returncode == status, proc.stderr


def test_uncaught_exception():
    proc = run('-m', 'mpserver', 'argv_echo.py', '--raise', cwd=SCRIPTS)
    assert proc.returncode == 1
    assert 'ValueError: boom from the script' in proc.stderr


@pytest.mark.parametrize('form', ['separate', 'attached'])
def test_module_form(form):
    args = ['-m', 'porting_pkg.echo'] if form == 'separate' else ['-mporting_pkg.echo']
    proc = run('-m', 'mpserver', *args, 'x', '--exit', '4', cwd=SCRIPTS)
    assert proc.returncode == 4, proc.stderr
    info = json.loads(proc.stdout)
    assert info['argv'] == [os.path.join(SCRIPTS, 'porting_pkg', 'echo.py'), 'x', '--exit', '4']
    assert info['name'] == '__main__'
    assert info['path0'] == SCRIPTS  # the current directory, like python -m
    assert info['mpserver_module'] == 'mpserver'


# -- aliasing in the program and in worker processes ----------------------------------


def check_worker_alias(proc):
    process, thread, error = json_lines(proc)
    for info, kind in ((process, 'ProcessServlet'), (thread, 'ThreadServlet')):
        assert info['servlet'] == kind
        assert info['module'] == 'mpserver'
        assert info['server_is_mpserver'] is True
        assert info['worker_is_mpserver'] is True
        assert info['remote_is_mpserver'] is True
    assert error == {'error': 'bad input', 'remote': True}
    return process, thread


def test_aliasing_in_workers():
    check_worker_alias(run('-m', 'mpserver', 'worker_alias.py', cwd=SCRIPTS))


def test_install_in_program_reaches_workers():
    """install() called by the program itself (twice: idempotent) also holds in workers."""
    main, worker = json_lines(run('install_inside.py', cwd=SCRIPTS))
    for info, where in ((main, 'main'), (worker, 'worker')):
        assert info == {
            'where': where,
            'module': 'mpserver',
            'server_is_mpserver': True,
            'worker_is_mpserver': True,
            'remote_is_mpserver': True,
            'finders': 1,
            'finder_first': True,
            'env': '1',
        }


@needs_mpservice
def test_install_after_mpservice_import():
    """``import mpservice`` loads the real mpservice.mpserver; install() replaces it."""
    main, worker = json_lines(run('install_inside.py', '--late', cwd=SCRIPTS))
    for info in (main, worker):
        assert info['module'] == 'mpserver'
        assert info['server_is_mpserver'] is True
        assert info['worker_is_mpserver'] is True
        assert info['remote_is_mpserver'] is True
        assert info['finders'] == 1


def test_install_exported():
    assert mpserver.install is mpserver._compat.install.install


@needs_mpservice
def test_real_mpservice_modules_still_work():
    """mpservice.multiprocessing, .streamer, .threading import and run after install;
    an exception pickled by a real mpservice process unpickles through our module."""
    proc = run('-m', 'mpserver', 'real_mpservice.py', cwd=SCRIPTS)
    [info] = json_lines(proc)
    assert info == {
        'remote_module_is_ours': True,
        'stream': [0, 2, 4, 6, 8],
        'error': 'from a real mpservice process',
        'remote': True,
        'traceback_has_fail': True,
    }


@needs_mpservice
def test_remote_exception_names():
    """Every public name of the real remote_exception module is served, as mpserver's object."""
    code = (
        'import json, mpserver, mpserver._compat.install as i\n'
        'import mpservice.multiprocessing.remote_exception as real\n'
        'names = [n for n, v in vars(real).items()\n'
        '         if not n.startswith("_") and getattr(v, "__module__", None) == real.__name__]\n'
        'i.install()\n'
        'import mpservice.multiprocessing.remote_exception as ours\n'
        'print(json.dumps({n: getattr(ours, n, None) is getattr(mpserver, n, 0) for n in names}))\n'
    )
    [info] = json_lines(run('-c', code, cwd=SCRIPTS))
    assert info == {
        'EnsembleError': True,
        'RemoteException': True,
        'RemoteTraceback': True,
        'get_remote_traceback': True,
        'is_remote_exception': True,
    }


# -- without mpservice ----------------------------------------------------------------


def test_stub_packages_without_mpservice(no_mpservice):
    code = (
        'import json, sys, mpserver, mpserver._compat.install as i\n'
        'i.install()\n'
        'import mpservice, mpservice.multiprocessing as mm, mpservice.mpserver as ms\n'
        'from mpservice.multiprocessing.remote_exception import (RemoteException, EnsembleError,\n'
        '    is_remote_exception, get_remote_traceback, RemoteTraceback)\n'
        'try:\n'
        '    import mpservice.streamer\n'
        '    missing = False\n'
        'except ModuleNotFoundError:\n'
        '    missing = True\n'
        'import email.mime.text, json.decoder  # other imports are untouched\n'
        'print(json.dumps({\n'
        '    "version": mpservice.__version__, "path": mpservice.__path__, "mm_path": mm.__path__,\n'
        '    "has_remote": mm.remote_exception is sys.modules[mm.__name__ + ".remote_exception"],\n'
        '    "server": ms is mpserver,\n'
        '    "remote": [RemoteException, EnsembleError, is_remote_exception, get_remote_traceback,\n'
        '               RemoteTraceback] == [getattr(mpserver, n) for n in ("RemoteException",\n'
        '               "EnsembleError", "is_remote_exception", "get_remote_traceback", "RemoteTraceback")],\n'
        '    "streamer_missing": missing}))\n'
    )
    [info] = json_lines(run('-S', '-c', code, cwd=no_mpservice, home=no_mpservice))
    assert info == {
        'version': '0.16.8+mpserver',
        'path': [],
        'mm_path': [],
        'has_remote': True,
        'server': True,
        'remote': True,
        'streamer_missing': True,
    }


def test_aliasing_in_workers_without_mpservice(no_mpservice):
    proc = run('-S', '-m', 'mpserver', os.path.join(SCRIPTS, 'worker_alias.py'), cwd=no_mpservice, home=no_mpservice)
    # Workers run with the interpreter's flags (-S), so they get the stubs too.
    for info in check_worker_alias(proc):
        assert info['mpservice_version'] == '0.16.8+mpserver'


def _has_cpus_0_and_1() -> bool:
    if (os.cpu_count() or 1) < 2:
        return False
    if hasattr(os, 'sched_getaffinity'):
        return {0, 1} <= os.sched_getaffinity(0)
    return True


@pytest.mark.skipif(not _has_cpus_0_and_1(), reason='the example pins workers to CPUs 0 and 1')
def test_seed001_hello_without_mpservice(no_mpservice):
    """The mpservice.mpserver documentation example, unchanged, on mpserver alone."""
    proc = run('-S', '-m', 'mpserver', os.path.join(SCRIPTS, 'seed001_hello.py'), cwd=no_mpservice, home=no_mpservice)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == 'Hello, wdwdwdwdwd!\nHello, 20!\n'


# -- programs written for mpservice <= 0.12 ----------------------------------------------


def check_older_012_service(proc):
    [info] = json_lines(proc)
    assert info == {
        'server': 'mpserver',
        'http': 'mpserver.http',
        'answers': [{'y': [-4, 5]}, {'y': [-9, 10]}],
        'stopped': 'server shutdown as requested',
        'refused_some': True,
        'full_when_idle': False,
    }
    # The one DeprecationWarning is the one mpservice 0.12.7 gave too (backlog).
    warnings = [line for line in proc.stderr.splitlines() if 'DeprecationWarning' in line]
    assert len(warnings) == 1 and '`backlog`' in warnings[0], proc.stderr


def test_mpservice_012_service_runs_unchanged():
    """Sequential, Ensemble, PipelineFull and mpservice.http.make_server, with mpservice 0.16.8 installed."""
    proc = run('-W', 'always::DeprecationWarning', '-m', 'mpserver', 'older_012_service.py', cwd=SCRIPTS)
    check_older_012_service(proc)


def test_mpservice_012_service_runs_without_mpservice(site_without_mpservice):
    script = os.path.join(SCRIPTS, 'older_012_service.py')
    home = site_without_mpservice
    proc = run('-S', '-W', 'always::DeprecationWarning', '-m', 'mpserver', script, cwd=home, home=home)
    check_older_012_service(proc)


# -- processes the program starts itself (multiprocessing) --------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def check_spawned_children(proc):
    lines = {info.pop('kind'): info for info in json_lines(proc)}
    ours = {'server': 'mpserver', 'http': 'mpserver.http', 'same_objects': True, 'main': '__mp_main__'}
    assert lines['spawn'] == {**ours, 'grandchild': ours}
    assert lines['forkserver'] == ours
    assert lines['pool'] == {'results': [ours, ours]}
    assert lines['http'] == {'exitcode': 0, 'child': ours, 'worker': {'y': 6, **ours}}
    assert lines['main'] == {**ours, 'main': '__main__'}


def test_children_of_multiprocessing_get_the_aliasing():
    """With mpservice installed, a child the program starts (spawn, forkserver, a
    process pool, a child's child, an HTTP server in a child) runs on mpserver,
    not silently on the real mpservice."""
    check_spawned_children(run('-m', 'mpserver', 'spawned_children.py', str(free_port()), cwd=SCRIPTS))


def test_children_of_multiprocessing_get_the_aliasing_without_mpservice(site_without_mpservice):
    """Without mpservice, such a child died with ModuleNotFoundError: No module named 'mpservice'."""
    home = site_without_mpservice
    script = os.path.join(SCRIPTS, 'spawned_children.py')
    check_spawned_children(run('-S', '-m', 'mpserver', script, str(free_port()), cwd=home, home=home))


def test_spawn_hook_is_installed_once_and_only_by_install():
    code = (
        'import json, multiprocessing.spawn as s, mpserver\n'
        'before = "mpserver_install" in s.get_preparation_data("x")\n'
        'mpserver.install(); f = s.get_preparation_data; mpserver.install()\n'
        'print(json.dumps({"before": before, "after": "mpserver_install" in s.get_preparation_data("x"),\n'
        '                  "once": s.get_preparation_data is f and not hasattr(f.__wrapped__, "__wrapped__")}))\n'
    )
    [info] = json_lines(run('-c', code, cwd=SCRIPTS))
    assert info == {'before': False, 'after': True, 'once': True}


def test_fork_server_does_not_preload_the_script_without_the_hook(tmp_path):
    """The fork server asks for the preparation data as 'ignore'; without the
    script's path it cannot import the script before the hook is in place."""
    script = tmp_path / 'prep.py'
    script.write_text(
        'import json, multiprocessing.spawn as s, mpserver\n'
        'mpserver.install()\n'
        'print(json.dumps(["init_main_from_path" in s.get_preparation_data(n) for n in ("ignore", "child")]))\n'
    )
    [info] = [json.loads(line) for line in run(str(script), cwd=str(tmp_path)).stdout.splitlines()]
    assert info == [False, True]
