"""Composed servlets: SequentialServlet, EnsembleServlet, SwitchServlet.

Every test runs once per backend through the ``backend`` fixture (here via
``cb``, which also checks that the backend has the composition API).
mpservice 0.16.8 is the reference; where it hangs instead of failing (a
``switch`` that raises or returns a bad index), the test is skipped for
mpservice and states the behaviour mpserver must have instead.
"""

import json
import os
import pickle
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from _backends import CustomError
from _waits import wait_until

COMPOSE_API = ('SequentialServlet', 'EnsembleServlet', 'SwitchServlet')


@pytest.fixture
def cb(backend):
    """The backend, provided it has the composition API."""
    missing = [n for n in COMPOSE_API if getattr(backend, n) is None]
    if missing:
        pytest.fail(f'backend {backend.name!r} lacks {", ".join(missing)}', pytrace=False)
    return backend


def member_error(b, v):
    """An error entry of an ensemble result list / EnsembleError, as an exception.

    mpservice leaks its internal ``RemoteException`` wrapper into these lists
    when the ensemble's output does not cross a process boundary (e.g. the
    ensemble is the last stage); it carries the exception as ``.exc``.  That
    wrapper is accepted for mpservice only: mpserver must give the exception
    instance itself.
    """
    if b.name == 'mpservice' and isinstance(v, b.RemoteException):
        return v.exc
    return v


def recorder():
    """A function (for make_worker in a ThreadServlet) that records the items it
    sees and passes them on; and the list it records them in."""
    seen = []
    lock = threading.Lock()

    def record(x):
        with lock:
            seen.append(x)
        return x

    return record, seen


ENSEMBLE_MSG = re.compile(
    r'(?P<n>\d+)/(?P<m>\d+) ensemble members finished, with (?P<k>\d+) errors?; first error: (?P<first>.*)',
    re.DOTALL,
)


def parse_ensemble_message(e):
    m = ENSEMBLE_MSG.fullmatch(str(e))
    assert m, f'unexpected EnsembleError message: {str(e)!r}'
    return int(m['n']), int(m['m']), int(m['k']), m['first']


# ---------------------------------------------------------------- SequentialServlet


@pytest.mark.parametrize('shape', ['PP', 'PTP', 'TP'])
def test_sequential_stages_run_in_order_in_their_processes(cb, shape):
    """Each stage sees the previous stage's output; P stages run in their own
    worker processes, T stages in threads of this process."""
    b = cb
    stages = [b.ProcessServlet(b.w.PidTrail) if kind == 'P' else b.ThreadServlet(b.w.PidTrail) for kind in shape]
    me = os.getpid()
    with b.Server(b.SequentialServlet(*stages)) as server:
        trail = server.call([('start', 'x')])
        streamed = list(server.stream([[i] for i in range(6)]))
    assert trail[0] == ('start', 'x')
    hops = trail[1:]
    assert len(hops) == len(shape)
    for kind, (pid, _thread) in zip(shape, hops, strict=True):
        if kind == 'P':
            assert pid != me
        else:
            assert pid == me
    proc_pids = [pid for kind, (pid, _) in zip(shape, hops, strict=True) if kind == 'P']
    assert len(set(proc_pids)) == len(proc_pids), 'two process stages shared a process'
    for i, out in enumerate(streamed):
        assert out[0] == i
        assert [pid for pid, _ in out[1:]] == [pid for pid, _ in hops]


def test_sequential_values_flow_through_stages(cb):
    b = cb
    s = b.SequentialServlet(
        b.ProcessServlet(b.w.Affix, suffix='-a'),
        b.ThreadServlet(b.w.Affix, suffix='-b'),
        b.ProcessServlet(b.w.Affix, suffix='-c'),
    )
    with b.Server(s) as server:
        assert server.call('x') == 'x-a-b-c'
        assert list(server.stream(['p', 'q'], return_x=True)) == [('p', 'p-a-b-c'), ('q', 'q-a-b-c')]


