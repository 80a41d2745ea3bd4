"""Behaviour specific to mpserver (not shared with mpservice).

mpserver starts its worker processes itself rather than through the
``multiprocessing`` module: the workers are direct children of the calling
process, yet ``multiprocessing`` neither tracks them as children nor considers
itself to be running inside a child.
"""

import builtins
import importlib
import multiprocessing
import os

import _backends
import pytest


@pytest.fixture
def mpserver():
    try:
        mod = importlib.import_module('mpserver')
    except Exception as e:  # noqa: BLE001 - any import failure is reported as the test's failure
        pytest.fail(f'mpserver cannot be imported: {type(e).__name__}: {e}', pytrace=False)
    return mod


@pytest.fixture
def parent_info_cls(mpserver):
    try:
        return _backends.get_backend('mpserver').w.ParentInfo
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


def test_public_names_importable_from_mpserver(mpserver):
    from mpserver import (  # noqa: F401
        EnsembleError,
        PassThrough,
        ProcessServlet,
        RemoteException,
        RemoteTraceback,
        Server,
        ServerBacklogFull,
        ThreadServlet,
        TimeoutError,
        Worker,
        get_remote_traceback,
        is_remote_exception,
        make_worker,
    )

    assert issubclass(PassThrough, Worker)
    assert issubclass(TimeoutError, builtins.TimeoutError)
    assert issubclass(ServerBacklogFull, RuntimeError)
    assert issubclass(EnsembleError, RuntimeError)
    assert issubclass(RemoteTraceback, Exception)


def test_workers_are_not_multiprocessing_children(mpserver, parent_info_cls):
    before = {p.pid for p in multiprocessing.active_children()}
    with mpserver.Server(mpserver.ProcessServlet(parent_info_cls, cpus=2)) as server:
        during = {p.pid for p in multiprocessing.active_children()}
        results = [server.call(i) for i in range(6)]
        after_calls = {p.pid for p in multiprocessing.active_children()}
    assert during == set()
    assert after_calls == set()
    assert before == set()
    assert [r[3] for r in results] == list(range(6))


def test_worker_is_direct_child_but_not_a_multiprocessing_child(mpserver, parent_info_cls):
    me = os.getpid()
    with mpserver.Server(mpserver.ProcessServlet(parent_info_cls, cpus=2)) as server:
        results = list(server.stream(range(20)))
    assert [r[3] for r in results] == list(range(20))
    for ppid, no_mp_parent, pid, _ in results:
        assert ppid == me
        assert no_mp_parent is True
        assert pid != me


def test_by_reference_ensemble_releases_every_reference(mpserver):
    # Items travelling by reference through a thread-only ensemble hold one
    # reference per member; results dropped by fail_fast, upstream errors
    # that skip the members and abandoned stream results must all give
    # theirs back (checked with the refcount of a marker object).
    import gc
    import sys
    import time

    def refuse(tag):
        def call(x):
            if x[0] == tag:
                raise ValueError(f'{tag}: {x!r}')
            return x

        return mpserver.make_worker(call)

    marker = object()
    base = sys.getrefcount(marker)
    echo = mpserver.make_worker(lambda x: x)
    ens = mpserver.EnsembleServlet(mpserver.ThreadServlet(echo), mpserver.ThreadServlet(refuse('bad')))
    servlet = mpserver.SequentialServlet(mpserver.ThreadServlet(refuse('upstream')), ens)
    with mpserver.Server(servlet) as server:
        for _ in range(50):
            with pytest.raises(mpserver.EnsembleError):
                server.call(('bad', marker))
            with pytest.raises(ValueError):
                server.call(('upstream', marker))
            assert server.call(('ok', marker))[0][1] is marker
        for i, _ in enumerate(server.stream(('ok', marker) for _ in range(300))):
            if i == 5:
                break
        del _
    deadline = time.monotonic() + 10
    while sys.getrefcount(marker) != base and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    assert sys.getrefcount(marker) == base


def test_ensemble_composite_roundtrip_and_corruption(mpserver):
    # The composite the C++ router builds decodes to the member list; a
    # malformed one is a ValueError, never a crash or an out-of-bounds read.
    import pickle

    from mpserver import _core
    from mpserver._wire import codec

    parts = [pickle.dumps(1), pickle.dumps('two'), b'']
    flags = [0, 0, _core.PART_MISSING]
    blob = _core.compose_ensemble(flags, parts, 2)
    assert codec.decode(codec.FLAG_ENSEMBLE, blob) == [1, 'two', None]
    err = codec.decode(codec.FLAG_ENSEMBLE | codec.FLAG_ERROR, blob)
    assert isinstance(err, mpserver.EnsembleError) and err.args[1] == {'y': [1, 'two', None], 'n': 2}
    for bad in (b'', blob[:10], b'XXXX' + blob[4:], blob[:-8], blob[:20]):
        with pytest.raises(ValueError):
            codec.decode(codec.FLAG_ENSEMBLE, bad)


