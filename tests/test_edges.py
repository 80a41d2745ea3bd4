"""Edges of the API: big payloads, exit while busy, bad inputs and results.

Tests that mpservice fails by hanging or by losing the item run on mpserver
only (the reason is stated on each); the rest run on both backends.
"""

import os
import pickle
import threading
import time

import _backends
import pytest
from _waits import wait_until as _wait_until


def _children() -> set[int]:
    """Pids of this process's live child processes (via /proc), helpers aside."""
    me = str(os.getpid())
    out = set()
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open(f'/proc/{d}/stat') as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(')', 1)[1].split()
        if fields[1] == me and fields[0] != 'Z' and not _is_resource_tracker(d):
            out.add(int(d))
    return out


def _is_resource_tracker(pid: str) -> bool:
    """multiprocessing's lasting helper process (started on first use by mpservice)."""
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return b'resource_tracker' in f.read()
    except OSError:
        return False


@pytest.fixture
def mpserver_backend():
    try:
        return _backends.get_backend('mpserver')
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


# ---------------------------------------------------------------- both backends


def test_payload_larger_than_a_ring_passes_through(backend):
    # mpserver's rings hold 8 MiB; 24 MiB must still travel, both ways.
    big = bytes(range(256)) * (24 * 4096)
    with backend.Server(backend.ProcessServlet(backend.w.Echo)) as server:
        y = server.call(big, timeout=120)
        assert y == big
        out = list(server.stream([big[:10], big, b'xyz'], timeout=120))
    assert out[0] == big[:10] and out[1] == big and out[2] == b'xyz'


def test_big_payloads_streamed_to_two_workers(backend):
    chunks = [bytes([i]) * (3 << 20) for i in range(8)]  # 8 x 3 MiB
    with backend.Server(backend.ProcessServlet(backend.w.Describe, cpus=2)) as server:
        out = list(server.stream(chunks, timeout=120))
    assert out == [('bytes', 3 << 20, bytes([i]) * 4, bytes([i]) * 4) for i in range(8)]


def test_exit_lets_in_flight_calls_finish(backend):
    if backend.name == 'mpservice':
        pytest.skip(
            'mpservice can lose an item in flight at exit: its stop sentinel may '
            'overtake the item on the way to the workers, and the caller then waits '
            'for its whole timeout'
        )
    results = []

    def caller(server):
        results.append(server.call(0.3, timeout=60))

    with backend.Server(backend.ProcessServlet(backend.w.Sleeper)) as server:
        t = threading.Thread(target=caller, args=(server,))
        t.start()
        assert _wait_until(lambda: server.backlog == 1, 10)
    t.join(30)
    assert results == [0.3]


def test_init_failure_leaves_no_worker_running(backend):
    before = _children()
    with pytest.raises(ValueError):
        with backend.Server(backend.ProcessServlet(backend.w.InitFail, cpus=2)):
            pass
    assert _wait_until(lambda: _children() <= before, 10), _children() - before


def test_thread_servlet_passes_objects_by_reference(backend):
    lock = threading.Lock()  # cannot be pickled
    with backend.Server(backend.ThreadServlet(backend.w.Echo)) as server:
        assert server.call(lock) is lock
        assert list(server.stream([lock, lock])) == [lock, lock]


def test_servers_one_after_another_leave_nothing_behind(backend):
    before = _children()
    for i in range(3):
        with backend.Server(backend.ProcessServlet(backend.w.Square, cpus=2)) as server:
            assert server.call(i) == i * i
    assert _wait_until(lambda: _children() <= before, 10), _children() - before


# ---------------------------------------------------------------- mpserver only
# mpservice loses the item (and the caller waits until its timeout) or hangs in
# these situations; mpserver turns each into an error for that item or call.