def test_sequential_stream_order_with_out_of_order_stage(cb):
    """A two-process stage finishes items out of order (every third item is
    slow); the stream still yields results in input order."""
    b = cb
    record, arrivals = recorder()
    s = b.SequentialServlet(
        b.ProcessServlet(b.w.SlowAdd, add=1, delays=(0.1, 0.0, 0.0), cpus=2),
        b.ThreadServlet(b.make_worker(record)),
        b.ProcessServlet(b.w.Double),
    )
    data = list(range(24))
    with b.Server(s) as server:
        out = list(server.stream(data))
        out_x = list(server.stream(data[:6], return_x=True))
    assert out == [(x + 1) * 2 for x in data]
    assert out_x == [(x, (x + 1) * 2) for x in data[:6]]
    # the middle stage really did see them out of order
    first_run = arrivals[: len(data)]
    assert sorted(first_run) == [x + 1 for x in data]
    assert first_run != sorted(first_run)


def test_sequential_nested_in_sequential_and_single_member(cb):
    b = cb
    inner = b.SequentialServlet(b.ProcessServlet(b.w.AddOne), b.ThreadServlet(b.w.Double))
    s = b.SequentialServlet(inner, b.SequentialServlet(b.ThreadServlet(b.w.AddOne)))
    with b.Server(s) as server:
        assert server.call(3) == 9
        assert list(server.stream(range(5))) == [(x + 1) * 2 + 1 for x in range(5)]


def test_nested_example_shape(cb):
    """The composition from mpservice's Servlet docstring, with distinct Tag
    workers, so the exact nested result shows each item's path."""
    b = cb
    P, T, Seq, Ens = b.ProcessServlet, b.ThreadServlet, b.SequentialServlet, b.EnsembleServlet
    Tag = b.w.Tag
    s = Seq(
        P(Tag, tag='w1'),
        Ens(
            T(Tag, tag='w2'),
            Seq(P(Tag, tag='w3'), T(Tag, tag='w4')),
        ),
        Ens(
            Seq(P(Tag, tag='w5'), P(Tag, tag='w6')),
            Seq(P(Tag, tag='w7'), T(Tag, tag='w8'), P(Tag, tag='w9')),
        ),
    )

    def expected(x):
        a = ('w1', x)
        mid = [('w2', a), ('w4', ('w3', a))]
        return [('w6', ('w5', mid)), ('w9', ('w8', ('w7', mid)))]

    with b.Server(s) as server:
        assert server.call('x') == expected('x')
        assert list(server.stream(range(5))) == [expected(i) for i in range(5)]
        assert len(s.children) == 3
        assert len(s.workers) == 9
        info = server.debug_info()
    assert json.loads(json.dumps(info))['servlet']['type'] == 'SequentialServlet'


# ---------------------------------------------------------------- EnsembleServlet


def test_ensemble_results_in_member_order(cb):
    """Member 0 is the slowest, yet its result comes first in the list."""
    b = cb
    s = b.EnsembleServlet(
        b.ProcessServlet(b.w.SlowAdd, add=100, delay=0.3),
        b.ThreadServlet(b.w.AddOne),
        b.ProcessServlet(b.w.Double),
    )
    with b.Server(s) as server:
        assert server.call(5) == [105, 6, 10]


def test_ensemble_stream_order_with_out_of_order_members(cb):
    b = cb
    s = b.EnsembleServlet(
        b.ProcessServlet(b.w.SlowAdd, add=100, delays=(0.08, 0.0, 0.0), cpus=2),
        b.ThreadServlet(b.w.SlowAdd, add=1, delays=(0.0, 0.05), num_threads=2),
    )
    data = list(range(20))
    with b.Server(s) as server:
        out = list(server.stream(data, return_x=True))
    assert out == [(x, [x + 100, x + 1]) for x in data]


