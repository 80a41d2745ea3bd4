"""Where the time of one streamed item goes: mpserver's trivial-worker stream, by component.

    PYTHONPATH=python python benchmarks/breakdown.py [--quick]

The workload is ``server.stream(range(n))`` through one
``ProcessServlet(Echo)`` process without batching.  Two processes work on
each item at the same time, so the stream runs at the pace of the slower side:

* main process: encode ``x`` (pickle), push it into the worker's input ring
  (in runs of up to 64), and take the result back (the C++ collector thread
  files it, the stream drains it) and decode ``y`` (unpickle);
* worker process: gather inputs from the ring (up to 64 at a time), decode
  ``x``, call ``Echo.call``, encode ``y``, push the result.

Components (a)-(c) are timed in this process, in isolation, with the same
operations the serving path uses (``pickle`` protocol 5, and the core's own
``Ring.push_many`` / ``Ring.push`` / ``Ring.gather`` on a ring that no other
process waits on, so no wake-up is paid).  (d) is the measured end-to-end
stream, with the CPU time each process spent during it.  The sums and "the
rest" are derived from those measurements; the table says which is which.
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import statistics
import time
from collections.abc import Callable

from _bench_workers import BACKENDS, ECHO
from harness import children_cpu_seconds

RUN = 64  # items per push_many / gather, as the stream and the sole worker use
WARMUP_ITEMS = 2_000


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the breakdown table."""

    component: str
    side: str  # 'main', 'worker', 'both' or 'end to end'
    ns: float  # nanoseconds per item
    how: str  # 'measured ...' or 'derived ...'


