"""Worker-level API: attributes, batching, preprocess, stream threads, cleanup,
init kwargs, CPU pinning, thread servlets, make_worker, PassThrough, init failure.

Every test runs once per backend through the ``backend`` fixture.
"""

import ast
import multiprocessing
import os
import threading
from collections import Counter

import pytest


def collect_until(server, inputs, predicate, rounds=10):
    """Stream ``inputs`` repeatedly (at most ``rounds`` times) until
    ``predicate(all results so far)`` holds; return all results."""
    results = []
    for _ in range(rounds):
        results.extend(server.stream(inputs))
        if predicate(results):
            break
    return results


# ---------------------------------------------------------------- Worker attributes


def test_worker_defaults_in_process(backend):
    W = backend.w.Info
    with backend.Server(backend.ProcessServlet(W)) as server:
        info = server.call(0)
        main_pid = os.getpid()
    assert info['x'] == 0
    assert info['worker_index'] == 0
    assert info['batch_size'] == 0
    assert info['batch_wait_time'] == 0
    assert info['cpu_affinity'] is None
    assert info['name'] == f'{W.__name__}-process-0-MainThread'
    assert info['call_got_list'] is False
    assert info['pid'] != main_pid


@pytest.mark.parametrize(
    'kwargs, batch_size, batch_wait_time',
    [
        ({'batch_size': None}, 0, 0),
        ({'batch_size': 0, 'batch_wait_time': 0}, 0, 0),
        ({'batch_size': 1}, 1, 0),
        ({'batch_size': 5}, 5, 0.01),
        ({'batch_size': 5, 'batch_wait_time': 0.2}, 5, 0.2),
        ({'batch_size': 3, 'batch_wait_time': 0}, 3, 0),
    ],
    ids=['none', 'zero-zero', 'one', 'five-default-wait', 'five-wait-0.2', 'three-wait-0'],
)
def test_worker_batch_attributes(backend, kwargs, batch_size, batch_wait_time):
    with backend.Server(backend.ProcessServlet(backend.w.Info, **kwargs)) as server:
        info = server.call(0)
    assert info['batch_size'] == batch_size
    assert info['batch_wait_time'] == pytest.approx(batch_wait_time)
    # with batch_size >= 1, `call` receives a list (a batch of one here)
    assert info['call_got_list'] is (batch_size > 0)
    if batch_size > 0:
        assert info['batch_len'] == 1


@pytest.mark.parametrize(
    'kwargs',
    [
        {'batch_size': 0, 'batch_wait_time': 0.1},
        {'batch_size': 1, 'batch_wait_time': 0.5},
        {'batch_wait_time': 0.1},
    ],
    ids=['size0-wait', 'size1-wait', 'sizeNone-wait'],
)
def test_invalid_batch_wait_time_fails_at_start(backend, kwargs):
    server = backend.Server(backend.ProcessServlet(backend.w.Info, **kwargs))
    entered = False
    with pytest.raises((AssertionError, ValueError)):
        with server:
            entered = True
    assert entered is False


def test_worker_name_with_custom_worker_name_and_indices(backend):
    with backend.Server(backend.ProcessServlet(backend.w.Info, cpus=2, worker_name='crunch')) as server:
        infos = collect_until(server, [0.02] * 20, lambda rs: {r['worker_index'] for r in rs} == {0, 1})
    by_index = {r['worker_index']: r for r in infos}
    assert set(by_index) == {0, 1}
    assert by_index[0]['name'] == 'crunch-0-MainThread'
    assert by_index[1]['name'] == 'crunch-1-MainThread'
    assert by_index[0]['pid'] != by_index[1]['pid']


def test_thread_servlet_worker_names_and_indices(backend):
    W = backend.w.Info
    proc_name = multiprocessing.current_process().name
    with backend.Server(backend.ThreadServlet(W, num_threads=2)) as server:
        infos = collect_until(server, [0.02] * 20, lambda rs: {r['worker_index'] for r in rs} == {0, 1})
    by_index = {r['worker_index']: r for r in infos}
    assert set(by_index) == {0, 1}
    for i in (0, 1):
        assert by_index[i]['name'] == f'{proc_name}-{W.__name__}-thread-{i}'
        assert by_index[i]['pid'] == os.getpid()
        assert by_index[i]['cpu_affinity'] is None
        assert by_index[i]['batch_size'] == 0