def test_unpicklable_input_raises_in_the_caller(mpserver_backend):
    b = mpserver_backend
    with b.Server(b.ProcessServlet(b.w.Square)) as server:
        with pytest.raises((pickle.PicklingError, TypeError, AttributeError)) as ei:
            server.call(threading.Lock())
        assert 'lock' in str(ei.value).lower()
        assert server.call(3) == 9
        assert server.backlog == 0
        out = list(server.stream([2, lambda: 0, 4], return_exceptions=True))
    assert out[0] == 4 and out[2] == 16
    assert isinstance(out[1], (pickle.PicklingError, TypeError, AttributeError))


def test_unpicklable_result_is_that_items_error(mpserver_backend):
    b = mpserver_backend
    with b.Server(b.ProcessServlet(b.w.Unpicklable)) as server:
        out = list(server.stream(range(4), return_exceptions=True))
        assert out[0] == 0 and out[2] == 2
        for e in (out[1], out[3]):
            assert isinstance(e, pickle.PicklingError)
            assert 'lock' in str(e)
        assert server.call(6) == 6


def test_batch_with_wrong_number_of_results_fails_every_item(mpserver_backend):
    b = mpserver_backend
    with b.Server(b.ProcessServlet(b.w.WrongLength)) as server:
        out = list(server.stream(range(4), return_exceptions=True, timeout=30))
    assert len(out) == 4
    for e in out:
        assert isinstance(e, ValueError)
        assert 'returned 3 results for a batch of 4' in str(e)


def test_worker_exiting_during_startup_is_an_error_not_a_hang(mpserver_backend):
    b = mpserver_backend
    with pytest.raises(b.module.WorkerStartupError) as ei:
        with b.Server(b.ProcessServlet(b.w.ExitInInit)):
            pass
    assert 'exited with code 3' in str(ei.value)
    assert 'ExitInInit' in str(ei.value)


def test_make_worker_class_in_a_process_servlet_is_explained(mpserver_backend):
    b = mpserver_backend
    with pytest.raises(TypeError, match='ThreadServlet'):
        with b.Server(b.ProcessServlet(b.make_worker(lambda x: x))):
            pass


def test_server_outside_with_block(mpserver_backend):
    b = mpserver_backend
    server = b.Server(b.ThreadServlet(b.w.Square))
    with pytest.raises(RuntimeError, match='not started'):
        server.call(1)
    with server:
        assert server.call(2) == 4
    with pytest.raises(RuntimeError, match='stopped'):
        server.call(1)
    with pytest.raises(RuntimeError, match='stopped'):
        list(server.stream([1]))


@pytest.mark.parametrize(
    'kwargs, match',
    [
        ({'cpus': -1}, 'cpus'),
        ({'cpus': 0}, '>= 1'),
        ({'cpus': [0, 4096]}, 'does not exist'),
        ({'cpus': ['a']}, 'entry 0'),
        ({'cpus': [[]]}, 'empty'),
        ({'cpus': 'all'}, 'cpus must be'),
    ],
)
def test_invalid_cpus_rejected_at_construction(mpserver_backend, kwargs, match):
    b = mpserver_backend
    with pytest.raises(ValueError, match=match):
        b.ProcessServlet(b.w.Square, **kwargs)


def test_invalid_settings_are_value_and_assertion_errors(mpserver_backend):
    b = mpserver_backend
    assert issubclass(b.module.ConfigError, ValueError)
    assert issubclass(b.module.ConfigError, AssertionError)
    with pytest.raises(b.module.ConfigError, match='batch_size'):
        with b.Server(b.ThreadServlet(b.w.Square, batch_size=-1)):
            pass
    with pytest.raises(ValueError, match='capacity'):
        b.Server(b.ThreadServlet(b.w.Square), capacity=0)
    with pytest.raises(AssertionError):
        b.Server(b.ThreadServlet(b.w.Square), capacity=-5)
    with pytest.raises(ValueError, match='num_threads'):
        b.ThreadServlet(b.w.Square, num_threads=0)
    with pytest.raises(ValueError, match='subclass'):
        b.ProcessServlet(object)
    with pytest.raises(ValueError, match='batch_wait_time'):
        with b.Server(b.ThreadServlet(b.w.Square, batch_size=1, batch_wait_time=0.5)):
            pass