def test_ensemble_fail_fast_error(cb, tmp_path):
    """fail_fast=True: the first member error makes the item's result an
    EnsembleError at once, without waiting for the other members."""
    b = cb
    gate = str(tmp_path / 'gate')
    s = b.EnsembleServlet(
        b.ProcessServlet(b.w.FailIf, value=3, tag='m0'),
        b.ThreadServlet(b.w.WaitFile, path=gate),  # holds every item until the gate opens
    )
    with b.Server(s) as server:
        with pytest.raises(b.EnsembleError) as ei:
            server.call(3, timeout=30)
        e = ei.value
        assert isinstance(e, RuntimeError)
        n, m, k, first = parse_ensemble_message(e)
        assert (n, m, k) == (1, 2, 1)
        assert re.fullmatch(r"(RemoteException\()?ValueError\('m0 rejects 3'\)\)?", first), first
        assert str(e).startswith('1/2 ensemble members finished, with 1 error; first error: ')
        # args: (message, {'y': per-member results, 'n': members finished})
        assert e.args[0] == str(e)
        results = e.args[1]
        assert results['n'] == 1
        assert len(results['y']) == 2
        assert results['y'][1] is None
        err = member_error(b, results['y'][0])
        assert type(err) is ValueError and str(err) == 'm0 rejects 3'

        open(gate, 'w').close()
        assert server.call(4, timeout=30) == [4, 4]
        assert wait_until(lambda: server.backlog == 0)


def test_ensemble_fail_fast_counts_members_finished_before_the_error(cb, tmp_path):
    b = cb
    done = str(tmp_path / 'member0-done')
    s = b.EnsembleServlet(
        b.ThreadServlet(b.w.Touch, path=done, add=1),
        # fails only after member 0 has finished
        b.ProcessServlet(b.w.FailIf, value=3, tag='m1', wait_for=done, delay=0.2),
    )
    with b.Server(s) as server:
        with pytest.raises(b.EnsembleError) as ei:
            server.call(3, timeout=30)
    n, m, k, first = parse_ensemble_message(ei.value)
    assert (n, m, k) == (2, 2, 1)
    assert "ValueError('m1 rejects 3')" in first
    results = ei.value.args[1]
    assert results['n'] == 2
    assert results['y'][0] == 4
    assert type(member_error(b, results['y'][1])) is ValueError


def test_ensemble_fail_fast_in_stream(cb):
    b = cb
    s = b.EnsembleServlet(
        b.ProcessServlet(b.w.FailIf, value=3, tag='m0'),
        b.ThreadServlet(b.w.AddOne),
    )
    with b.Server(s) as server:
        out = list(server.stream([1, 2, 3, 4], return_exceptions=True))
        got = []
        with pytest.raises(b.EnsembleError) as ei:
            for y in server.stream([1, 2, 3, 4, 5]):
                got.append(y)
        assert got == [[1, 2], [2, 3]]
        assert wait_until(lambda: server.backlog == 0)
        assert server.call(7) == [7, 8]
    assert out[0] == [1, 2] and out[1] == [2, 3] and out[3] == [4, 5]
    assert type(out[2]) is b.EnsembleError
    n, m, k, first = parse_ensemble_message(out[2])
    assert n in (1, 2) and m == 2 and k == 1
    assert "ValueError('m0 rejects 3')" in first
    assert parse_ensemble_message(ei.value)[2] == 1


@pytest.mark.parametrize('where', ['last_stage', 'before_process_stage'])
def test_ensemble_no_fail_fast_keeps_partial_results(cb, where):
    """fail_fast=False: member errors sit in the result list, in member order,
    as exceptions of their original type."""
    b = cb
    ens = b.EnsembleServlet(
        b.ProcessServlet(b.w.FailIf, value=3, tag='m0'),
        b.ThreadServlet(b.w.AddOne),
        b.ThreadServlet(b.w.FailIf, value=3, tag='m2', exc_type='CustomError'),
        fail_fast=False,
    )
    s = ens if where == 'last_stage' else b.SequentialServlet(ens, b.ProcessServlet(b.w.Echo))
    with b.Server(s) as server:
        assert server.call(1) == [1, 2, 1]
        y = server.call(3)
        out = list(server.stream([2, 3], return_exceptions=True))
    assert isinstance(y, list) and len(y) == 3
    assert y[1] == 4
    e0, e2 = y[0], y[2]
    if where == 'last_stage':
        e0, e2 = member_error(b, e0), member_error(b, e2)
    assert type(e0) is ValueError and str(e0) == 'm0 rejects 3'
    assert type(e2) is CustomError and str(e2) == 'm2 rejects 3'
    assert out[0] == [2, 3, 2]
    assert out[1][1] == 4 and type(member_error(b, out[1][0])) is ValueError


