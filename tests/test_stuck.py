"""Stuck workers: ``ProcessServlet(item_timeout=S)`` and bounded shutdown.

``item_timeout`` is mpserver's (mpservice 0.16.8 has no such setting and
hangs when a worker dies), so the mpservice param is skipped with that
reason.  A worker process holding one item (or one batch) for longer than
``item_timeout`` is killed and replaced; exactly the items it held fail with
``WorkerCrashedError`` saying they exceeded ``item_timeout``; every other
item keeps flowing.
"""

import logging
import threading
import time

import pytest
from _waits import wait_until

HANG = ('sleep', 1000)


@pytest.fixture
def mps(backend):
    if backend.name == 'mpservice':
        pytest.skip('mpservice has no item_timeout, and hangs when a worker process is killed')
    import mpserver

    return backend, mpserver


def _overdue(mpserver, e):
    return isinstance(e, mpserver.WorkerCrashedError) and 'item_timeout of 1 seconds' in str(e)


def test_a_worker_stuck_on_an_item_is_killed_and_replaced(mps):
    b, mpserver = mps
    with b.Server(b.ProcessServlet(b.w.Crash, item_timeout=1)) as server:
        before = server.servlet.workers
        t0 = time.monotonic()
        with pytest.raises(mpserver.WorkerCrashedError) as ei:
            server.call(HANG, timeout=60)
        elapsed = time.monotonic() - t0
        assert 0.9 < elapsed < 15, elapsed  # ~1 s plus a watchdog tick; generous for a loaded machine
        assert _overdue(mpserver, ei.value), str(ei.value)
        assert ei.value.pid == before[0] and ei.value.signal == 9
        # A fresh worker serves on; the kill is counted.
        assert [server.call(i) for i in range(5)] == [0, 2, 4, 6, 8]
        info = server.debug_info()['servlet']
        assert info['item_timeout_kills'] == 1 and info['restarts'] == 1


@pytest.mark.parametrize('workers', [1, 2])
def test_only_the_stuck_item_fails_the_others_keep_flowing(mps, workers):
    b, mpserver = mps
    data = list(range(100)) + [HANG] + list(range(100, 200))
    with b.Server(b.ProcessServlet(b.w.Crash, cpus=workers, item_timeout=1)) as server:
        out = list(server.stream(data, return_exceptions=True, timeout=120))
    failed = [i for i, y in enumerate(out) if isinstance(y, BaseException)]
    assert failed == [100] and _overdue(mpserver, out[100])
    assert all(out[i] == 2 * x for i, x in enumerate(data) if i != 100)


def test_a_stuck_batch_fails_that_batch_only(mps):
    b, mpserver = mps
    servlet = b.ProcessServlet(b.w.Crash, batch_size=4, batch_wait_time=0.05, item_timeout=1)
    data = list(range(20)) + [HANG] + list(range(20, 40))
    with b.Server(servlet) as server:
        out = list(server.stream(data, return_exceptions=True, timeout=120))
    failed = [i for i, y in enumerate(out) if isinstance(y, BaseException)]
    assert 20 in failed and 1 <= len(failed) <= 4 and all(_overdue(mpserver, out[i]) for i in failed)
    assert failed == list(range(failed[0], failed[-1] + 1))  # one batch: consecutive inputs
    assert all(out[i] == 2 * x for i, x in enumerate(data) if i not in failed)


def test_a_slow_item_within_item_timeout_is_left_alone(mps):
    b, mpserver = mps
    with b.Server(b.ProcessServlet(b.w.Crash, item_timeout=5)) as server:
        pid = server.servlet.workers[0]
        assert server.call(('sleep', 1.5)) == ('sleep', 1.5)
        assert server.servlet.workers == [pid]
        assert server.debug_info()['servlet']['item_timeout_kills'] == 0


def test_item_timeout_applies_while_the_caller_already_gave_up(mps):
    # The caller's timeout and item_timeout are independent: the caller stops
    # waiting after 0.5 s, the worker is still killed at 1 s and replaced.
    b, mpserver = mps
    with b.Server(b.ProcessServlet(b.w.Crash, item_timeout=1)) as server:
        pid = server.servlet.workers[0]
        with pytest.raises(mpserver.TimeoutError):
            server.call(HANG, timeout=0.5)
        assert wait_until(lambda: server.servlet.workers not in ([], [pid]), timeout=20)
        assert server.call(3) == 6


