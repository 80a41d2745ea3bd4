"""Adaptive chunking (python/mpserver/_wire/chunks.py, _serving/chunk_sizer.py, _worker/chunk_runner.py; cpp/chunk.hpp).

mpserver only: mpservice sends every item alone.  Small items of a stream
into a ProcessServlet travel several to a message; these tests hold the
semantics to those of single items — order, exactly-once results, per-item
errors, timeouts, crash reports, batching — and check that a slow item never
keeps the items of its chunk from an idle worker.
"""

from __future__ import annotations

import json
import os

import _chunk_workers as cw
import mpserver
import pytest
from mpserver import ProcessServlet, Server, ThreadServlet


def _messages(server: Server) -> int:
    """Messages pushed into the server's entry ring so far (fewer than items when chunked)."""
    return server._running().entry.pushed


@pytest.mark.parametrize('chunk_size', [None, 1, 2, 7, 64])
def test_order_and_exactly_once_whatever_the_chunk_size(chunk_size):
    n = 20_000
    with Server(ProcessServlet(cw.Double, cpus=2)) as s:
        before = _messages(s)
        out = list(s.stream(range(n), return_x=True, chunk_size=chunk_size))
        sent = _messages(s) - before
        assert s.backlog == 0
    assert out == [(i, 2 * i) for i in range(n)]
    if chunk_size == 1:
        assert sent == n
    elif chunk_size is not None and chunk_size > 1:
        assert sent <= n // chunk_size * 1.5 + 64  # mostly whole chunks; a few singles at the edges
    else:  # adaptive: trivial items get chunked once the stream has measured them
        assert sent < n / 2


def test_chunk_size_is_checked():
    with Server(ProcessServlet(cw.Double, cpus=1)) as s:
        for bad in (0, -1, 2.5, True, '4'):
            with pytest.raises(ValueError, match='chunk_size'):
                list(s.stream(range(3), chunk_size=bad))


def test_the_chunk_size_adapts_mid_stream():
    # 300 items of 2 ms each, then 30,000 trivial ones, in one stream: the
    # slow ones go singly, the trivial ones in chunks; all in order.
    n_slow, n = 300, 30_300
    with Server(ProcessServlet(cw.SlowFirst, cpus=2, until=n_slow, seconds=0.002), capacity=256) as s:
        before = _messages(s)
        out = list(s.stream(list(range(n))))
        sent = _messages(s) - before
    assert out == list(range(n))
    assert sent < n / 2


def test_slow_items_are_not_chunked():
    # ~2 ms of work per item: one item is already worth its message.
    with Server(ProcessServlet(cw.SlowFirst, cpus=2, until=10**9, seconds=0.002), capacity=256) as s:
        before = _messages(s)
        out = list(s.stream(list(range(400))))
        sent = _messages(s) - before
    assert out == list(range(400))
    assert sent == 400


@pytest.mark.parametrize('chunk_size', [None, 64])
def test_a_slow_item_never_holds_back_its_chunk_while_a_worker_is_free(chunk_size):
    # One item busy for 1.5 s among 10,000 trivial ones: the items queued
    # behind it in its chunk are handed back to the ring, and the other
    # worker serves them, and every item sent while the slow one runs, long
    # before the slow one is done.  (The stream sends at most `capacity`
    # items past the slow one: its results come in order.)
    slow, capacity = 3000, 512
    with Server(ProcessServlet(cw.Stamp, cpus=2, slow=slow, seconds=1.5), capacity=capacity) as s:
        out = list(s.stream(range(10_000), chunk_size=chunk_size))
    assert [x for x, _, _ in out] == list(range(10_000))
    slow_pid, slow_done = out[slow][1], out[slow][2]
    late = [x for x, pid, done in out if x != slow and done > slow_done]
    assert not late or min(late) > slow + capacity // 2
    # The slow item's worker did not run the rest of its chunk meanwhile:
    # the sibling served everything from shortly after it on.
    after = [pid for x, pid, _ in out[slow + 70 : slow + 400]]
    assert after.count(slow_pid) < len(after)


def test_errors_stay_per_item_inside_a_chunk():
    with Server(ProcessServlet(cw.Picky, cpus=2)) as s:
        out = list(s.stream(range(2000), return_exceptions=True, chunk_size=16))
    for x, y in enumerate(out):
        if x % 7 == 0:
            assert isinstance(y, ValueError) and f'multiples of seven: {x}' in str(y)
        elif x == 5:
            assert isinstance(y, Exception) and 'pickle' in (str(y) + type(y).__name__).lower()
        else:
            assert y == x + 1


