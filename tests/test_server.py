"""Server-level API: call, stream, errors, timeouts, back-pressure, concurrency.

Every test runs once per backend through the ``backend`` fixture.
"""

import builtins
import itertools
import json
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from _waits import wait_until

# ---------------------------------------------------------------- call / stream


def test_call_returns_result(backend):
    with backend.Server(backend.ProcessServlet(backend.w.Square)) as server:
        assert server.call(7) == 49
        assert server.call(-3) == 9
        assert [server.call(i) for i in range(5)] == [0, 1, 4, 9, 16]
        assert server.call(1.5) == 2.25


def test_stream_preserves_input_order(backend):
    # Every third item is slow; with two worker processes results complete out
    # of order, but stream must yield them in input order.
    data = list(range(30))
    with backend.Server(backend.ProcessServlet(backend.w.SlowVarying, cpus=2)) as server:
        out = list(server.stream(data))
    assert out == [x * 10 for x in data]


def test_stream_return_x(backend):
    data = [4, 1, 3, 0, 2]
    with backend.Server(backend.ProcessServlet(backend.w.Square)) as server:
        out = list(server.stream(data, return_x=True))
    assert out == [(4, 16), (1, 1), (3, 9), (0, 0), (2, 4)]


def test_stream_return_exceptions(backend):
    with backend.Server(backend.ProcessServlet(backend.w.FailOn, cpus=2, bad=(3, 7))) as server:
        out = list(server.stream(range(10), return_exceptions=True))
        # return_x and return_exceptions together
        out_x = list(server.stream([2, 3], return_x=True, return_exceptions=True))
    assert len(out) == 10
    for i, y in enumerate(out):
        if i in (3, 7):
            assert type(y) is ValueError
            assert str(y) == f'refusing to process {i}'
        else:
            assert y == i * 10
    assert out_x[0] == (2, 20)
    assert out_x[1][0] == 3
    assert type(out_x[1][1]) is ValueError
    assert str(out_x[1][1]) == 'refusing to process 3'


def test_stream_propagates_exception_without_return_exceptions(backend):
    got = []
    with backend.Server(backend.ProcessServlet(backend.w.FailOn, bad=(5,))) as server:
        with pytest.raises(ValueError, match='refusing to process 5') as ei:
            for y in server.stream(range(20)):
                got.append(y)
        assert backend.is_remote_exception(ei.value)
        # everything before the failing item was delivered, in order
        assert got == [0, 10, 20, 30, 40]
        # the server keeps working after the aborted stream
        assert server.call(6) == 60
        assert wait_until(lambda: server.backlog == 0)


def test_stream_over_generator(backend):
    def gen():
        yield from range(25)

    with backend.Server(backend.ProcessServlet(backend.w.Square, cpus=2)) as server:
        assert list(server.stream(gen())) == [i * i for i in range(25)]


def test_stream_over_list_and_tuple(backend):
    with backend.Server(backend.ProcessServlet(backend.w.Square)) as server:
        assert list(server.stream([3, 1, 2])) == [9, 1, 4]
        assert list(server.stream((5, 6))) == [25, 36]
        assert list(server.stream([])) == []


def test_stream_over_endless_generator_consumed_partially(backend):
    got = []
    with backend.Server(backend.ProcessServlet(backend.w.Square, cpus=2)) as server:
        for y in server.stream(itertools.count()):
            got.append(y)
            if len(got) == 20:
                break
        assert server.call(12) == 144
        assert wait_until(lambda: server.backlog == 0)
    assert got == [i * i for i in range(20)]


# ---------------------------------------------------------------- exceptions


def test_call_reraises_original_exception_with_remote_traceback(backend):
    with backend.Server(backend.ProcessServlet(backend.w.FailOn)) as server:
        with pytest.raises(ValueError) as ei:
            server.call(3)
        assert server.call(4) == 40  # still serving
    e = ei.value
    assert type(e) is ValueError
    assert str(e) == 'refusing to process 3'
    assert e.args == ('refusing to process 3',)
    assert backend.is_remote_exception(e) is True
    tb = backend.get_remote_traceback(e)
    assert isinstance(tb, str)
    assert '_explode_on_purpose' in tb
    assert 'refusing to process 3' in tb
    assert 'ValueError' in tb


def test_custom_exception_type_and_args_survive(backend):
    from _backends import CustomError

    with backend.Server(backend.ProcessServlet(backend.w.FailOn)) as server:
        with pytest.raises(CustomError) as ei:
            server.call('custom')
    assert type(ei.value) is CustomError
    assert ei.value.args == ('custom failure', 42)
    assert backend.is_remote_exception(ei.value)
    assert 'custom failure' in backend.get_remote_traceback(ei.value)