CTRL_C_SCRIPT = r"""
import os, signal, sys, time
# A program started in the background by a shell without job control
# inherits SIGINT ignored (POSIX), and Python then leaves it so: this one
# wants Ctrl-C, as an interactive program has it.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path[:0] = {paths!r}
from mpserver import Server, ProcessServlet
import _backends
Sleeper = _backends.get_backend('mpserver').w.Sleeper

if __name__ == '__main__':
    with Server(ProcessServlet(Sleeper, cpus=2)) as server:
        try:
            print('pids', *server.servlet.workers, flush=True)
            {body}
        except KeyboardInterrupt:
            print('caller got KeyboardInterrupt', flush=True)
            raise
"""


@pytest.mark.parametrize('body', ['server.call(30, timeout=60)', 'list(server.stream([30] * 10, timeout=60))'])
def test_ctrl_c_interrupts_the_caller_and_stops_workers(mpserver_backend, tmp_path, body):
    import signal
    import subprocess
    import sys

    script = tmp_path / 'ctrl_c.py'
    script.write_text(CTRL_C_SCRIPT.format(paths=[os.path.dirname(__file__)], body=body))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith('pids'), line + proc.stderr.read()
        pids = [int(p) for p in line.split()[1:]]
        time.sleep(0.5)  # let the caller block in the core
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
    assert 'caller got KeyboardInterrupt' in out
    assert 'KeyboardInterrupt' in err
    assert elapsed < 10, elapsed  # the workers' 30 s items were not waited for
    assert err.count('Traceback') == 1, err  # only the main process's, no worker spam
    for pid in pids:
        assert not os.path.exists(f'/proc/{pid}') or open(f'/proc/{pid}/stat').read().split()[2] == 'Z'


def _native_threads() -> int:
    return len(os.listdir('/proc/self/task'))


def test_enter_exit_cycles_leak_no_fds_threads_or_children(backend):
    servlet = backend.ProcessServlet(backend.w.Square, cpus=2)
    server = backend.Server(servlet)

    def cycle(i):
        with server:
            assert server.call(i) == i * i
            assert list(server.stream(range(20))) == [x * x for x in range(20)]

    cycle(0)  # first use may create lasting helpers (e.g. a resource tracker)
    fds = len(os.listdir('/proc/self/fd'))
    threads = _native_threads()
    children = _children()
    for i in range(1, 6):
        cycle(i)
    assert _wait_until(lambda: _native_threads() <= threads, 10), (_native_threads(), threads)
    assert _wait_until(lambda: len(os.listdir('/proc/self/fd')) <= fds, 10)
    assert _wait_until(lambda: _children() <= children, 10)


