"""Logging: records of worker processes reach the main process's handlers,
in the main process's format and at the level it configured; mpserver's own
``mpserver`` logger reports the server's lifecycle.

Each scenario runs a server in a fresh interpreter (a script written to
``tmp_path``), because what is tested is the logging configuration of a
whole program: ``logging.basicConfig`` in the script, and what reaches its
stderr and stdout.  The forwarding tests run on both backends (mpservice
forwards worker records too); the rest is mpserver's (its lifecycle events,
the level a worker inherits, the drop rule of a full control ring).
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time

import mpserver
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
#: The package's sources (what the no-print check reads).
PYTHON_DIR = os.path.join(os.path.dirname(HERE), 'python')
#: Where the mpserver under test was imported from (the source tree with a
#: built core, or an installed package): scripts run with it first on
#: PYTHONPATH, never with a source tree that has no core.
HOME = os.path.dirname(os.path.dirname(os.path.abspath(mpserver.__file__)))

MAIN_FORMAT = 'MAIN %(levelname)s %(processName)s %(name)s %(message)s'

# The script's prologue: the backend named by argv[1], and a worker that
# logs at every level, raises and logs the exception, prints, or kills its
# own process, depending on the item.
PROLOGUE = textwrap.dedent(
    """
    import logging
    import os
    import sys

    if sys.argv[1] == 'mpserver':
        from mpserver import ProcessServlet, Server, Worker
    else:
        from mpservice.mpserver import ProcessServlet, Server, Worker

    MAIN_FORMAT = '@MAIN_FORMAT@'


    class Chatty(Worker):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            logging.getLogger('w').info('built in __init__')

        def call(self, x):
            log = logging.getLogger('w')
            if x == 'kill':
                os.kill(os.getpid(), 9)
            if x == 'exc':
                try:
                    {}['missing-key']
                except KeyError:
                    log.exception('it failed')
                return x
            log.debug('debug from call %s', x)
            log.info('info from call %s', x)
            log.warning('warning from call %s', x)
            print('printed from call', x, flush=True)
            return x
    """
).replace("'@MAIN_FORMAT@'", repr(MAIN_FORMAT))

CONFIGURE_IN_MAIN = """
if __name__ == '__main__':
    logging.basicConfig(level=logging.INFO, format=MAIN_FORMAT, stream=sys.stderr)
"""

# Configured at import: worker processes import the script as __mp_main__
# and so configure themselves the same way.
CONFIGURE_AT_IMPORT = """
logging.basicConfig(level=logging.INFO, format=MAIN_FORMAT, stream=sys.stderr)
if __name__ == '__main__':
    pass
"""


def run_script(tmp_path, backend_name: str, configure: str, body: str, timeout: float = 240) -> tuple[str, str]:
    """Runs PROLOGUE + configure + body (indented under ``if __name__ ==
    '__main__':``) in a fresh interpreter; returns (stdout, stderr)."""
    script = tmp_path / 'logging_script.py'
    script.write_text(PROLOGUE + configure + textwrap.indent(textwrap.dedent(body), '    '))
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (HOME, env.get('PYTHONPATH', '')) if p)
    proc = subprocess.run(
        [sys.executable, str(script), backend_name],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, f'exit status {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}'
    return proc.stdout, proc.stderr


def count(lines: list[str], line: str) -> int:
    return sum(1 for x in lines if x == line)


# ------------------------------------------------------------- both backends


SERVE_ONE = """
with Server(ProcessServlet(Chatty, cpus=[0])) as server:
    assert server.call(1, timeout=120) == 1