def test_thread_servlet_custom_worker_name(backend):
    proc_name = multiprocessing.current_process().name
    with backend.Server(backend.ThreadServlet(backend.w.Info, worker_name='io')) as server:
        info = server.call(0)
    assert info['name'] == f'{proc_name}-io-0'
    assert info['worker_index'] == 0


# ---------------------------------------------------------------- batching


def test_batching_stream_forms_full_batches(backend):
    data = list(range(300))
    with backend.Server(backend.ProcessServlet(backend.w.BatchLen, batch_size=10, batch_wait_time=0.05)) as server:
        out = list(server.stream(data))
    assert [x for x, _ in out] == data
    sizes = Counter(n for _, n in out)
    assert max(sizes) == 10
    assert min(sizes) >= 1
    # each batch of size k contributes exactly k items reporting k
    assert all(count % k == 0 for k, count in sizes.items())
    batches = {k: count // k for k, count in sizes.items()}
    total_batches = sum(batches.values())
    assert batches[10] * 2 > total_batches  # most batches are full


def test_batching_sequential_calls_are_batches_of_one(backend):
    with backend.Server(backend.ProcessServlet(backend.w.BatchLen, batch_size=10, batch_wait_time=0)) as server:
        out = [server.call(i) for i in range(20)]
    assert out == [(i, 1) for i in range(20)]


def test_batching_default_wait_time_with_call(backend):
    # default batch_wait_time (0.01 s) with one-at-a-time calls: still batches of one
    with backend.Server(backend.ProcessServlet(backend.w.BatchLen, batch_size=4)) as server:
        assert [server.call(i) for i in range(5)] == [(i, 1) for i in range(5)]


def test_batched_call_exception_applies_to_whole_batch(backend):
    data = [1, 2, -3, 4, 5]
    with backend.Server(backend.ProcessServlet(backend.w.BatchLen, batch_size=10, batch_wait_time=0.5)) as server:
        out = list(server.stream(data, return_exceptions=True))
        # the server is fine afterwards
        assert server.call(7) == (7, 1)
    errs = {i: y for i, y in enumerate(out) if isinstance(y, BaseException)}
    assert 2 in errs  # the batch containing -3 failed
    msg = str(errs[2])
    assert type(errs[2]) is ValueError and msg.startswith('negative item in batch ')
    failed_batch = ast.literal_eval(msg[len('negative item in batch ') :])
    assert -3 in failed_batch
    assert len(failed_batch) >= 2  # several items arrived within the 0.5 s wait
    for i, x in enumerate(data):
        if x in failed_batch:
            assert type(out[i]) is ValueError
            assert str(out[i]) == msg
        else:
            assert not isinstance(out[i], BaseException)
            assert out[i][0] == x


def test_batched_call_exception_propagates_to_each_caller(backend):
    # Concurrent calls land in one batch; every caller gets the batch's exception.
    with backend.Server(backend.ProcessServlet(backend.w.BatchLen, batch_size=10, batch_wait_time=0.5)) as server:
        results = {}

        def go(x):
            try:
                results[x] = server.call(x, timeout=60)
            except Exception as e:  # noqa: BLE001 - each caller's outcome, checked below
                results[x] = e

        threads = [threading.Thread(target=go, args=(x,)) for x in (10, -1, 11)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert isinstance(results[-1], ValueError)
    failed_batch = ast.literal_eval(str(results[-1])[len('negative item in batch ') :])
    for x in (10, 11):
        if x in failed_batch:
            assert type(results[x]) is ValueError and str(results[x]) == str(results[-1])
        else:
            assert results[x][0] == x


# ---------------------------------------------------------------- preprocess


def test_preprocess_in_stream(backend):
    with backend.Server(backend.ProcessServlet(backend.w.Prep)) as server:
        out = list(server.stream([1, -2, 3, -4, 5], return_exceptions=True))
        report = server.call('report')
    assert out[0] == 3 and out[2] == 7 and out[4] == 11
    for i, v in ((1, -2), (3, -4)):
        assert type(out[i]) is ValueError
        assert str(out[i]) == f'negative input {v}'
    # preprocess saw each input exactly once, never an exception object;
    # call only got the successfully preprocessed values.
    assert report == {'preprocessed': [1, -2, 3, -4, 5, 'report'], 'called': [2, 6, 10]}


def test_preprocess_in_call(backend):
    with backend.Server(backend.ProcessServlet(backend.w.Prep)) as server:
        assert server.call(4) == 9
        with pytest.raises(ValueError, match='negative input -7') as ei:
            server.call(-7)
        assert server.call(0) == 1
        report = server.call('report')
    assert backend.is_remote_exception(ei.value)
    tb = backend.get_remote_traceback(ei.value)
    assert 'preprocess' in tb and 'negative input -7' in tb
    assert report == {'preprocessed': [4, -7, 0, 'report'], 'called': [8, 0]}


def test_preprocess_with_batching(backend):
    with backend.Server(backend.ProcessServlet(backend.w.Prep, batch_size=4, batch_wait_time=0.05)) as server:
        data = [1, -2, 3, -4, 5, 6, 7, -8, 9]
        out = list(server.stream(data, return_exceptions=True))
        with pytest.raises(ValueError, match='negative input -1'):
            server.call(-1)
        report = server.call('report')
    for x, y in zip(data, out, strict=False):
        if x < 0:
            assert type(y) is ValueError and str(y) == f'negative input {x}'
        else:
            assert y == 2 * x + 1
    assert report['preprocessed'] == data + [-1, 'report']
    assert report['called'] == [2 * x for x in data if x >= 0]


# ---------------------------------------------------------------- num_stream_threads


def test_num_stream_threads_runs_calls_concurrently(backend):
    with backend.Server(backend.ProcessServlet(backend.w.Concurrency)) as server:
        out = list(server.stream(range(8)))
    assert [x for x, _ in out] == list(range(8))
    max_concurrency = max(m for _, m in out)
    assert 2 <= max_concurrency <= 4


# ---------------------------------------------------------------- cleanup & init kwargs


def test_cleanup_called_at_exit(backend, tmp_path):
    with backend.Server(backend.ProcessServlet(backend.w.Cleanup, cpus=2, marker_dir=str(tmp_path))) as server:
        assert server.call(3) == 3
        assert sorted(os.listdir(tmp_path)) == []  # not before exit
    assert sorted(os.listdir(tmp_path)) == ['cleanup-0', 'cleanup-1']
    texts = [(tmp_path / f'cleanup-{i}').read_text() for i in (0, 1)]
    assert all(t.startswith('None calls=') for t in texts)
    assert sum(int(t.rsplit('=', 1)[1]) for t in texts) == 1


def test_cleanup_called_for_thread_workers(backend, tmp_path):
    with backend.Server(backend.ThreadServlet(backend.w.Cleanup, marker_dir=str(tmp_path))) as server:
        assert server.call('a') == 'a'
        assert server.call('b') == 'b'
    assert os.listdir(tmp_path) == ['cleanup-0']
    assert (tmp_path / 'cleanup-0').read_text() == 'None calls=2'


def test_init_kwargs_process_servlet(backend):
    with backend.Server(backend.ProcessServlet(backend.w.Greeter, greeting='hi', factor=3)) as server:
        assert server.call(2) == 'hi 6 from 0'
        assert list(server.stream(['ab', 1])) == ['hi ababab from 0', 'hi 3 from 0']


def test_init_kwargs_may_hold_multiprocessing_objects(backend):
    """A queue, an event and a shared value from ``get_mp_context()`` in a process
    worker's kwargs: each worker process uses the very objects of the main process."""
    ctx = backend.Server.get_mp_context()
    queue, event, total = ctx.Queue(), ctx.Event(), ctx.Value('i', 0)
    servlet = backend.ProcessServlet(backend.w.Messenger, cpus=2, queue=queue, event=event, total=total)
    with backend.Server(servlet) as server:
        assert server.call(1) is False
        event.set()
        assert list(server.stream(range(2, 40))) == [True] * 38
    got = sorted(queue.get(timeout=30) for _ in range(39))
    assert sorted(x for _, x in got) == list(range(1, 40))
    assert {i for i, _ in got} <= {0, 1}
    assert total.value == sum(range(1, 40))


def test_init_kwargs_thread_servlet(backend):
    with backend.Server(backend.ThreadServlet(backend.w.Greeter, greeting='hello')) as server:
        assert server.call(5) == 'hello 5 from 0'


def test_init_failure_raises_in_caller(backend):
    server = backend.Server(backend.ProcessServlet(backend.w.InitFail))
    entered = False
    with pytest.raises(ValueError) as ei:
        with server:
            entered = True
    assert entered is False
    assert 'boom' in str(ei.value)
    # nothing was left running: a fresh server works fine
    with backend.Server(backend.ProcessServlet(backend.w.Square)) as server2:
        assert server2.call(3) == 9


def test_init_failure_in_thread_servlet(backend):
    with pytest.raises(ValueError, match='boom'):
        with backend.Server(backend.ThreadServlet(backend.w.InitFail)):
            pass


# ---------------------------------------------------------------- CPU pinning


def test_cpus_single_pinned_worker(backend):
    with backend.Server(backend.ProcessServlet(backend.w.Info, cpus=[0])) as server:
        info = server.call(0)
    assert info['worker_index'] == 0
    assert info['cpu_affinity'] == [0]
    assert info['affinity'] == [0]


def test_cpus_one_worker_on_two_cpus(backend):
    with backend.Server(backend.ProcessServlet(backend.w.Info, cpus=[[0, 1]])) as server:
        info = server.call(0)
    assert info['cpu_affinity'] == [0, 1]
    assert info['affinity'] == [0, 1]


def test_cpus_two_workers_pinned_differently(backend):
    with backend.Server(backend.ProcessServlet(backend.w.Info, cpus=[0, 1])) as server:
        infos = collect_until(server, [0.02] * 20, lambda rs: {r['worker_index'] for r in rs} == {0, 1})
    seen = {(r['worker_index'], tuple(r['affinity']), tuple(r['cpu_affinity'])) for r in infos}
    assert seen == {(0, (0,), (0,)), (1, (1,), (1,))}


def test_cpus_int_means_unpinned_workers(backend):
    all_cpus = sorted(os.sched_getaffinity(0))
    with backend.Server(backend.ProcessServlet(backend.w.Info, cpus=2)) as server:
        infos = collect_until(server, [0.02] * 20, lambda rs: {r['worker_index'] for r in rs} == {0, 1})
    assert {r['worker_index'] for r in infos} == {0, 1}
    assert len({r['pid'] for r in infos}) == 2
    for r in infos:
        assert r['cpu_affinity'] is None
        assert r['affinity'] == all_cpus


# ---------------------------------------------------------------- threads, make_worker, PassThrough


def test_thread_servlet_num_threads(backend):
    with backend.Server(backend.ThreadServlet(backend.w.Info, num_threads=3)) as server:
        infos = collect_until(server, [0.03] * 30, lambda rs: len({r['worker_index'] for r in rs}) == 3)
        assert [r['x'] for r in server.stream([0.01, 0, 0.02, 0])] == [0.01, 0, 0.02, 0]
    assert {r['worker_index'] for r in infos} == {0, 1, 2}
    assert len({r['thread'] for r in infos}) == 3
    assert {r['pid'] for r in infos} == {os.getpid()}


def test_thread_servlet_with_make_worker_lambda(backend):
    W = backend.make_worker(lambda x: x + 1)
    assert issubclass(W, backend.Worker)
    with backend.Server(backend.ThreadServlet(W, num_threads=2)) as server:
        assert server.call(1) == 2
        assert list(server.stream(range(10))) == list(range(1, 11))


def test_make_worker_named_function(backend):
    calls = []

    def add_ten(x):
        calls.append(threading.current_thread().name)
        return x + 10

    W = backend.make_worker(add_ten)
    assert issubclass(W, backend.Worker)
    assert W.__name__ == 'Worker-add_ten'
    with backend.Server(backend.ThreadServlet(W)) as server:
        assert [server.call(i) for i in range(3)] == [10, 11, 12]
    assert len(calls) == 3
    assert threading.current_thread().name not in calls  # ran in the worker thread


def test_passthrough(backend):
    payload = {'a': [1, 2], 'b': ('x', None)}
    with backend.Server(backend.ThreadServlet(backend.PassThrough)) as server:
        assert server.call(payload) == payload
        assert list(server.stream([1, 'two', None, 3.5])) == [1, 'two', None, 3.5]
    with backend.Server(backend.ProcessServlet(backend.PassThrough, cpus=2)) as server:
        assert server.call(payload) == payload
        assert list(server.stream(range(20))) == list(range(20))