def test_an_error_keeps_its_remote_traceback():
    with Server(ProcessServlet(cw.Picky, cpus=1)) as s:
        out = list(s.stream(range(100), return_exceptions=True, chunk_size=10))
    err = out[14]
    assert isinstance(err, ValueError)
    assert 'no multiples of seven: 14' in ''.join(str(c) for c in (err, err.__cause__))
    assert err.__cause__ is not None and 'Traceback' in str(err.__cause__)


def test_inputs_in_a_chunk_are_copies_as_when_sent_alone():
    # The same list object 200 times: each item must arrive as its own copy
    # (one pickle of the run would share it between the items).
    shared = [1, 2, 3]
    with Server(ProcessServlet(cw.Appender, cpus=2)) as s:
        out = list(s.stream([shared] * 200, chunk_size=50))
    assert out == [4] * 200
    assert shared == [1, 2, 3]


def test_results_in_a_chunk_are_copies_as_when_sent_alone():
    with Server(ProcessServlet(cw.Stamp, cpus=1)) as s:
        out = list(s.stream(range(100), chunk_size=20))
    assert len({id(y) for y in out}) == 100


def test_a_crash_fails_exactly_the_unanswered_items_of_the_dead_workers_chunk(tmp_path):
    # One worker, chunks of 8: it dies on item 500.  Exactly its chunk fails
    # (the items before 500 in it ran but were not answered yet; those after
    # it never started); every other item succeeds, on the replacement.
    servlet = ProcessServlet(cw.Trail, cpus=1, trail_dir=str(tmp_path), poison=500)
    with Server(servlet) as s:
        out = list(s.stream(range(1000), return_exceptions=True, chunk_size=8))
    crashed = sorted(i for i, y in enumerate(out) if isinstance(y, mpserver.WorkerCrashedError))
    assert 500 in crashed and len(crashed) <= 8
    assert crashed == list(range(crashed[0], crashed[-1] + 1))
    started = {}
    for name in os.listdir(tmp_path):
        with open(tmp_path / name) as f:
            started[name] = [json.loads(line) for line in f]
    dead = next(pid for pid, xs in started.items() if 500 in xs)
    assert [x for x in crashed if x < 500] == [x for x in started[dead] if crashed[0] <= x < 500]
    assert not any(x in xs for xs in started.values() for x in crashed if x > 500)
    assert all(y == i + 1 for i, y in enumerate(out) if i not in crashed)


def test_item_timeouts_inside_a_chunk():
    # Item 100 sleeps 3 s; the stream's per-item timeout is 1 s.  It times
    # out; the rest of its chunk is handed back and served by the other worker.
    with Server(ProcessServlet(cw.Sleepy, cpus=2, slow=100, seconds=3.0)) as s:
        out = list(s.stream(range(400), return_exceptions=True, timeout=1.0, chunk_size=32))
        assert isinstance(out[100], TimeoutError)
        assert [y for x, y in enumerate(out) if x != 100] == [x for x in range(400) if x != 100]
        assert s.call(7) == 7


def test_leaving_a_chunked_stream_early_frees_everything():
    with Server(ProcessServlet(cw.Double, cpus=2), capacity=512) as s:
        for i, y in enumerate(s.stream(range(100_000))):
            assert y == 2 * i
            if i == 5000:
                break
        assert list(s.stream(range(3000))) == [2 * x for x in range(3000)]
        assert s.call(21) == 42
        deadline = 0
        while s.backlog and deadline < 100:
            import time

            time.sleep(0.05)
            deadline += 1
        assert s.backlog == 0


def test_a_worker_that_batches_on_its_own_gets_items_in_batches():
    # The main process cannot see a batch_size set in a worker's __init__:
    # it sends chunks; the worker still calls with at most 4 items at a time.
    with Server(ProcessServlet(cw.SelfBatching, cpus=2)) as s:
        out = list(s.stream(range(3000), chunk_size=16))
    assert [x for x, _ in out] == list(range(3000))
    assert all(1 <= k <= 4 for _, k in out)


def test_chunks_flow_into_a_pipeline():
    with Server(
        mpserver.SequentialServlet(ProcessServlet(cw.Double, cpus=1), ThreadServlet(cw.Double, num_threads=1))
    ) as s:
        before = _messages(s)
        assert list(s.stream(range(20_000))) == [4 * x for x in range(20_000)]
        assert _messages(s) - before < 20_000 / 2  # into the first stage: chunks


def test_stats_count_items_not_messages():
    with Server(ProcessServlet(cw.Double, cpus=2)) as s:
        list(s.stream(range(10_000), chunk_size=32))
        st = s.stats()
    w = st.servlet.workers
    assert len(w) == 2
    assert sum(x.items_in for x in w) >= 10_000
    assert sum(x.items_out for x in w) >= 10_000
    assert sum(x.batches for x in w) >= 10_000
