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

import pytest

import _backends


@pytest.fixture
def mpserver():
    try:
        mod = importlib.import_module('mpserver')
    except Exception as e:
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