print('done', flush=True)
"""


@pytest.mark.parametrize('configure', ['in_main', 'at_import'])
def test_worker_records_reach_the_main_handlers_once_in_the_main_format(backend, tmp_path, configure):
    how = CONFIGURE_IN_MAIN if configure == 'in_main' else CONFIGURE_AT_IMPORT
    out, err = run_script(tmp_path, backend.name, how, SERVE_ONE)
    lines = err.splitlines()
    assert count(lines, 'MAIN INFO Chatty-process-0 w info from call 1') == 1, err
    assert count(lines, 'MAIN WARNING Chatty-process-0 w warning from call 1') == 1, err
    assert count(lines, 'MAIN INFO Chatty-process-0 w built in __init__') == 1, err
    assert 'debug from call' not in err
    # print() goes to the inherited stdout, untouched.
    assert out.splitlines().count('printed from call 1') == 1, out
    assert out.splitlines()[-1] == 'done'


# ------------------------------------------------------------- mpserver only


@pytest.fixture(scope='module')
def lifecycle(tmp_path_factory):
    """One mpserver run: records of every kind, a worker killed by SIGKILL
    and restarted, a stop; (stdout lines, stderr lines, stderr)."""
    body = """
    from mpserver import WorkerCrashedError

    with Server(ProcessServlet(Chatty, cpus=[0])) as server:
        assert server.call(1, timeout=120) == 1
        assert server.call('exc', timeout=120) == 'exc'
        try:
            server.call('kill', timeout=120)
        except WorkerCrashedError:
            print('crashed', flush=True)
        assert server.call(2, timeout=120) == 2  # the restarted worker
    print('done', flush=True)
    """
    out, err = run_script(tmp_path_factory.mktemp('lifecycle'), 'mpserver', CONFIGURE_IN_MAIN, body)
    return out.splitlines(), err.splitlines(), err


def test_debug_records_are_not_sent_when_the_main_process_is_at_info(lifecycle):
    _, _, err = lifecycle
    assert 'debug from call' not in err


def test_a_record_logged_in_init_arrives_again_after_a_restart(lifecycle):
    _, lines, err = lifecycle
    assert count(lines, 'MAIN INFO Chatty-process-0 w built in __init__') == 2, err


def test_logger_exception_arrives_with_its_traceback(lifecycle):
    _, lines, err = lifecycle
    i = lines.index('MAIN ERROR Chatty-process-0 w it failed')
    assert lines[i + 1] == 'Traceback (most recent call last):', err
    assert "KeyError: 'missing-key'" in lines[i + 2 : i + 8], err


def test_print_in_a_worker_reaches_stdout(lifecycle):
    out, _, _ = lifecycle
    assert out.count('printed from call 1') == 1 and out.count('printed from call 2') == 1, out
    assert out[-1] == 'done'


def test_the_mpserver_logger_reports_start_crash_restart_and_stop(lifecycle):
    out, lines, err = lifecycle
    assert 'crashed' in out
    mp = [x for x in lines if x.startswith('MAIN ') and ' MainProcess mpserver ' in x]
    started = [x for x in mp if x.startswith('MAIN INFO MainProcess mpserver started 1 worker process and 0 ')]
    assert len(started) == 1 and 'ProcessServlet(Chatty)' in started[0], err
    crash = [x for x in mp if x.startswith('MAIN WARNING ') and 'Chatty-process-0' in x]
    assert len(crash) == 1 and 'SIGKILL' in crash[0] and '1 item' in crash[0], err
    restarted = [x for x in mp if x.startswith('MAIN INFO ') and 'restarted worker process Chatty-process-0' in x]
    assert len(restarted) == 1, err
    assert count(lines, 'MAIN INFO MainProcess mpserver worker process Chatty-process-0 is ready') == 1, err
    stopping = [x for x in mp if x.startswith('MAIN INFO MainProcess mpserver stopping')]
    assert len(stopping) == 1, err
    # In that order.
    assert lines.index(started[0]) < lines.index(crash[0]) < lines.index(restarted[0]) < lines.index(stopping[0])


def test_records_follow_the_levels_of_the_main_process_at_spawn_time(tmp_path):
    # Root at WARNING, logger 'w' at DEBUG: the worker sends what 'w' takes
    # (its DEBUG too); a record of another logger at INFO is not handled.
    body = """
    logging.getLogger('w').setLevel(logging.DEBUG)
    with Server(ProcessServlet(Chatty, cpus=[0])) as server:
        assert server.call(1, timeout=120) == 1
    """
    configure = """