def test_ensemble_no_fail_fast_all_members_fail(cb):
    """fail_fast=False and every member fails: the result is an EnsembleError
    whose 'first error' is the first in member order, not in time."""
    b = cb
    s = b.EnsembleServlet(
        b.ProcessServlet(b.w.FailIf, value=3, tag='m0', delay=0.3),  # fails last
        b.ThreadServlet(b.w.FailIf, value=3, tag='m1', exc_type='KeyError'),
        fail_fast=False,
    )
    with b.Server(s) as server:
        with pytest.raises(b.EnsembleError) as ei:
            server.call(3)
        assert server.call(2) == [2, 2]
    e = ei.value
    n, m, k, first = parse_ensemble_message(e)
    assert (n, m, k) == (2, 2, 2)
    assert ' with 2 errors; ' in str(e)
    assert re.fullmatch(r"(RemoteException\()?ValueError\('m0 rejects 3'\)\)?", first), first
    errs = [member_error(b, v) for v in e.args[1]['y']]
    assert [type(v) for v in errs] == [ValueError, KeyError]
    assert e.args[1]['n'] == 2


def test_ensemble_error_pickle_roundtrip(cb):
    b = cb
    s = b.EnsembleServlet(
        b.ProcessServlet(b.w.FailIf, value=3, tag='m0'),
        b.ThreadServlet(b.w.FailIf, value=3, tag='m1', exc_type='KeyError', delay=0.3),
        fail_fast=False,
    )
    with b.Server(s) as server:
        with pytest.raises(b.EnsembleError) as ei:
            server.call(3)
    e = ei.value
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is b.EnsembleError
    assert isinstance(back, RuntimeError)
    n, m, k, first = parse_ensemble_message(back)
    assert (n, m, k) == (2, 2, 2)
    # after pickling, the members' errors are plain exceptions of their type
    assert first == "ValueError('m0 rejects 3')"
    ys = back.args[1]['y']
    assert [type(v) for v in ys] == [ValueError, KeyError]
    assert str(ys[0]) == 'm0 rejects 3'
    assert back.args[1]['n'] == 2
    assert repr(back) == str(back)
    # stable under a second round trip
    again = pickle.loads(pickle.dumps(back))
    assert type(again) is b.EnsembleError
    assert str(again) == str(back)


@pytest.mark.parametrize('kind', ['ensemble', 'switch'])
def test_error_in_earlier_stage_short_circuits(cb, kind):
    """An item that failed in an earlier stage skips the ensemble / switch
    members and reaches the caller as the original exception."""
    b = cb
    record0, seen0 = recorder()
    record1, seen1 = recorder()
    if kind == 'ensemble':
        tail = b.EnsembleServlet(b.ThreadServlet(b.make_worker(record0)), b.ThreadServlet(b.make_worker(record1)))
        ok = {2: [2, 2], 4: [4, 4]}
    else:
        tail = b.sw.ParitySwitch(b.ThreadServlet(b.make_worker(record0)), b.ThreadServlet(b.make_worker(record1)))
        ok = {2: 2, 4: 4}
    s = b.SequentialServlet(b.ProcessServlet(b.w.FailIf, value=3, tag='first', exc_type='CustomError'), tail)
    with b.Server(s) as server:
        with pytest.raises(CustomError) as ei:
            server.call(3)
        assert server.call(2) == ok[2]
        out = list(server.stream([3, 4], return_exceptions=True))
    assert type(ei.value) is CustomError
    assert str(ei.value) == 'first rejects 3'
    assert b.is_remote_exception(ei.value)
    assert type(out[0]) is CustomError and out[1] == ok[4]
    assert 3 not in seen0 and 3 not in seen1


# ---------------------------------------------------------------- SwitchServlet