def test_is_remote_exception_false_for_local_exception(backend):
    try:
        raise ValueError('local')
    except ValueError as e:
        local = e
    assert backend.is_remote_exception(local) is False
    assert backend.is_remote_exception(ValueError('never raised')) is False
    # the remote one, for contrast
    with backend.Server(backend.ProcessServlet(backend.w.FailOn)) as server:
        with pytest.raises(ValueError) as ei:
            server.call(3)
    assert backend.is_remote_exception(ei.value) is True


def _raise_key_error_here():
    raise KeyError('k')


def test_remote_exception_pickle_roundtrip(backend):
    try:
        _raise_key_error_here()
    except KeyError as e:
        err = e
    wrapped = backend.RemoteException(err)
    assert not isinstance(wrapped, BaseException)
    back = pickle.loads(pickle.dumps(wrapped))
    assert type(back) is KeyError
    assert back.args == ('k',)
    assert backend.is_remote_exception(back) is True
    tb = backend.get_remote_traceback(back)
    assert '_raise_key_error_here' in tb
    assert 'KeyError' in tb


def test_thread_servlet_reraises_original_exception(backend):
    with backend.Server(backend.ThreadServlet(backend.w.FailOn, bad=(2,))) as server:
        with pytest.raises(ValueError, match='refusing to process 2'):
            server.call(2)
        out = list(server.stream([1, 2, 3], return_exceptions=True))
    assert out[0] == 10 and out[2] == 30
    assert type(out[1]) is ValueError and str(out[1]) == 'refusing to process 2'


# ---------------------------------------------------------------- timeouts & back-pressure


def test_call_timeout(backend, tmp_path):
    gate = str(tmp_path / 'gate-open')
    with backend.Server(backend.ProcessServlet(backend.w.Gate)) as server:
        with pytest.raises(backend.TimeoutError) as ei:
            server.call((gate, 'slow'), timeout=0.3)
        assert isinstance(ei.value, builtins.TimeoutError)
        # the abandoned item is still being processed
        assert server.backlog == 1
        open(gate, 'w').close()
        # the server remains usable
        assert server.call((gate, 'next'), timeout=30) == 'next'
        assert wait_until(lambda: server.backlog == 0)
        assert server.backlog == 0


def test_exception_class_hierarchy(backend):
    assert issubclass(backend.TimeoutError, builtins.TimeoutError)
    assert issubclass(backend.ServerBacklogFull, RuntimeError)
    assert issubclass(backend.EnsembleError, RuntimeError)


def test_backpressure(backend, tmp_path):
    gate = str(tmp_path / 'gate-open')
    with backend.Server(backend.ProcessServlet(backend.w.Gate, cpus=2), capacity=2) as server:
        assert server.capacity == 2
        assert server.backlog == 0
        with ThreadPoolExecutor(2) as pool:
            futs = [pool.submit(server.call, (gate, i), timeout=60) for i in range(2)]
            assert wait_until(lambda: server.backlog == 2)

            # backpressure=True: rejected at once, even with a long timeout
            # (waiting would have succeeded once the gate opens).
            with pytest.raises(backend.ServerBacklogFull) as ei:
                server.call((gate, 'x'), backpressure=True, timeout=60)
            assert 'Server is at capacity with 2 items' in str(ei.value)
            assert isinstance(ei.value, RuntimeError)

            # backpressure=False: waits up to `timeout`, then gives up.
            t0 = time.monotonic()
            with pytest.raises(backend.ServerBacklogFull) as ei:
                server.call((gate, 'y'), backpressure=False, timeout=0.3)
            assert time.monotonic() - t0 >= 0.25
            assert 'Server is at capacity with 2 items' in str(ei.value)
            assert server.backlog == 2
            assert all(not f.done() for f in futs)

            open(gate, 'w').close()
            assert [f.result(timeout=60) for f in futs] == [0, 1]
        assert wait_until(lambda: server.backlog == 0)
        # capacity is free again
        assert server.call((gate, 'z'), backpressure=True) == 'z'


def test_backpressure_false_waits_for_a_free_slot(backend, tmp_path):
    gate = str(tmp_path / 'gate-open')
    with backend.Server(backend.ProcessServlet(backend.w.Gate), capacity=1) as server:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(server.call, (gate, 'first'), timeout=60)
            assert wait_until(lambda: server.backlog == 1)
            second = pool.submit(server.call, (gate, 'second'), backpressure=False, timeout=60)
            time.sleep(0.2)
            assert not second.done()
            open(gate, 'w').close()
            assert first.result(timeout=60) == 'first'
            assert second.result(timeout=60) == 'second'
        assert wait_until(lambda: server.backlog == 0)


def test_capacity_and_backlog_properties(backend):
    server = backend.Server(backend.ProcessServlet(backend.w.Square), capacity=7)
    assert server.capacity == 7
    assert backend.Server(backend.ProcessServlet(backend.w.Square)).capacity == 256
    with server:
        assert server.backlog == 0
        assert server.call(3) == 9
        assert server.backlog == 0
        assert server.capacity == 7