def _per_item_ns(body: Callable[[], int], repeat: int) -> float:
    """Median over ``repeat`` runs of ``body`` (which returns its item count) of ns per item."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        count = body()
        samples.append((time.perf_counter_ns() - start) / count)
    return statistics.median(samples)


def _python_costs(n: int, repeat: int) -> dict[str, float]:
    """ns per item of an empty loop, pickle.dumps, pickle.loads, and the Echo call + loop."""
    xs = list(range(100)) * (n // 100)
    pickled = [pickle.dumps(x, 5) for x in xs]
    dumps, loads = pickle.dumps, pickle.loads
    call = ECHO['mpserver'](worker_index=0).call

    def empty() -> int:
        for _ in xs:
            pass
        return len(xs)

    def dump() -> int:
        for x in xs:
            dumps(x, 5)
        return len(xs)

    def load() -> int:
        for p in pickled:
            loads(p)
        return len(xs)

    def echo() -> int:
        for x in xs:
            call(x)
        return len(xs)

    loop = _per_item_ns(empty, repeat)
    return {
        'loop': loop,
        'dumps': _per_item_ns(dump, repeat) - loop,
        'loads': _per_item_ns(load, repeat) - loop,
        'call': _per_item_ns(echo, repeat),
    }


def _ring_costs(n: int, repeat: int) -> dict[str, float]:
    """ns per item of Ring.push_many (runs of RUN), Ring.push (one message) and Ring.gather(RUN)."""
    from mpserver import _core

    ring = _core.Ring.create(4 << 20, 'mpserver-bench-breakdown')
    payloads = [pickle.dumps(i, 5) for i in range(RUN)]
    run = [(i, 0, p) for i, p in enumerate(payloads)]
    runs = max(n // RUN, 1)
    push_many, push, gather = ring.push_many, ring.push, ring.gather

    def take_all(expected: int) -> int:
        """Gather until ``expected`` items came out; returns the ns it took."""
        got = 0
        start = time.perf_counter_ns()
        while got < expected:
            items = gather(RUN, 0.0, 0)
            if not items:
                raise RuntimeError(f'Ring.gather returned nothing with {expected - got} items queued')
            got += len(items)
        return time.perf_counter_ns() - start

    many_ns, one_ns, gather_ns = [], [], []
    for _ in range(repeat):
        t_push = t_gather = 0
        for _ in range(runs):
            start = time.perf_counter_ns()
            push_many(run, 0)
            t_push += time.perf_counter_ns() - start
            t_gather += take_all(RUN)
        many_ns.append(t_push / (runs * RUN))
        gather_ns.append(t_gather / (runs * RUN))
        t_one = 0
        for _ in range(runs):
            start = time.perf_counter_ns()
            for i, p in enumerate(payloads):
                push(i, 0, p, 0, None)
            t_one += time.perf_counter_ns() - start
            take_all(RUN)
        one_ns.append(t_one / (runs * RUN))
    ring.close()
    return {
        'push_many': statistics.median(many_ns),
        'push': statistics.median(one_ns),
        'gather': statistics.median(gather_ns),
    }


def _end_to_end(n: int, repeat: int) -> dict[str, float]:
    """Per-item wall time and CPU time of stream(range(n)), medians over ``repeat`` streams.

    CPU time is split into the main process's streaming thread (this one),
    its other threads (the C++ collector and engine threads) and the worker
    process.
    """
    mod = BACKENDS['mpserver']
    wall, thread_cpu, main_cpu, worker_cpu = [], [], [], []
    with mod.Server(mod.ProcessServlet(ECHO['mpserver'], cpus=1)) as server:
        for _ in server.stream(range(WARMUP_ITEMS)):
            pass
        for _ in range(repeat):
            w0, c0, h0 = children_cpu_seconds(), time.process_time(), time.thread_time()
            t0 = time.perf_counter()
            count = 0
            for _ in server.stream(range(n)):
                count += 1
            t1 = time.perf_counter()
            h1, c1, w1 = time.thread_time(), time.process_time(), children_cpu_seconds()
            if count != n:
                raise RuntimeError(f'stream returned {count} results for {n} items')
            wall.append((t1 - t0) / n * 1e9)
            thread_cpu.append((h1 - h0) / n * 1e9)
            main_cpu.append((c1 - c0 - (h1 - h0)) / n * 1e9)
            worker_cpu.append((w1 - w0) / n * 1e9)
    return {
        'wall': statistics.median(wall),
        'thread_cpu': statistics.median(thread_cpu),
        'other_cpu': statistics.median(main_cpu),
        'worker_cpu': statistics.median(worker_cpu),
    }


def measure(quick: bool = False) -> list[Row]:
    """Run every measurement; return the table rows in display order."""
    n = 100_000 if quick else 300_000
    repeat = 3 if quick else 5
    py = _python_costs(n // 3, repeat)
    ring = _ring_costs(n // 3, repeat)
    e2e = _end_to_end(n, 3)
    main_sum = py['dumps'] + ring['push_many'] + ring['gather'] + py['loads']
    worker_sum = ring['gather'] + py['loads'] + py['call'] + py['dumps'] + ring['push']
    in_process = 'measured in one process, loop overhead subtracted'
    return [
        Row('(a) pickle.dumps(small int, protocol 5)', 'main: encode x; worker: encode y', py['dumps'], in_process),
        Row('(a) pickle.loads of that pickle', 'main: decode y; worker: decode x', py['loads'], in_process),
        Row(
            '(a) pickle round trip ×2 (dumps + loads on each side)',
            'both',
            2 * (py['dumps'] + py['loads']),
            'derived: 2 × (dumps + loads)',
        ),
        Row('(b) Echo().call(x) + one for-loop iteration', 'worker', py['call'], 'measured in one process'),
        Row(
            f'(c) Ring.push_many, runs of {RUN} small pickles',
            'main: send inputs',
            ring['push_many'],
            'measured in one process; no consumer waiting, so no wake-up',
        ),
        Row(
            '(c) Ring.push, one small pickle',
            'worker: send a result',
            ring['push'],
            'measured in one process; no consumer waiting, so no wake-up',
        ),
        Row(
            f'(c) Ring.gather({RUN}), per item',
            'worker: take inputs; main: stand-in for collector + stream drain',
            ring['gather'],
            'measured in one process; the main side really takes results via a C++ '
            'collector thread and the stream window',
        ),
        Row('main-process sum: dumps + push_many + gather + loads', 'main', main_sum, 'derived from the rows above'),
        Row(
            'worker-process sum: gather + loads + call + dumps + push',
            'worker',
            worker_sum,
            'derived from the rows above',
        ),
        Row(
            '(d) end to end: 1 / throughput of stream(range(n)), 1 proc',
            'end to end',
            e2e['wall'],
            f'measured: n = {n:,}, median of 3 streams',
        ),
        Row(
            'main-process CPU time during (d): the streaming thread',
            'main',
            e2e['thread_cpu'],
            'measured: time.thread_time() / n',
        ),
        Row(
            'main-process CPU time during (d): its other threads',
            'main',
            e2e['other_cpu'],
            'measured: (time.process_time() − time.thread_time()) / n (C++ collector and '
            'engine threads; includes spin-waiting)',
        ),
        Row(
            'worker-process CPU time during (d)',
            'worker',
            e2e['worker_cpu'],
            'measured: utime + stime from /proc / n (includes spin-waiting for work)',
        ),
        Row(
            '(e) the rest, main side: (d) − main-process sum',
            'main',
            e2e['wall'] - main_sum,
            'derived: stream bookkeeping in Python (window submit/drain calls, deques, '
            'codec wrappers, generator resume) plus any wait for the worker',
        ),
        Row(
            '(e) the rest, streaming thread CPU: its CPU time − (dumps + push_many + loads)',
            'main',
            e2e['thread_cpu'] - (py['dumps'] + ring['push_many'] + py['loads']),
            'derived: the CPU part of the rest, without waits (gather is left out: results '
            'are gathered on the collector thread)',
        ),
    ]


def markdown_table(rows: list[Row]) -> str:
    lines = ['| component | side | ns per item | how it was obtained |', '| --- | --- | ---: | --- |']
    for r in rows:
        lines.append(f'| {r.component} | {r.side} | {r.ns:,.0f} | {r.how} |')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='fewer items and repeats')
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(markdown_table(measure(args.quick)))
    print(f'\n(took {time.perf_counter() - started:.1f} s)')


if __name__ == '__main__':
    main()