def test_switch_routes_items_and_keeps_stream_order(cb):
    """Even items go to member 0 (slow, in a process), odd to member 1 (a
    thread); each member sees only its items; stream order is kept."""
    b = cb
    record, seen_odd = recorder()
    s = b.sw.ParitySwitch(
        b.SequentialServlet(b.ProcessServlet(b.w.SlowAdd, add=0, delay=0.05), b.ThreadServlet(b.w.Tag, tag='even')),
        b.SequentialServlet(b.ThreadServlet(b.make_worker(record)), b.ThreadServlet(b.w.Tag, tag='odd')),
    )
    data = list(range(16))
    with b.Server(s) as server:
        assert server.call(4) == ('even', 4)
        assert server.call(7) == ('odd', 7)
        out = list(server.stream(data))
    assert out == [('even' if x % 2 == 0 else 'odd', x) for x in data]
    assert sorted(seen_odd) == sorted([7] + [x for x in data if x % 2])


def test_switch_index_routing_to_many_members(cb):
    b = cb
    s = b.sw.IndexSwitch(
        b.ThreadServlet(b.w.Tag, tag='a'),
        b.ProcessServlet(b.w.Tag, tag='b'),
        b.ThreadServlet(b.w.Tag, tag='c'),
    )
    with b.Server(s) as server:
        assert server.call(0) == ('a', 0)
        assert server.call(1) == ('b', 1)
        assert server.call((2, 'payload')) == ('c', (2, 'payload'))
        out = list(server.stream([2, 1, 0, 1, 2]))
    assert out == [('c', 2), ('b', 1), ('a', 0), ('b', 1), ('c', 2)]


def test_switch_in_a_pipeline_with_member_errors(cb):
    b = cb
    s = b.SequentialServlet(
        b.ProcessServlet(b.w.AddOne),
        b.sw.ParitySwitch(
            b.ProcessServlet(b.w.FailIf, value=4, tag='even'),
            b.ThreadServlet(b.w.Double),
        ),
        b.ThreadServlet(b.w.AddOne),
    )
    with b.Server(s) as server:
        with pytest.raises(ValueError, match='even rejects 4'):
            server.call(3)
        out = list(server.stream(range(6), return_exceptions=True))
    # x -> x+1 -> (even: pass / fail on 4; odd: double) -> +1
    assert out[:3] == [3, 3, 7]
    assert type(out[3]) is ValueError and str(out[3]) == 'even rejects 4'
    assert out[4:] == [11, 7]


def test_switch_index_out_of_range_is_an_item_error(cb):
    """Deliberate difference: in mpservice a ``switch`` returning an index
    outside the members kills the switch's thread and every later call hangs.
    mpserver must fail just that item, with an error that names the index,
    and keep serving."""
    b = cb
    if b.name == 'mpservice':
        pytest.skip('mpservice: a bad switch index kills the switch thread and hangs')
    s = b.sw.IndexSwitch(b.ThreadServlet(b.w.Tag, tag='a'), b.ProcessServlet(b.w.Tag, tag='b'))
    with b.Server(s) as server:
        with pytest.raises(Exception) as ei:
            server.call(5, timeout=30)
        assert '5' in str(ei.value)
        assert server.call(1, timeout=30) == ('b', 1)
        out = list(server.stream([0, 7, 1], return_exceptions=True, timeout=30))
        assert wait_until(lambda: server.backlog == 0)
    assert out[0] == ('a', 0) and out[2] == ('b', 1)
    assert isinstance(out[1], Exception) and '7' in str(out[1])


def test_switch_method_raising_is_an_item_error(cb):
    """Deliberate difference: in mpservice an exception raised by ``switch``
    kills the switch's thread and every later call hangs.  mpserver must make
    it that item's error, of the original type, and keep serving."""
    b = cb
    if b.name == 'mpservice':
        pytest.skip('mpservice: an exception in switch() kills the switch thread and hangs')
    s = b.sw.RaisingSwitch(b.ProcessServlet(b.w.AddOne), b.ThreadServlet(b.w.Double))
    with b.Server(s) as server:
        with pytest.raises(ValueError, match='cannot route -1'):
            server.call(-1, timeout=30)
        assert server.call(1, timeout=30) == 2
        out = list(server.stream([1, -2, 3], return_exceptions=True, timeout=30))
    assert out[0] == 2 and out[2] == 4
    assert type(out[1]) is ValueError and str(out[1]) == 'cannot route -2'


# ---------------------------------------------------------------- structure & introspection


