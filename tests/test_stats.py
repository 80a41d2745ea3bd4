"""Server.stats(): the core's live counters, checked exactly against known workloads.

Every count here is made by C++ on the data path (cpp/meter.hpp): workers
count what they take and answer, the request book what it admits, refuses
and delivers, routers what they route, the guardian crashes and restarts.
mpserver only: mpservice has no counters.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest
from _stats_workers import BatchSeen, Dies, Double, Fails, Parity, Sleeps
from mpserver import (
    EnsembleServlet,
    ProcessServlet,
    SequentialServlet,
    Server,
    ServerBacklogFull,
    ThreadServlet,
    TimeoutError,
)
from mpserver.stats import ServerStats, rates


def _settle(server, pred, timeout=30.0):
    """Counters of a result's last hop are written just after the result is
    pushed: wait (generously) until `pred(stats)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        st = server.stats()
        if pred(st) or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


def test_counts_per_stage_and_per_worker_are_exact():
    n = 2000
    tree = SequentialServlet(ProcessServlet(Double, cpus=2), ThreadServlet(Double, num_threads=2))
    with Server(tree) as s:
        assert list(s.stream(range(n))) == [4 * x for x in range(n)]
        st = _settle(s, lambda st: st.servlet.items_out == n and st.completed == n)
    assert isinstance(st, ServerStats)
    assert (st.admitted, st.completed, st.backlog, st.rejected, st.timed_out, st.late) == (n, n, 0, 0, 0, 0)
    assert st.latency.count == n
    root = st.servlet
    assert (root.path, root.kind, root.items_in, root.items_out, root.errors) == ('0', 'SequentialServlet', n, n, 0)
    procs, threads = root.children
    assert (procs.path, procs.label) == ('0.0', 'ProcessServlet(Double)')
    assert (threads.path, threads.label) == ('0.1', 'ThreadServlet(Double)')
    for stage in (procs, threads):
        assert (stage.items_in, stage.items_out, stage.errors, stage.in_flight) == (n, n, 0, 0)
        assert sum(w.items_in for w in stage.workers) == n
        assert sum(w.batches for w in stage.workers) == n  # one item per call without batching
        assert sum(w.service_time.count for w in stage.workers) == n
        assert sum(w.queue_wait.count for w in stage.workers) == n
        assert all(w.batch_sizes.counts[0] == w.batches for w in stage.workers)  # every batch of one
    assert [w.name for w in procs.workers] == ['Double-process-0', 'Double-process-1']
    assert all(w.kind == 'process' and w.pid for w in procs.workers)
    assert [w.kind for w in threads.workers] == ['thread', 'thread']
    assert [w.pid for w in threads.workers] == [None, None]
    assert [s.path for s in st.walk()] == ['0', '0.0', '0.1']
    assert st.find('0.1') is threads


def test_batch_histogram_matches_the_batches_the_worker_received():
    n = 1000
    servlet = ProcessServlet(BatchSeen, cpus=2, batch_size=16, batch_wait_time=0.002)
    with Server(servlet) as s:
        out = list(s.stream(range(n)))
        st = _settle(s, lambda st: st.servlet.items_out == n)
    sizes = {(pid, batch): size for pid, batch, size in out}  # every batch, once
    assert sum(sizes.values()) == n
    seen = collections.Counter(sizes.values())
    hist = st.servlet.merged('batch_sizes')
    assert hist is not None
    expected = [0] * len(hist.counts)
    for size, count in seen.items():
        i = next(i for i, b in enumerate(hist.bounds) if size <= b)
        expected[i] += count
    assert list(hist.counts) == expected
    assert hist.sum == n
    assert sum(w.batches for w in st.servlet.workers) == len(sizes)


def test_errors_are_counted_where_they_happen_and_passed_on_downstream():
    n = 100
    with Server(SequentialServlet(ProcessServlet(Fails), ProcessServlet(Double))) as s:
        out = list(s.stream(range(n), return_exceptions=True))
        st = _settle(s, lambda st: st.servlet.items_out == n)
    assert sum(isinstance(y, ValueError) for y in out) == n // 2
    first, second = st.servlet.children
    assert (first.errors, first.workers[0].passed) == (n // 2, 0)
    assert (second.errors, second.workers[0].passed) == (0, n // 2)  # passed on, not its own
    assert second.items_in == n
    assert st.servlet.errors == n // 2


def test_service_and_queue_times_match_what_the_worker_spent():
    n, pause = 10, 0.05
    with Server(ProcessServlet(Sleeps)) as s:  # one worker: items queue behind each other
        t0 = time.monotonic()
        assert list(s.stream([pause] * n)) == [pause] * n
        elapsed = time.monotonic() - t0
        st = _settle(s, lambda st: st.servlet.items_out == n)
    w = st.servlet.workers[0]
    assert w.service_time.count == n
    assert n * pause <= w.service_time.sum <= elapsed + 0.5
    assert w.service_time.quantile(0.5) >= pause * 0.9
    # The k-th item waited for the k items before it: about pause * n * (n-1) / 2 in all.
    assert w.queue_wait.sum >= pause * n * (n - 1) / 2 * 0.8
    assert st.latency.count == n
    assert st.latency.sum >= w.service_time.sum


def test_backlog_full_timeouts_and_cancellations_are_counted():
    with Server(ProcessServlet(Sleeps), capacity=2) as s:
        busy = [threading.Thread(target=s.call, args=(0.8,)) for _ in range(2)]
        for t in busy:
            t.start()
        _settle(s, lambda st: st.backlog == 2)
        with pytest.raises(ServerBacklogFull):
            s.call(0.0, backpressure=True)
        for t in busy:
            t.join()
        with pytest.raises(TimeoutError):
            s.call(1.0, timeout=0.1)
        _settle(s, lambda st: st.backlog == 0)  # the timed-out call's result came (for nobody)
        # A stream left early gives up what it had in flight.
        it = s.stream([0.2] * 2)
        next(it)
        it.close()
        st = _settle(s, lambda st: st.backlog == 0 and st.late >= 2)
    assert st.rejected == 1
    assert st.timed_out == 1
    assert st.cancelled == 1
    assert st.admitted == 2 + 1 + 2  # the refused call never got in
    assert st.completed == 2 + 1  # the two busy calls and the stream's first item
    assert st.late == 2  # the timed-out call's and the cancelled item's results came for nobody


def test_a_crash_counts_a_crash_and_a_restart_and_the_pid_changes():
    with Server(ProcessServlet(Dies)) as s:
        before = s.stats().servlet.workers[0]
        with pytest.raises(Exception, match='crashed|died|WorkerCrashed'):
            s.call('die')
        st = _settle(s, lambda st: st.servlet.workers[0].restarts == 1 and st.servlet.workers[0].pid is not None)
        assert s.call('ok') == 'ok'
    w = st.servlet.workers[0]
    assert (w.crashes, w.restarts, w.killed) == (1, 1, 0)
    assert w.pid != before.pid
    assert st.servlet.crashes == 1 and st.servlet.restarts == 1


def test_item_timeout_kills_are_counted():
    with Server(ProcessServlet(Sleeps, item_timeout=0.3)) as s:
        with pytest.raises(Exception, match='item_timeout'):
            s.call(30.0)
        st = _settle(s, lambda st: st.servlet.workers[0].restarts == 1)
    w = st.servlet.workers[0]
    assert (w.killed, w.crashes, w.restarts) == (1, 1, 1)


def test_ensemble_and_switch_count_what_they_route():
    n = 50
    with Server(EnsembleServlet(ProcessServlet(Double), ThreadServlet(Double))) as s:
        assert list(s.stream(range(n))) == [[2 * x, 2 * x] for x in range(n)]
        st = _settle(s, lambda st: st.servlet.joined == n)
    assert (st.servlet.kind, st.servlet.routed, st.servlet.joined, st.servlet.late) == ('EnsembleServlet', n, n, 0)
    assert [c.items_in for c in st.servlet.children] == [n, n]

    with Server(Parity(ProcessServlet(Double), ThreadServlet(Double))) as s:
        assert list(s.stream(range(n))) == [2 * x for x in range(n)]
        st = _settle(s, lambda st: st.servlet.items_out == n)
    assert st.servlet.routed_to == (n // 2, n // 2)
    assert st.servlet.routed == n


def test_rates_between_two_snapshots():
    with Server(ProcessServlet(Double)) as s:
        a = s.stats()
        list(s.stream(range(500)))
        b = _settle(s, lambda st: st.servlet.items_out == 500)
    r = rates(a, b)['0']
    assert r.seconds > 0
    assert r.items_out_per_s == pytest.approx(500 / r.seconds)
    assert r.service_time is not None and r.service_time.count == 500
    with pytest.raises(ValueError):
        rates(b, a)


def test_stats_needs_a_running_server_and_debug_info_includes_it():
    server = Server(ProcessServlet(Double))
    with pytest.raises(RuntimeError, match='not started'):
        server.stats()
    with server as s:
        s.call(1)
        info = s.debug_info()
        assert info['stats']['servlet']['label'] == 'ProcessServlet(Double)'
    with pytest.raises(RuntimeError):
        server.stats()


def test_async_timeouts_and_cancellations_are_counted():
    import asyncio

    from mpserver import AsyncServer

    async def main():
        async with AsyncServer(ProcessServlet(Sleeps), capacity=8) as s:
            with pytest.raises(TimeoutError):
                await s.call(0.5, timeout=0.05)
            task = asyncio.ensure_future(s.call(0.5))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await s.call(0.0) == 0.0
            return _settle(s, lambda st: st.backlog == 0)  # AsyncServer.stats() is the Server's

    st = asyncio.run(main())
    assert (st.timed_out, st.cancelled, st.completed, st.late) == (1, 1, 1, 2)


def test_items_skipped_for_callers_who_gave_up_are_counted():
    with Server(ProcessServlet(Sleeps), capacity=16) as s:
        with pytest.raises(TimeoutError):
            s.call(0.5, timeout=0.05)  # the worker is busy with this one ...
        for _ in range(3):
            with pytest.raises(TimeoutError):
                s.call(0.5, timeout=0.01)  # ... so these wait in the queue, and are given up there
        st = _settle(s, lambda st: st.backlog == 0)
    w = st.servlet.workers[0]
    assert w.skipped == 3
    assert w.items_in == 4 and w.batches == 1  # only the first reached user code