@pytest.mark.parametrize('bad', [0, -1, 'soon', True, float('nan')])
def test_invalid_item_timeout_is_a_config_error(mps, bad):
    b, mpserver = mps
    with pytest.raises(mpserver.ConfigError, match='item_timeout'):
        b.ProcessServlet(b.w.Crash, item_timeout=bad)


# ---------------------------------------------------------------- bounded shutdown


def _call_in_thread(server, x, results):
    def run():
        try:
            results[repr(x)] = server.call(x, timeout=120)
        except Exception as e:  # noqa: BLE001 - the outcome is checked by the test
            results[repr(x)] = e

    t = threading.Thread(target=run)
    t.start()
    return t


def test_leaving_the_block_kills_a_worker_still_busy_after_stop_grace(mps, caplog):
    b, mpserver = mps
    results = {}
    with caplog.at_level(logging.WARNING, logger='mpserver'):
        server = b.Server(b.ProcessServlet(b.w.Crash, cpus=2), stop_grace=1)
        with server:
            stuck = _call_in_thread(server, HANG, results)
            assert wait_until(lambda: server.backlog == 1)
            time.sleep(0.2)  # the worker has taken it
            fine = _call_in_thread(server, 21, results)  # the other worker serves this one
            fine.join(60)
            t0 = time.monotonic()
        elapsed = time.monotonic() - t0
        stuck.join(60)
    assert elapsed < 15, elapsed  # ~1 s of grace plus a watchdog tick
    assert results['21'] == 42
    e = results[repr(HANG)]
    assert isinstance(e, mpserver.WorkerCrashedError) and 'stop_grace' in str(e), repr(e)
    warnings = [r.getMessage() for r in caplog.records if r.name == 'mpserver']
    assert any('was still processing this item 1 seconds after the server began to stop' in m for m in warnings)


def test_a_worker_kept_alive_by_a_non_daemon_thread_does_not_hang_exit(mps, caplog):
    b, mpserver = mps
    with caplog.at_level(logging.WARNING, logger='mpserver'):
        with b.Server(b.ProcessServlet(b.w.Lingering), stop_grace=1) as server:
            assert server.call(5) == 5
            pid = server.servlet.workers[0]
            t0 = time.monotonic()
        elapsed = time.monotonic() - t0
    assert elapsed < 15, elapsed
    warnings = [r.getMessage() for r in caplog.records if r.name == 'mpserver']
    assert any(f'(pid {pid})' in m and 'did not exit within 1 seconds' in m for m in warnings), warnings


def test_a_thread_worker_stuck_at_exit_is_left_behind_with_a_warning(mps, caplog):
    b, mpserver = mps
    release = threading.Event()

    class Blocking(b.Worker):
        def call(self, x):
            release.wait(120)
            return x

    results = {}
    try:
        with caplog.at_level(logging.WARNING, logger='mpserver'):
            with b.Server(b.ThreadServlet(Blocking), stop_grace=1) as server:
                t = _call_in_thread(server, 'held', results)
                assert wait_until(lambda: server.backlog == 1)
                t0 = time.monotonic()
            elapsed = time.monotonic() - t0
        t.join(60)
    finally:
        release.set()
    assert elapsed < 15, elapsed
    assert isinstance(results["'held'"], RuntimeError) and 'stopped before' in str(results["'held'"])
    warnings = [r.getMessage() for r in caplog.records if r.name == 'mpserver']
    assert any('Blocking-thread-0' in m and 'left running' in m for m in warnings), warnings


@pytest.mark.parametrize('bad', [0, -2, 'long', False])
def test_invalid_stop_grace_is_a_config_error(mps, bad):
    b, mpserver = mps
    with pytest.raises(mpserver.ConfigError, match='stop_grace'):
        b.Server(b.ProcessServlet(b.w.Crash), stop_grace=bad)