def test_compound_children_and_workers(cb):
    """``children`` are the member servlets, in order; ``workers`` is the flat
    list of worker handles across members, present only while running."""
    b = cb
    p = b.ProcessServlet(b.w.AddOne, cpus=2)
    t = b.ThreadServlet(b.w.Double, num_threads=3)
    q = b.ProcessServlet(b.w.Square)
    ens = b.EnsembleServlet(t, q)
    e = b.ThreadServlet(b.w.Echo)
    o = b.ThreadServlet(b.w.Echo, num_threads=2)
    sw = b.sw.ParitySwitch(e, o)
    seq = b.SequentialServlet(p, sw, ens)

    assert [type(c) for c in seq.children] == [type(p), type(sw), type(ens)]
    assert all(a is c for a, c in zip(seq.children, [p, sw, ens], strict=True)) and len(seq.children) == 3
    assert len(ens.children) == 2 and ens.children[0] is t and ens.children[1] is q
    assert len(sw.children) == 2 and sw.children[0] is e and sw.children[1] is o
    assert len(seq.workers) == 0

    with b.Server(seq) as server:
        assert len(p.workers) == 2
        assert len(ens.workers) == len(t.workers) + len(q.workers) == 4
        assert len(sw.workers) == 3
        assert len(seq.workers) == 2 + 4 + 3
        assert list(seq.workers) == list(p.workers) + list(sw.workers) + list(ens.workers)
        assert server.call(1) == [4, 4]
        assert server.call(2) == [6, 9]
    assert len(seq.workers) == 0


def _servlet_tree(node):
    """(type, [subtrees]) for servlet levels of a debug_info 'servlet' entry."""
    kids = node.get('children', [])
    if node['type'] in ('ProcessServlet', 'ThreadServlet'):
        return (node['type'], len(kids))
    return (node['type'], [_servlet_tree(k) for k in kids])


def test_debug_info_with_compound_servlet(cb):
    b = cb
    s = b.SequentialServlet(
        b.ProcessServlet(b.w.AddOne, cpus=2),
        b.sw.ParitySwitch(b.ThreadServlet(b.w.Echo), b.ThreadServlet(b.w.Echo, num_threads=2)),
        b.EnsembleServlet(b.ThreadServlet(b.w.Double), b.ProcessServlet(b.w.Square)),
    )
    with b.Server(s) as server:
        assert server.call(1) == [4, 4]
        info = server.debug_info()
    assert isinstance(info, dict)
    info = json.loads(json.dumps(info))
    assert info['type'] == 'Server'
    assert _servlet_tree(info['servlet']) == (
        'SequentialServlet',
        [
            ('ProcessServlet', 2),
            ('ParitySwitch__' + b.name, [('ThreadServlet', 1), ('ThreadServlet', 2)]),
            ('EnsembleServlet', [('ThreadServlet', 1), ('ProcessServlet', 1)]),
        ],
    )


@pytest.mark.parametrize(
    'make',
    [
        lambda b: b.EnsembleServlet(b.ThreadServlet(b.w.Echo)),
        lambda b: b.SequentialServlet(),
        lambda b: b.sw.ParitySwitch(),
    ],
    ids=['ensemble-of-one', 'empty-sequential', 'empty-switch'],
)
def test_compound_servlet_member_count_checked(cb, make):
    # mpservice asserts: Sequential/Switch need >= 1 member, Ensemble >= 2.
    with pytest.raises((AssertionError, ValueError, TypeError)):
        make(cb)


# ---------------------------------------------------------------- batching & thread stages


def test_batching_inside_a_pipeline_stage(cb):
    b = cb
    s = b.SequentialServlet(
        b.ThreadServlet(b.w.AddOne),
        b.ProcessServlet(b.w.BatchLen, batch_size=5, batch_wait_time=0.2),
        b.ProcessServlet(b.w.BatchDouble, batch_size=3, batch_wait_time=0.05),
        b.ThreadServlet(b.w.Echo),
    )
    data = list(range(20))
    with b.Server(s) as server:
        assert server.call(3) == (4, 1, 4, 1)
        out = list(server.stream(data))
    # BatchLen gives (v, batch size); BatchDouble doubles the tuple (concatenation)
    for x, y in zip(data, out, strict=False):
        assert len(y) == 4
        assert y[0] == x + 1 and y[2] == x + 1
        assert y[1] == y[3] and 1 <= y[1] <= 5
    assert len(out) == len(data)
    assert max(y[1] for y in out) > 1, 'no batch of more than one item was formed'