def test_unguarded_main_script_gets_a_clear_error_not_a_process_storm(mpserver_backend, tmp_path):
    # Like multiprocessing's spawn, workers import the main script; a server
    # started at its top level must not start again in every worker.
    import subprocess
    import sys

    script = tmp_path / 'unguarded.py'
    script.write_text(
        'from mpserver import Server, ProcessServlet, Worker\n'
        'class W(Worker):\n'
        '    def call(self, x):\n'
        '        return x + 1\n'
        'with Server(ProcessServlet(W, cpus=2)) as s:\n'
        '    print("result", s.call(1))\n'
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "if __name__ == '__main__'" in proc.stderr
    assert 'RuntimeError' in proc.stderr
    assert 'result' not in proc.stdout


def test_a_busy_worker_does_not_hold_back_items_another_worker_can_take(backend, tmp_path):
    # Worker A is stuck on a gated item; every later item must be served by
    # the free worker B meanwhile (shared-queue dispatch, no per-worker queues).
    gate = str(tmp_path / 'gate')
    open_gate = str(tmp_path / 'open')
    open(open_gate, 'w').close()
    results = []
    with backend.Server(backend.ProcessServlet(backend.w.Gate, cpus=2)) as server:
        t = threading.Thread(target=lambda: results.append(server.call((gate, 'slow'), timeout=60)))
        t.start()
        assert _wait_until(lambda: server.backlog == 1, 10)
        time.sleep(0.2)  # let a worker pick up the gated item
        quick = [server.call((open_gate, i), timeout=20) for i in range(20)]
        assert quick == list(range(20))
        assert list(server.stream([(open_gate, i) for i in range(50)], timeout=20)) == list(range(50))
        assert results == []  # the gated item is still running
        open(gate, 'w').close()
        t.join(30)
    assert results == ['slow']


SYS_PATH_SCRIPT = r"""
import sys
sys.path.insert(0, {pkgs!r})
import mpserver
from mpserver import Server, ProcessServlet, Worker

class Where(Worker):
    def call(self, x):
        import mpserver
        return mpserver.__file__

if __name__ == '__main__':
    with Server(ProcessServlet(Where)) as server:
        print(mpserver.__file__)
        print(server.call(0))
"""


def test_mpserver_imported_from_a_runtime_sys_path_entry(mpserver_backend, tmp_path):
    # A copy of the package reachable only through sys.path set at run time:
    # the workers must run that same copy.
    import shutil
    import subprocess
    import sys

    src = os.path.dirname(mpserver_backend.module.__file__)
    pkgs = tmp_path / 'pkgs'
    shutil.copytree(src, pkgs / 'mpserver', ignore=shutil.ignore_patterns('__pycache__'))
    script = tmp_path / 'where.py'
    script.write_text(SYS_PATH_SCRIPT.format(pkgs=str(pkgs)))
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    main_file, worker_file = proc.stdout.split()
    assert main_file.startswith(str(pkgs))
    assert worker_file == main_file


@pytest.mark.parametrize('batch_size', [0, 16])
def test_many_items_none_lost_none_duplicated_order_kept(backend, batch_size):
    n = 30_000
    kwargs = {'batch_size': batch_size} if batch_size else {}
    with backend.Server(backend.ProcessServlet(backend.w.Echo, cpus=2, **kwargs), capacity=64) as server:
        out = list(server.stream(range(n), timeout=120))
        out2 = list(server.stream((i for i in range(n)), timeout=120))
    assert out == list(range(n))
    assert out2 == list(range(n))


def test_worker_class_from_python_c_gets_a_clear_error(mpserver_backend):
    import subprocess
    import sys

    code = (
        'from mpserver import Server, ProcessServlet, Worker\n'
        'class W(Worker):\n'
        '    def call(self, x):\n'
        '        return x\n'
        'with Server(ProcessServlet(W)) as s:\n'
        '    print(s.call(1))\n'
    )
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert 'TypeError' in proc.stderr
    assert 'interactive session' in proc.stderr


@pytest.mark.parametrize('timeout', [0, -1, 'soon', None, True])
def test_bad_timeouts_are_clear_errors(timeout):
    # mpserver-only: mpservice accepts such values and then times out at once
    # (or fails somewhere inside); mpserver rejects them up front with a
    # ValueError naming the value, and the server keeps serving.
    import asyncio

    import mpserver
    from _backends import get_backend

    w = get_backend('mpserver').w
    with mpserver.Server(mpserver.ProcessServlet(w.Square)) as server:
        with pytest.raises(ValueError, match='timeout'):
            server.call(3, timeout=timeout)
        with pytest.raises(ValueError, match='timeout'):
            list(server.stream([1, 2], timeout=timeout))
        with pytest.raises(ValueError, match='timeout'):
            asyncio.run(server.async_call(3, timeout=timeout))
        assert server.call(3) == 9


def test_stream_fills_batches_larger_than_its_sending_chunk(backend):
    """A stream keeps sending while it has capacity, so a worker gathering a
    batch larger than what one send carries gets full batches.  (mpserver
    once sent 64 items and then waited for the first result, so such a
    worker waited its whole batch_wait_time for inputs never sent.)"""
    b = backend
    servlet = b.ProcessServlet(b.w.BatchLen, batch_size=256, batch_wait_time=20)
    with b.Server(servlet, capacity=512) as server:
        results = list(server.stream(range(512), timeout=120))
    assert results == [(i, 256) for i in range(512)]