if __name__ == '__main__':
    logging.basicConfig(level=logging.WARNING, format=MAIN_FORMAT, stream=sys.stderr)
"""
    _, err = run_script(tmp_path, 'mpserver', configure, body)
    lines = err.splitlines()
    assert count(lines, 'MAIN DEBUG Chatty-process-0 w debug from call 1') == 1, err
    assert count(lines, 'MAIN INFO Chatty-process-0 w info from call 1') == 1, err
    assert ' mpserver ' not in err  # its INFO records are below the root's WARNING


def test_a_restart_whose_init_fails_and_a_spent_budget_are_errors(tmp_path):
    body = """
    from mpserver import WorkerCrashedError


    with Server(ProcessServlet(OnlyOnce, cpus=[0], max_restarts=2)) as server:
        assert server.call(1, timeout=120) == 1
        for x in ('kill', 2):
            try:
                server.call(x, timeout=120)
            except WorkerCrashedError:
                print('crashed', x, flush=True)
    """
    configure = (
        """
class OnlyOnce(Chatty):
    def __init__(self, **kwargs):
        if os.path.exists('started'):
            raise RuntimeError('this worker starts only once')
        open('started', 'w').close()
        super().__init__(**kwargs)

"""
        + CONFIGURE_IN_MAIN
    )
    out, err = run_script(tmp_path, 'mpserver', configure, body)
    assert out.splitlines() == ['printed from call 1', 'crashed kill', 'crashed 2'], out
    lines = err.splitlines()
    failed = [x for x in lines if x.startswith('MAIN ERROR MainProcess mpserver worker process OnlyOnce-process-0 ')]
    assert len(failed) == 2 and 'could not start again' in failed[0], err
    assert 'RuntimeError: this worker starts only once' in err
    spent = [x for x in lines if x.startswith('MAIN ERROR MainProcess mpserver ProcessServlet(OnlyOnce) has no live')]
    assert len(spent) == 1 and 'max_restarts=2' in spent[0], err


def test_records_of_a_worker_whose_init_fails_arrive_before_the_error(tmp_path):
    body = """
    try:
        with Server(ProcessServlet(Refuses, cpus=[0])) as server:
            pass
    except ValueError as e:
        print('refused:', e, flush=True)
    """
    configure = (
        """
class Refuses(Worker):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        logging.getLogger('w').warning('about to refuse')
        raise ValueError('no, thanks')