def test_frame_decoder_rejects_corrupt_frames(mpserver):
    # Bytes in a ring that are not valid frames raise RingCorrupt; they never
    # crash the process or read outside the ring (see also tests/test_fuzz.py).
    import struct

    from mpserver import _core

    def frame(length, flags, total, body=b''):
        # FrameHeader (cpp/ring.hpp): len, flags, id, total, aux, stamp
        return struct.pack('<IIQQQq', length, flags, 1, total, 0, 0) + body.ljust((length + 7) & ~7, b'\0')

    assert _core._fuzz_frames(frame(3, 3, 3, b'abc')) == 1
    assert _core._fuzz_frames(frame(3, 1, 6, b'abc') + frame(3, 2, 6, b'def')) == 1  # two frames, one message
    assert _core._fuzz_frames(frame(3, 1, 6, b'abc')) == 0  # cut short, ring closed: dropped
    for bad in (
        frame(3, 2, 3, b'abc'),  # continuation without a first frame
        frame(50000, 3, 50000),  # longer than a ring chunk
        frame(3, 3, 2, b'abc'),  # frame longer than its message
        frame(3, 3, 2**62, b'abc'),  # absurd message size
        frame(3, 1, 6, b'abc') + frame(3, 3, 3, b'xyz'),  # a new message inside one
        b'\x01' * 20,  # not even a header
    ):
        with pytest.raises(_core.RingCorrupt):
            _core._fuzz_frames(bad)


def test_multiprocessing_objects_in_kwargs_survive_a_restart(mpserver):
    """The restarted worker process gets the kwargs' fds again (they stay open in
    the main process's objects); a fork-context object is refused at start."""
    w = _backends.get_backend('mpserver').w
    ctx = mpserver.Server.get_mp_context()
    queue, event, total = ctx.Queue(), ctx.Event(), ctx.Value('i', 0)
    with mpserver.Server(mpserver.ProcessServlet(w.Messenger, queue=queue, event=event, total=total)) as server:
        assert server.call(1) is False
        with pytest.raises(mpserver.WorkerCrashedError):
            server.call('exit')
        event.set()
        assert server.call(2) is True  # the restarted worker (waits for it)
    # (0, 1) may be lost: os._exit ends the first process before its queue's
    # feeder thread wrote it (multiprocessing's rule); the shared value is exact.
    got = [queue.get(timeout=30)]
    while got[-1] != (0, 2):
        got.append(queue.get(timeout=30))
    assert set(got) <= {(0, 1), (0, 2)}
    assert total.value == 3
    fork = multiprocessing.get_context('fork')
    servlet = mpserver.ProcessServlet(w.Messenger, queue=fork.Queue(), event=event, total=total)
    with pytest.raises(TypeError, match='fork context'):
        with mpserver.Server(servlet):
            pass


def test_only_classes_that_came_by_value_go_to_workers_by_value(mpserver, monkeypatch):
    """A ``__main__`` class that this process's ``__main__`` does not hold came by
    value (Ray ships a driver script's classes so): it goes on by value, with a
    loaded cloudpickle.  Everything else is pickled by name, as before."""
    import sys

    from mpserver._graph.process_servlet import _by_value_pickler

    cloudpickle = object()
    monkeypatch.setitem(sys.modules, 'cloudpickle', cloudpickle)
    shipped = type('Shipped', (mpserver.Worker,), {'__module__': '__main__'})
    assert _by_value_pickler(shipped) is cloudpickle
    monkeypatch.setattr(sys.modules['__main__'], 'Shipped', shipped, raising=False)
    assert _by_value_pickler(shipped) is None  # this process's own script class: by name

    def local():
        class Local(mpserver.Worker):
            pass

        Local.__module__ = '__main__'
        return Local

    assert _by_value_pickler(local()) is None  # defined in a function: by name (and refused)
    assert _by_value_pickler(_backends.get_backend('mpserver').w.Echo) is None  # a module's class
    monkeypatch.delitem(sys.modules, 'cloudpickle')
    monkeypatch.delitem(sys.modules, 'ray.cloudpickle', raising=False)
    other = type('Other', (mpserver.Worker,), {'__module__': '__main__'})
    assert _by_value_pickler(other) is None  # no cloudpickle here: nothing came by value
