"""Work for nobody is not done: an item whose caller has given up (its
``timeout`` passed, its stream was closed) before a worker started it is
skipped by the worker, counted in ``debug_info()['dropped']``, and still
leaves the backlog only when it leaves the pipeline (as documented).

mpserver only: mpservice 0.16.8 runs every queued item, whether anyone still
waits for it or not, and has no such counter.
"""

import time

import pytest
from _waits import wait_until


@pytest.fixture
def mps(backend):
    if backend.name == 'mpservice':
        pytest.skip('mpservice runs every queued item even when its caller has given up')
    import mpserver

    return backend, mpserver


def _timed_out_calls(server, mpserver, n, x, timeout):
    """n calls of ``x`` from threads that each give up after ``timeout`` seconds."""
    import threading

    errors = []

    def one():
        try:
            server.call(x, timeout=timeout)
        except mpserver.TimeoutError as e:
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


@pytest.mark.parametrize('pipeline', [False, True])
def test_items_whose_callers_timed_out_are_skipped_not_run(mps, pipeline):
    b, mpserver = mps
    first = b.ProcessServlet(b.w.Crash)
    servlet = b.SequentialServlet(first, b.ProcessServlet(b.w.Crash)) if pipeline else first
    with b.Server(servlet) as server:
        import threading

        busy = threading.Thread(target=server.call, args=(('sleep', 1.5),), kwargs={'timeout': 60})
        busy.start()
        assert wait_until(lambda: server.backlog == 1)
        time.sleep(0.2)  # the worker has started it
        # 20 requests of 1 s of work each queue behind it; their callers leave after 0.2 s.
        assert len(_timed_out_calls(server, mpserver, 20, ('sleep', 1.0), 0.2)) == 20
        busy.join(60)
        # Run, they would take 20 s; skipped, the backlog drains at once.
        t0 = time.monotonic()
        assert wait_until(lambda: server.backlog == 0, timeout=8), server.backlog
        assert time.monotonic() - t0 < 8
        assert server.call(4) == 8 if not pipeline else server.call(4) == 16
        assert server.debug_info()['dropped'] == 20


def test_items_of_a_closed_stream_are_skipped(mps):
    b, mpserver = mps
    with b.Server(b.ProcessServlet(b.w.Crash), capacity=64) as server:
        data = [('sleep', 0.05)] * 200
        for _ in server.stream(data):
            break  # the stream had up to 64 items in flight; nobody wants them now
        t0 = time.monotonic()
        assert wait_until(lambda: server.backlog == 0, timeout=10), server.backlog
        assert time.monotonic() - t0 < 2.5  # run, the ~63 others would take ~3 s
        assert server.debug_info()['dropped'] > 30


def test_an_ensemble_still_answers_after_timeouts(mps):
    # Ensemble members carry the router's own ids, not request tokens: they
    # never consult the board, and the ensemble keeps working.
    b, mpserver = mps
    servlet = b.EnsembleServlet(b.ProcessServlet(b.w.Crash), b.ProcessServlet(b.w.Crash))
    with b.Server(servlet) as server:
        assert len(_timed_out_calls(server, mpserver, 4, ('sleep', 0.3), 0.05)) == 4
        assert wait_until(lambda: server.backlog == 0, timeout=20)
        assert server.call(3) == [6, 6]