def test_thread_stage_lambda_between_process_stages(cb):
    """make_worker(lambda) in ThreadServlets between process stages; between
    two thread stages items pass by reference (an unpicklable lock survives,
    as the very same object)."""
    b = cb
    lock = threading.Lock()
    s = b.SequentialServlet(
        b.ProcessServlet(b.w.AddOne),
        b.ThreadServlet(b.make_worker(lambda x: (x * 10, lock))),
        b.ThreadServlet(b.make_worker(lambda p: p[0] + 1 if p[1] is lock else -1)),
        b.ProcessServlet(b.w.Double),
    )
    with b.Server(s) as server:
        assert server.call(1) == ((1 + 1) * 10 + 1) * 2
        assert list(server.stream(range(5))) == [((x + 1) * 10 + 1) * 2 for x in range(5)]


# ---------------------------------------------------------------- back-pressure under load


@pytest.mark.parametrize('backpressure', [True, False])
def test_backpressure_under_concurrent_callers(cb, backpressure):
    """16 threads call a small-capacity server running a pipeline.  Each call
    returns the right result or (backpressure=True only) raises
    ServerBacklogFull; the backlog never exceeds capacity and drains to 0.

    Deliberate difference: with backpressure=False, mpservice can overshoot
    the capacity under contention (a caller woken for a freed slot does not
    re-check, so a newcomer may have taken it: backlog 5 with capacity 4 was
    seen), so the bound is checked for mpservice with backpressure=True only.
    mpserver must keep the backlog within capacity in both modes.
    """
    b = cb
    capacity = 4
    s = b.SequentialServlet(b.ProcessServlet(b.w.SlowAdd, add=1, delay=0.005), b.ThreadServlet(b.w.Double))
    start = threading.Barrier(16)
    stop_sampling = threading.Event()
    samples = []

    def sample():
        while not stop_sampling.is_set():
            samples.append(server.backlog)
            time.sleep(0.001)

    def caller(k):
        start.wait(30)
        rows = []
        for i in range(12):
            x = k * 100 + i
            try:
                rows.append((x, server.call(x, backpressure=backpressure, timeout=60)))
            except b.ServerBacklogFull as e:
                rows.append((x, e))
        return rows

    with b.Server(s, capacity=capacity) as server:
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            with ThreadPoolExecutor(16) as pool:
                results = [r for rows in pool.map(caller, range(16)) for r in rows]
        finally:
            stop_sampling.set()
            sampler.join()
        assert wait_until(lambda: server.backlog == 0, timeout=60)
        assert server.call(1) == 4

    assert len(results) == 16 * 12
    ok = [(x, y) for x, y in results if not isinstance(y, BaseException)]
    rejected = [y for _, y in results if isinstance(y, BaseException)]
    for x, y in ok:
        assert y == (x + 1) * 2
    for e in rejected:
        assert type(e) is b.ServerBacklogFull
        assert f'Server is at capacity with {capacity} items' in str(e)
    assert ok
    if backpressure:
        assert rejected, '16 callers never hit a capacity of 4'
    else:
        assert not rejected
    if backpressure or b.name != 'mpservice':
        assert max(samples) <= capacity


def test_thread_only_ensemble_passes_objects_by_reference(cb):
    # Thread members of an ensemble whose consumer is the main process see
    # the caller's objects themselves (no pickling), as with a ThreadServlet:
    # unpicklable values work and identity is kept.
    lock = threading.Lock()
    servlet = cb.EnsembleServlet(cb.ThreadServlet(cb.w.Echo), cb.ThreadServlet(cb.w.Echo, num_threads=2))
    with cb.Server(servlet) as server:
        a, b = server.call(lock)
        assert a is lock and b is lock
        results = list(server.stream([lock] * 20))
    assert all(x is lock and y is lock for x, y in results)