@pytest.mark.parametrize('capacity', [0, -1])
def test_nonpositive_capacity_rejected(backend, capacity):
    with pytest.raises((AssertionError, ValueError)):
        backend.Server(backend.ProcessServlet(backend.w.Square), capacity=capacity)


# ---------------------------------------------------------------- concurrency


def test_concurrent_callers(backend):
    def caller(k):
        return [(k, i, server.call(k * 100 + i)) for i in range(30)]

    with backend.Server(backend.ProcessServlet(backend.w.Square, cpus=2)) as server:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(caller, range(8)))
        assert server.backlog == 0
    assert len(results) == 8
    for k, rows in enumerate(results):
        assert len(rows) == 30
        for kk, i, y in rows:
            assert kk == k
            assert y == (k * 100 + i) ** 2


def test_concurrent_streams(backend):
    inputs = {'a': list(range(0, 40)), 'b': list(range(1000, 1040))}
    outputs = {}
    errors = []

    def consume(key):
        try:
            outputs[key] = list(server.stream(inputs[key]))
        except BaseException as e:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(e)

    with backend.Server(backend.ProcessServlet(backend.w.SlowVarying, cpus=2)) as server:
        threads = [threading.Thread(target=consume, args=(k,)) for k in inputs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert outputs['a'] == [x * 10 for x in inputs['a']]
    assert outputs['b'] == [x * 10 for x in inputs['b']]


def test_early_exit_from_stream(backend):
    pulled = []

    def source():
        for i in range(10_000):
            pulled.append(i)
            yield 0.01

    got = []
    with backend.Server(backend.ProcessServlet(backend.w.Sleeper, cpus=2), capacity=32) as server:
        for y in server.stream(source()):
            got.append(y)
            if len(got) == 5:
                break
        assert got == [0.01] * 5
        assert server.call(0.0, timeout=60, backpressure=False) == 0.0
        assert wait_until(lambda: server.backlog == 0, timeout=60)
        # the input was not drained to the end after the consumer left
        assert len(pulled) < 1000
    assert len(pulled) < 1000


# ---------------------------------------------------------------- misc server API


def test_debug_info_is_json_friendly(backend):
    with backend.Server(backend.ProcessServlet(backend.w.Square, cpus=2)) as server:
        server.call(2)
        info = server.debug_info()
    assert isinstance(info, dict)
    assert info['type'] == 'Server'
    text = json.dumps(info)
    assert json.loads(text)['type'] == 'Server'


def test_get_mp_context_is_spawn(backend):
    ctx = backend.Server.get_mp_context()
    assert ctx.get_start_method() == 'spawn'
    server = backend.Server(backend.ProcessServlet(backend.w.Square))
    assert server.get_mp_context().get_start_method() == 'spawn'
    lock = ctx.Lock()
    assert lock.acquire(timeout=1) is True
    lock.release()


def test_server_is_not_picklable(backend):
    server = backend.Server(backend.ProcessServlet(backend.w.Square))
    with pytest.raises(TypeError):
        pickle.dumps(server)
    with server:
        with pytest.raises(TypeError):
            pickle.dumps(server)
        assert server.call(5) == 25


def test_server_can_be_reused_sequentially(backend):
    # Two servers one after the other in the same process, same worker class.
    for k in range(2):
        with backend.Server(backend.ProcessServlet(backend.w.Square)) as server:
            assert server.call(k + 2) == (k + 2) ** 2


# ---------------------------------------------------------------- __main__ workers


_MAIN_SCRIPT = """
import os

{import_line}


class Doubler(Worker):
    def call(self, x):
        return (x * 2, os.getpid())


if __name__ == '__main__':
    with Server(ProcessServlet(Doubler, cpus=2)) as server:
        calls = [server.call(i) for i in range(3)]
        streamed = list(server.stream(range(10)))
    print('CALL', [v[0] for v in calls])
    print('STREAM', [v[0] for v in streamed])
    print('REMOTE', all(v[1] != os.getpid() for v in calls + streamed))
"""


def test_worker_class_defined_in_main_script(backend, tmp_path):
    import_line = {
        'mpservice': 'from mpservice.mpserver import ProcessServlet, Server, Worker',
        'mpserver': 'from mpserver import ProcessServlet, Server, Worker',
    }[backend.name]
    script = tmp_path / 'serve_main.py'
    script.write_text(textwrap.dedent(_MAIN_SCRIPT.format(import_line=import_line)))

    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.split(' ', 1)[0] in ('CALL', 'STREAM', 'REMOTE')]
    assert lines == [
        'CALL [0, 2, 4]',
        'STREAM [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]',
        'REMOTE True',
    ], proc.stdout + proc.stderr