"""
        + CONFIGURE_IN_MAIN
    )
    out, err = run_script(tmp_path, 'mpserver', configure, body)
    assert out.splitlines() == ['refused: no, thanks'], out
    assert count(err.splitlines(), 'MAIN WARNING Refuses-process-0 w about to refuse') == 1, err


def test_a_forked_child_exiting_does_not_stop_the_forwarding(tmp_path):
    # The child runs the atexit hooks it inherited: they must leave its
    # parent's control ring alone.
    body = """
    with Server(ProcessServlet(Chatty, cpus=[0])) as server:
        pid = os.fork()
        if pid == 0:
            sys.exit(0)
        os.waitpid(pid, 0)
        assert server.call(1, timeout=120) == 1
    """
    _, err = run_script(tmp_path, 'mpserver', CONFIGURE_IN_MAIN, body)
    assert count(err.splitlines(), 'MAIN INFO Chatty-process-0 w info from call 1') == 1, err


# --------------------------------------------------- the parts, in this process


@pytest.fixture
def core():
    from types import SimpleNamespace

    from mpserver import _core
    from mpserver._observe.logs import LogPump
    from mpserver._worker.log_forward import RingHandler, pack

    # The worker's half of the control channel (pack, RingHandler) and the main process's (LogPump).
    return _core, SimpleNamespace(pack=pack, RingHandler=RingHandler, LogPump=LogPump)


def _record(msg, *args, exc_info=None):
    return logging.LogRecord('w', logging.WARNING, __file__, 1, msg, args, exc_info)


def test_a_packed_record_is_self_contained(core):
    _, logs = core
    try:
        raise ValueError('bad value')
    except ValueError:
        rec = _record('x=%s y=%d', 'a', 3, exc_info=sys.exc_info())
    rec.unpicklable = threading.Lock()
    d = pickle.loads(logs.pack(rec, 1 << 16))
    assert d['msg'] == 'x=a y=3' and d['args'] is None and d['exc_info'] is None
    assert 'ValueError: bad value' in d['exc_text']
    assert d['unpicklable'].startswith('<unlocked _thread.lock')
    assert rec.args == ('a', 3) and rec.exc_info is not None  # the record itself is untouched


def test_a_packed_record_fits_one_frame(core):
    _core, logs = core
    limit = _core.Ring.create(_core.CONTROL_RING_BYTES).max_chunk
    rec = _record('%s', 'é' * 200_000)
    rec.exc_text = 'Traceback\n' + 'x' * 50_000
    data = logs.pack(rec, limit)
    assert len(data) <= limit
    d = pickle.loads(data)
    assert d['msg'].startswith('éééé') and d['msg'].endswith('characters cut to fit the control ring]')


def test_a_full_ring_drops_records_after_the_timeout_and_says_so_later(core):
    _core, logs = core
    ring = _core.Ring.create(64 << 10)
    handler = logs.RingHandler(ring, timeout=0.2)
    rec = _record('%s', 'y' * 4000)
    t0 = time.monotonic()
    for _ in range(40):  # ~160 KB into a 64 KiB ring nobody reads
        handler.handle(rec)
    elapsed = time.monotonic() - t0
    assert 0.15 < elapsed < 5, elapsed  # one wait of the timeout, then no more waiting
    got = ring.gather(1000, 0.0, 0.0)
    handler.handle(_record('after'))
    got = ring.gather(10, 0.0, 0.0)
    msgs = [pickle.loads(p)['msg'] for _, _, _, p in got]
    assert msgs[0] == 'after'
    assert msgs[1].endswith('log record(s) of this worker process were dropped: the control ring stayed full'), msgs


def test_the_pump_survives_a_raising_handler_and_drains_at_close(core, monkeypatch):
    _core, logs = core
    from mpserver._wire.codec import FLAG_CONTROL

    class Failing(logging.Handler):
        def emit(self, record):
            raise RuntimeError('handler broke')

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.got = []

        def emit(self, record):
            self.got.append(record.getMessage())

    bad, good = logging.getLogger('test_logging.bad'), logging.getLogger('test_logging.good')
    failing, keep = Failing(), Keep()
    bad.addHandler(failing)
    good.addHandler(keep)
    bad.propagate = good.propagate = False
    bad.setLevel(logging.INFO)
    good.setLevel(logging.INFO)
    stderr = io.StringIO()
    monkeypatch.setattr(sys, 'stderr', stderr)
    try:
        ring = _core.Ring.create(_core.CONTROL_RING_BYTES)
        pump = logs.LogPump(ring, {})
        pump.start()
        for name, msg in [('test_logging.bad', 'one'), ('test_logging.good', 'two'), ('test_logging.good', 'three')]:
            rec = logging.LogRecord(name, logging.INFO, __file__, 1, msg, None, None)
            assert ring.push(0, FLAG_CONTROL, logs.pack(rec, ring.max_chunk), int(_core.Control.LOG)) == 0
        assert pump.close(30)
    finally:
        bad.removeHandler(failing)
        good.removeHandler(keep)
    assert keep.got == ['two', 'three']
    assert '--- Logging error ---' in stderr.getvalue() and 'handler broke' in stderr.getvalue()


def test_no_print_calls_in_the_package():
    import ast

    pkg = os.path.join(PYTHON_DIR, 'mpserver')
    found = []
    for name in sorted(os.listdir(pkg)):
        if name.endswith('.py'):
            with open(os.path.join(pkg, name), encoding='utf-8') as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'print':
                    found.append(f'{name}:{node.lineno}')
    assert not found, found
