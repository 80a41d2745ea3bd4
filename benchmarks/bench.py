"""Benchmark mpserver against mpservice.mpserver (0.16.8) in one run.

    PYTHONPATH=python python benchmarks/bench.py --rounds 5 --write    # the documented run
    PYTHONPATH=python python benchmarks/bench.py [--rounds N] [--quick] [--only TEXT] [--out PATH]

Every workload runs in a fresh ``Server`` per round and per backend.  Within a
round each workload runs on both backends back to back, and the backend that
goes first alternates from round to round, so slow drifts of a shared machine
hit both sides alike.  The table reports the median over rounds and the
min-max range; the ratio compares medians and is oriented so that > 1 means
mpserver is better (throughput: mpserver / mpservice; latency and start-up
time: mpservice / mpserver).

Workloads (``benchmarks/README.md`` says exactly what each row measures):

* stream: items/s of ``server.stream(range(n))`` through the trivial worker
  (``call(x) -> x`` on small ints) with 1, 2 and 4 processes, without
  batching and with ``batch_size=64``, plus ``batch_size`` 8 and 256 with one
  process (the batch-size sweep), and a generator input with 2 processes.
* composition: items/s through a Process -> Thread -> Process pipeline, an
  ensemble of two process servlets, and a switch over two process servlets.
* call: p50 and p99 latency of one-at-a-time ``server.call``; calls/s and p99
  latency of 32 threads calling at once.
* payload: MB/s echoing ``bytes`` and numpy arrays of 100 B, 10 KB, 1 MB and
  16 MB.
* enter + first call with 1, 2 and 4 worker processes.
* CPU-bound: a worker burning ~1 ms of pure Python per item, 2 processes;
  throughput and efficiency against the ideal of both workers computing all
  the time (the calls measure their own time inside the workers).

Around every measurement, ``OtherLoad`` records how many cores other
processes on the machine kept busy (``/proc/stat`` minus this process tree),
shown in the progress lines and summarised in the report, so that a run
disturbed by someone else's compile or test is visible as such.

``--write`` also measures the main process's RSS over 1,000,000 streamed items
(``rss.py``) and the per-item cost breakdown (``breakdown.py``), draws the
plots (matplotlib: ``pip install '.[bench]'``) into ``docs/img/``, and
rewrites the generated regions of ``docs/benchmarks.md`` (and of
``README.md``, if it has ``<!-- bench-table:begin -->`` /
``<!-- bench-table:end -->`` markers); last, it runs ``peers.py --write``
(mpserver next to the standard library's pools; ``--no-peers`` skips it).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import gc
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable

import breakdown
import report
import rss as rss_probe
from _bench_workers import BACKENDS, BURN, ECHO, PARITY, burn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOCS_PAGE = os.path.join(ROOT, 'docs', 'benchmarks.md')
IMG_DIR = os.path.join(ROOT, 'docs', 'img')
README = os.path.join(ROOT, 'README.md')
RSS_SCRIPT = os.path.join(HERE, 'rss.py')
PEERS_SCRIPT = os.path.join(HERE, 'peers.py')
#: The documented command that regenerates the tables and plots.
WRITE_COMMAND = 'python benchmarks/bench.py --rounds 5 --write'

STREAM_WARMUP_ITEMS = 256
KB = 1_000
MB = 1_000_000
PAYLOAD_SIZES = (100, 10 * KB, 1 * MB, 16 * MB)
#: Bytes streamed to estimate a backend's payload rate before the timed stream.
PAYLOAD_WARMUP_BYTES = 64 * MB  # both backends reach their steady state (heap, buffers)
PAYLOAD_WARMUP_MIN_ITEMS = 8
ENTER_WORKERS = (1, 2, 4)
CPU_BOUND_SECONDS_PER_CALL = 1e-3
CPU_BOUND_PROCS = 2
#: A run during which other processes kept more than this many cores busy is listed as disturbed.
DISTURBED_CORES = 0.25
#: Main-process VmRSS growth allowed over the second half of the RSS stream (rss.growth_mb).
RSS_FLAT_MB = 1.0


@dataclasses.dataclass(frozen=True)
class Sizes:
    stream_items: int  # items per stream workload
    call_warmup: int  # calls before timing, for the call workloads
    call_count: int  # timed one-at-a-time calls
    threads: int  # concurrent callers
    calls_per_thread: int  # calls each concurrent caller makes
    payload_bytes: int  # most bytes one payload stream moves (sizes below 16 MB)
    payload_bytes_large: int  # the same for 16 MB items
    payload_seconds: float  # target duration of one payload stream
    payload_min_items: int
    cpu_items: int  # items streamed through the CPU-bound worker


FULL = Sizes(
    stream_items=50_000,
    call_warmup=200,
    call_count=3_000,
    threads=32,
    calls_per_thread=400,
    payload_bytes=1000 * MB,
    payload_bytes_large=512 * MB,
    payload_seconds=1.0,
    payload_min_items=4,
    cpu_items=2_000,
)
QUICK = Sizes(
    stream_items=10_000,
    call_warmup=50,
    call_count=1_000,
    threads=32,
    calls_per_thread=60,
    payload_bytes=40 * MB,
    payload_bytes_large=48 * MB,
    payload_seconds=0.25,
    payload_min_items=3,
    cpu_items=500,
)


@dataclasses.dataclass(frozen=True)
class Target:
    """A goal for one row: ``ratio`` of medians >= threshold, or mpserver's median >= threshold."""

    text: str
    threshold: float
    on: str = 'ratio'  # 'ratio' or 'mpserver'


@dataclasses.dataclass(frozen=True)
class PlotPoint:
    """Where a row's values go in a scaling plot: figure key, line name, x value."""

    figure: str
    series: str
    x: float


@dataclasses.dataclass(frozen=True)
class Metric:
    """One row of the table."""

    label: str
    unit: str
    higher_is_better: bool
    fmt: str  # format spec for one value
    target: Target | None = None
    plots: tuple[PlotPoint, ...] = ()
    ratio: bool = True  # False: the ratio column shows a dash (the row is context)


@dataclasses.dataclass(frozen=True)
class Workload:
    """One measurement run on a fresh server; yields one value per metric."""

    name: str
    metrics: tuple[Metric, ...]
    run: Callable[[str, Sizes], tuple[float, ...]]  # (backend name, sizes) -> values


STREAM_TARGET = Target('every stream shape: ≥ 10× items/s', 10)
FIGURES = {
    f.key: f
    for f in (
        report.Figure(
            'workers',
            'bench_workers.png',
            'Trivial-worker stream: throughput vs worker processes',
            'worker processes (2 CPU cores)',
            'items/s (log scale)',
            xlog=2,
        ),
        report.Figure(
            'batch',
            'bench_batch.png',
            'Trivial-worker stream, 1 process: throughput vs batch_size',
            'batch_size (0 shown as 1)',
            'items/s (log scale)',
            xlog=2,
        ),
        report.Figure(
            'payload',
            'bench_payload.png',
            'Echo, 1 process: throughput vs payload size',
            'payload size',
            'MB/s (log scale)',
            xlog=10,
            xbytes=True,
        ),
        report.Figure(
            'enter',
            'bench_enter.png',
            'Start-up: Server enter + first call vs worker processes',
            'worker processes',
            'seconds (log scale)',
            xlog=2,
        ),
    )
}


# --- workloads --------------------------------------------------------------


def _drain(results: Iterable) -> int:
    count = 0
    for _ in results:
        count += 1
    return count


def _make_server(backend: str, *, cpus: int, batch_size: int = 0, shape: str = 'process'):
    """A Server on ``backend`` running the Echo worker in one of these shapes:
    ``process`` (one ProcessServlet), ``pipeline`` (Process -> Thread -> Process),
    ``ensemble`` (an EnsembleServlet of two ProcessServlets) or ``switch`` (a
    SwitchServlet over two ProcessServlets, routing by ``x % 2``)."""
    mod = BACKENDS[backend]
    echo = ECHO[backend]

    def proc():
        return mod.ProcessServlet(echo, cpus=cpus, batch_size=batch_size)

    if shape == 'process':
        servlet = proc()
    elif shape == 'pipeline':
        servlet = mod.SequentialServlet(proc(), mod.ThreadServlet(echo, batch_size=batch_size), proc())
    elif shape == 'ensemble':
        servlet = mod.EnsembleServlet(proc(), proc())
    elif shape == 'switch':
        servlet = PARITY[backend](proc(), proc())
    else:
        raise ValueError(f'unknown shape {shape!r}')
    return mod.Server(servlet)


def stream_throughput(
    backend: str,
    sizes: Sizes,
    *,
    cpus: int,
    batch_size: int,
    generator: bool = False,
    shape: str = 'process',
) -> tuple[float]:
    n = sizes.stream_items
    with _make_server(backend, cpus=cpus, batch_size=batch_size, shape=shape) as server:
        _drain(server.stream(range(STREAM_WARMUP_ITEMS)))
        data = (i for i in range(n)) if generator else range(n)
        start = time.perf_counter()
        count = _drain(server.stream(data))
        elapsed = time.perf_counter() - start
    if count != n:
        raise RuntimeError(f'{backend}: stream returned {count} results for {n} items')
    return (n / elapsed,)


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in (0, 100]."""
    rank = math.ceil(q / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


def call_latency(backend: str, sizes: Sizes) -> tuple[float, float]:
    latencies_ns = []
    with _make_server(backend, cpus=1) as server:
        for i in range(sizes.call_warmup):
            server.call(i % 100)
        for i in range(sizes.call_count):
            start = time.perf_counter_ns()
            server.call(i % 100)
            latencies_ns.append(time.perf_counter_ns() - start)
    latencies_ns.sort()
    return _percentile(latencies_ns, 50) / 1e3, _percentile(latencies_ns, 99) / 1e3


def concurrent_calls(backend: str, sizes: Sizes) -> tuple[float, float]:
    """``sizes.threads`` threads each make ``calls_per_thread`` calls, all released at once."""
    nthreads, per = sizes.threads, sizes.calls_per_thread
    latencies: list[list[int]] = [[] for _ in range(nthreads)]
    errors: list[BaseException] = []
    with _make_server(backend, cpus=2) as server:
        for i in range(sizes.call_warmup):
            server.call(i % 100)
        barrier = threading.Barrier(nthreads + 1)

        def caller(k: int) -> None:
            out, call, clock = latencies[k], server.call, time.perf_counter_ns
            barrier.wait()
            try:
                for i in range(per):
                    start = clock()
                    call(i % 100)
                    out.append(clock() - start)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(nthreads)]
        for t in threads:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f'{backend}: {len(errors)} calling thread(s) failed') from errors[0]
    merged = sorted(v for lat in latencies for v in lat)
    if len(merged) != nthreads * per:
        raise RuntimeError(f'{backend}: {len(merged)} of {nthreads * per} calls returned')
    return len(merged) / elapsed, _percentile(merged, 99) / 1e3


def _payload(kind: str, size: int):
    """A fresh random payload: ``bytes``, or a writable numpy uint8 array."""
    raw = os.urandom(size)
    if kind == 'bytes':
        return raw
    import numpy as np

    return np.frombuffer(bytearray(raw), np.uint8)


def _check_echo(backend: str, x, y) -> None:
    """Raise unless ``y`` is a correct echo of ``x`` (type, length and contents)."""
    if type(y) is not type(x) or len(y) != len(x):
        raise RuntimeError(
            f'{backend}: echo of a {type(x).__name__} of {len(x):,} bytes came back as '
            f'{type(y).__name__} of length {len(y) if hasattr(y, "__len__") else "?"}'
        )
    if type(x) is bytes:
        same = x == y
    else:
        import numpy as np

        same = x.dtype == y.dtype and np.array_equal(x, y)
    if not same:
        raise RuntimeError(f'{backend}: echo of a {type(x).__name__} came back with other contents')


def payload_throughput(backend: str, sizes: Sizes, *, kind: str, size: int) -> tuple[float]:
    """MB/s of echoing one payload, streamed as a list of the same object n times.

    A short warm-up stream estimates this backend's rate; n is then chosen so
    that the timed stream moves ``payload_bytes`` (``payload_bytes_large`` for
    16 MB items) or lasts about ``payload_seconds``, whichever is less.
    """
    x = _payload(kind, size)
    with _make_server(backend, cpus=1) as server:
        n0 = max(PAYLOAD_WARMUP_MIN_ITEMS, min(1_000, PAYLOAD_WARMUP_BYTES // size))
        start = time.perf_counter()
        _drain(server.stream([x] * n0))
        rate = n0 / (time.perf_counter() - start)
        cap = sizes.payload_bytes_large if size >= 16 * MB else sizes.payload_bytes
        n = max(sizes.payload_min_items, min(cap // size, int(rate * sizes.payload_seconds)))
        data = [x] * n
        first = None
        count = short = 0
        start = time.perf_counter()
        for y in server.stream(data):
            if first is None:
                first = y
            if len(y) != size:
                short += 1
            count += 1
        elapsed = time.perf_counter() - start
    if count != n or short:
        raise RuntimeError(f'{backend}: {count} results for {n} items, {short} of the wrong length')
    _check_echo(backend, x, first)
    return (n * size / elapsed / MB,)


ENTER_SCRIPT = os.path.join(HERE, '_enter.py')


def enter_first_call(backend: str, sizes: Sizes, *, cpus: int) -> tuple[float]:
    """Seconds from ``Server.__enter__`` to the first result, measured by
    ``_enter.py`` in a fresh interpreter that imports only ``backend`` (its
    workers import that script, as they would a user's)."""
    import subprocess

    out = subprocess.run(
        [sys.executable, ENTER_SCRIPT, backend, str(cpus)],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    ).stdout
    return (float(out.strip().splitlines()[-1]),)


def _seconds_per_burn(loops: int, calls: int = 20, repeat: int = 7) -> float:
    """Seconds one ``burn(loops)`` takes in this process: the fastest of ``repeat`` batches.

    The fastest batch is the cost of the work itself; slower ones were
    interrupted by other processes.  Using it for the ideal makes the
    efficiency a conservative figure.
    """
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            burn(loops)
        samples.append((time.perf_counter() - start) / calls)
    return min(samples)


@functools.cache
def burn_loops() -> int:
    """Loop count for which one ``burn`` takes about CPU_BOUND_SECONDS_PER_CALL here."""
    loops = 10_000
    for _ in range(3):
        loops = max(1_000, round(loops * CPU_BOUND_SECONDS_PER_CALL / _seconds_per_burn(loops)))
    return loops


def cpu_bound(backend: str, sizes: Sizes) -> tuple[float, float, float]:
    """Throughput of the Burn worker with 2 processes, and its efficiency vs the ideal.

    The ideal is both workers computing all the time: efficiency = the
    seconds the workers spent inside ``burn`` (each call measures and returns
    its own) / (2 × the stream's wall time).  What is lost is the serving:
    waiting for work, taking items, sending results.  The third value is one
    call's time inside the workers (for reference: on this 2-core VM, two
    busy processes each run ~10% slower than one alone).  The same ``loops``
    (calibrated once per run) goes to both backends.
    """
    loops = burn_loops()
    mod = BACKENDS[backend]
    n = sizes.cpu_items
    with mod.Server(mod.ProcessServlet(BURN[backend], cpus=CPU_BOUND_PROCS, loops=loops)) as server:
        _drain(server.stream(range(4 * CPU_BOUND_PROCS)))
        start = time.perf_counter()
        busy = count = 0
        for seconds in server.stream(range(n)):
            busy += seconds
            count += 1
        elapsed = time.perf_counter() - start
    if count != n:
        raise RuntimeError(f'{backend}: stream returned {count} results for {n} items')
    return n / elapsed, 100 * busy / (CPU_BOUND_PROCS * elapsed), busy / n * 1e3


def _throughput(label: str, unit: str = 'items/s', **kwargs) -> Metric:
    return Metric(label, unit, higher_is_better=True, fmt=',.0f', **kwargs)


def _stream(label: str, target: Target | None = STREAM_TARGET, plots: tuple[PlotPoint, ...] = (), **kwargs) -> Workload:
    return Workload(
        label, (_throughput(label, target=target, plots=plots),), functools.partial(stream_throughput, **kwargs)
    )


def _stream_range(cpus: int, batch_size: int) -> Workload:
    procs = f'{cpus} proc' + ('s' if cpus > 1 else '')
    batching = f'batch_size={batch_size}' if batch_size else 'no batching'
    plots = []
    if batch_size in (0, 64):
        plots.append(PlotPoint('workers', batching, cpus))
    if cpus == 1:
        plots.append(PlotPoint('batch', '1 proc', max(batch_size, 1)))
    # The stream shapes are batch_size 0 and 64; 8 and 256 are the
    # batch-size sweep for the plot, shown without a target.
    target = STREAM_TARGET if batch_size in (0, 64) else None
    return _stream(
        f'stream range, {procs}, {batching}', target=target, plots=tuple(plots), cpus=cpus, batch_size=batch_size
    )


def _payload_workload(kind: str, size: int) -> Workload:
    shown = {100: '100 B', 10 * KB: '10 KB', 1 * MB: '1 MB', 16 * MB: '16 MB'}[size]
    name = f'echo {kind}, {shown}, 1 proc'
    target = Target('1 MB payload: ≥ 6× MB/s', 6) if size == 1 * MB else None
    metric = Metric(
        name,
        'MB/s',
        higher_is_better=True,
        fmt=',.1f' if size < 10 * KB else ',.0f',
        target=target,
        plots=(PlotPoint('payload', kind, size),),
    )
    return Workload(name, (metric,), functools.partial(payload_throughput, kind=kind, size=size))


def _enter_workload(cpus: int) -> Workload:
    name = f'enter + first call, {cpus} proc' + ('s' if cpus > 1 else '')
    target = Target('enter + first call, 4 procs: ≥ 2× faster', 2) if cpus == 4 else None
    metric = Metric(name, 's', higher_is_better=False, fmt='.3f', target=target, plots=(PlotPoint('enter', '', cpus),))
    return Workload(name, (metric,), functools.partial(enter_first_call, cpus=cpus))


_CPU = f'CPU-bound ~1 ms/item, {CPU_BOUND_PROCS} procs'
_CALL = 'call one at a time, 1 proc'
_THREADS = f'call from {FULL.threads} threads at once, 2 procs'

WORKLOADS = (
    _stream_range(1, 0),
    _stream_range(1, 8),
    _stream_range(1, 64),
    _stream_range(1, 256),
    _stream_range(2, 0),
    _stream_range(2, 64),
    _stream_range(4, 0),
    _stream_range(4, 64),
    # Not one of the shapes (inputs pulled by a feeder thread): no target.
    _stream('stream generator, 2 procs, no batching', target=None, cpus=2, batch_size=0, generator=True),
    _stream('stream, Process -> Thread -> Process pipeline', cpus=1, batch_size=0, shape='pipeline'),
    _stream(
        'stream, ensemble of 2 process servlets',
        target=Target('ensemble: ≥ 8× items/s', 8),
        cpus=1,
        batch_size=0,
        shape='ensemble',
    ),
    _stream('stream, switch over 2 process servlets', cpus=1, batch_size=0, shape='switch'),
    Workload(
        _CALL,
        (
            Metric(f'{_CALL}, p50', 'µs', higher_is_better=False, fmt=',.0f', target=Target('call p50: ≥ 4× lower', 4)),
            Metric(f'{_CALL}, p99', 'µs', higher_is_better=False, fmt=',.0f', target=Target('call p99: ≥ 3× lower', 3)),
        ),
        call_latency,
    ),
    Workload(
        _THREADS,
        (
            _throughput(f'{_THREADS}, throughput', 'calls/s'),
            Metric(f'{_THREADS}, p99', 'µs', higher_is_better=False, fmt=',.0f'),
        ),
        concurrent_calls,
    ),
    *(_payload_workload(kind, size) for kind in ('bytes', 'numpy') for size in PAYLOAD_SIZES),
    *(_enter_workload(cpus) for cpus in ENTER_WORKERS),
    Workload(
        _CPU,
        (
            _throughput(f'{_CPU}, throughput'),
            Metric(
                f'{_CPU}, efficiency vs ideal',
                '%',
                higher_is_better=True,
                fmt='.1f',
                target=Target(f'CPU-bound, {CPU_BOUND_PROCS} procs: ≥ 95% of ideal', 95, on='mpserver'),
            ),
            Metric(f'{_CPU}, one call inside a worker', 'ms', higher_is_better=False, fmt='.3f', ratio=False),
        ),
        cpu_bound,
    ),
)


# --- running ----------------------------------------------------------------

Values = dict[tuple[str, str], list[float]]  # (metric label, backend) -> value per round


def _machine_busy_seconds() -> float:
    """CPU-seconds every process on the machine has used (and the hypervisor has stolen) since boot."""
    with open('/proc/stat') as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf('SC_CLK_TCK')


def _own_cpu_seconds() -> float:
    """CPU-seconds of this process and of its children that have been reaped."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """Measures how many cores other processes kept busy during a ``with`` block.

    Machine-wide busy time from /proc/stat minus this process's own CPU time
    and that of its (reaped) children, divided by the block's wall time.  On a
    shared machine this tells which measurements were disturbed.  Resolution:
    one clock tick (10 ms) of CPU time.
    """

    cores: float = 0.0

    def __enter__(self) -> OtherLoad:
        self._start = (time.perf_counter(), _machine_busy_seconds(), _own_cpu_seconds())
        return self

    def __exit__(self, *exc) -> None:
        wall0, busy0, own0 = self._start
        wall = time.perf_counter() - wall0
        other = (_machine_busy_seconds() - busy0) - (_own_cpu_seconds() - own0)
        self.cores = max(other, 0.0) / wall if wall > 0 else 0.0


def run_all(rounds: int, sizes: Sizes, workloads=WORKLOADS) -> tuple[Values, Values]:
    """Return ``{(metric label, backend): [value per round]}`` and, per
    ``(workload name, backend)``, the cores other processes kept busy in each round."""
    names = list(BACKENDS)
    values: Values = {}
    other: Values = {}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for workload in workloads:
            for backend in order:
                with OtherLoad() as load:
                    results = workload.run(backend, sizes)
                    # Finalize finished servers now, at a quiet point: mpservice's
                    # finalizers join threads and can deadlock when a random GC
                    # runs them inside a new thread's start-up.
                    gc.collect()
                other.setdefault((workload.name, backend), []).append(load.cores)
                for metric, value in zip(workload.metrics, results, strict=True):
                    values.setdefault((metric.label, backend), []).append(value)
                shown = ', '.join(f'{v:{m.fmt}} {m.unit}' for m, v in zip(workload.metrics, results, strict=True))
                print(
                    f'round {r + 1}/{rounds}  {workload.name:<48} {backend:<9} {shown}'
                    f'  [other processes: {load.cores:.2f} cores]',
                    file=sys.stderr,
                    flush=True,
                )
    return values, other


def run_rss(backends: Iterable[str]) -> list[dict]:
    """Run ``rss.py`` in a fresh interpreter per backend; return its results."""
    results = []
    for backend in backends:
        print(f'rss: streaming 1,000,000 items on {backend} ...', file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, RSS_SCRIPT, '--backend', backend, '--json'], capture_output=True, text=True, timeout=900
        )
        if proc.returncode != 0:
            raise RuntimeError(f'rss.py --backend {backend} failed ({proc.returncode}):\n{proc.stderr}')
        results.append(json.loads(proc.stdout))
    return results


# --- reporting --------------------------------------------------------------

BASE, NEW = 'mpservice', 'mpserver'


def _all_metrics(workloads) -> list[Metric]:
    return [m for w in workloads for m in w.metrics]


def _ratio(values: Values, m: Metric) -> float:
    old_med = statistics.median(values[(m.label, BASE)])
    new_med = statistics.median(values[(m.label, NEW)])
    return new_med / old_med if m.higher_is_better else old_med / new_med


def _cell(values: list[float], metric: Metric) -> str:
    f = metric.fmt
    return f'{statistics.median(values):{f}} ({min(values):{f}}–{max(values):{f}})'


def markdown_table(values: Values, workloads=WORKLOADS) -> str:
    lines = [
        f'| workload | {BASE} (median, min–max) | {NEW} (median, min–max) | ratio |',
        '| --- | --- | --- | --- |',
    ]
    for m in _all_metrics(workloads):
        if (m.label, BASE) not in values:
            continue
        ratio = f'{_ratio(values, m):.2f}×' if m.ratio else '—'
        lines.append(
            f'| {m.label} ({m.unit}) | {_cell(values[(m.label, BASE)], m)} | '
            f'{_cell(values[(m.label, NEW)], m)} | {ratio} |'
        )
    return '\n'.join(lines)


def compact_table(values: Values, workloads=WORKLOADS) -> str:
    """Medians and ratios only: the README's version of the table."""
    lines = [f'| workload | {BASE} | {NEW} | ratio |', '| --- | ---: | ---: | ---: |']
    for m in _all_metrics(workloads):
        if (m.label, BASE) not in values or not m.ratio:
            continue
        old, new = (statistics.median(values[(m.label, b)]) for b in (BASE, NEW))
        lines.append(f'| {m.label} ({m.unit}) | {old:{m.fmt}} | {new:{m.fmt}} | {_ratio(values, m):.1f}× |')
    return '\n'.join(lines)


def target_rows(values: Values, rss: list[dict], workloads=WORKLOADS) -> list[tuple[str, str, str, bool]]:
    """(target, row, measured, met) for every row with a target, then the RSS target."""
    rows = []
    for m in _all_metrics(workloads):
        if m.target is None or (m.label, BASE) not in values:
            continue
        t = m.target
        if t.on == 'ratio':
            measured = _ratio(values, m)
            shown = f'{measured:.2f}×'
        else:
            measured = statistics.median(values[(m.label, NEW)])
            shown = f'{measured:{m.fmt}} {m.unit} ({NEW})'
        rows.append((t.text, m.label, shown, measured >= t.threshold))
    for r in rss:
        if r['backend'] != NEW:
            continue
        items, growth = rss_probe.growth_mb(r)
        rows.append(
            (
                f'main-process RSS flat over {r["items"]:,} streamed items '
                f'(VmRSS growth ≤ {RSS_FLAT_MB:g} MB over the last {items:,})',
                f'RSS, 2 procs, batch_size=64 ({NEW})',
                f'{growth:+.1f} MB',
                growth <= RSS_FLAT_MB,
            )
        )
    return rows


def targets_table(rows: list[tuple[str, str, str, bool]]) -> str:
    lines = ['| target | row | measured | |', '| --- | --- | --- | --- |']
    for text, label, shown, met in rows:
        lines.append(f'| {text} | {label} | {shown} | {"met" if met else "**not met**"} |')
    met = sum(r[3] for r in rows)
    lines.append('')
    lines.append(f'{met} of {len(rows)} targets met.')
    return '\n'.join(lines)


def _git_revision() -> str:
    try:
        rev = subprocess.run(
            ['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ['git', 'status', '--porcelain', '--untracked-files=no'],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return 'unknown'
    if not rev:
        return 'unknown'
    return f'{rev} (with uncommitted changes)' if dirty else rev


def machine_description() -> str:
    import mpservice

    mpserver = BACKENDS['mpserver']
    mpserver_version = getattr(mpserver, '__version__', '?')
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return '\n'.join(
        [
            f'- date: {datetime.datetime.now().astimezone().isoformat(timespec="minutes")}',
            f'- CPU: {report.cpu_model()}, {os.cpu_count()} cores ({usable} usable by this process)',
            f'- Python {platform.python_version()} ({platform.python_implementation()}), '
            f'{platform.system()} {platform.release()}',
            f'- mpservice {mpservice.__version__}; '
            f'mpserver {mpserver_version} from {os.path.dirname(mpserver.__file__)}, '
            f'source revision {_git_revision()}',
        ]
    )


def settings_description(rounds: int, sizes: Sizes) -> str:
    return (
        f'{rounds} round(s), backend order alternating per round; '
        f'stream: {sizes.stream_items:,} items after a {STREAM_WARMUP_ITEMS}-item warm-up; '
        f'call: {sizes.call_count:,} calls after {sizes.call_warmup} warm-up calls; '
        f'{sizes.threads} threads × {sizes.calls_per_thread:,} calls; '
        f'payload: per backend, as many items as move {sizes.payload_bytes // MB} MB '
        f'({sizes.payload_bytes_large // MB} MB for 16 MB items) or last about '
        f'{sizes.payload_seconds:g} s, whichever is fewer (at least {sizes.payload_min_items}); '
        f'CPU-bound: {sizes.cpu_items:,} items. '
        'Ratio: mpserver/mpservice for throughput, mpservice/mpserver for times; '
        '> 1 means mpserver is better.'
    )


def other_load_description(other: Values) -> str:
    """One line: how busy other processes kept the machine, and the runs they disturbed most."""
    loads = [v for vs in other.values() for v in vs]
    if not loads:
        return ''
    disturbed = sorted(
        (
            (v, name, backend, r + 1)
            for (name, backend), vs in other.items()
            for r, v in enumerate(vs)
            if v > DISTURBED_CORES
        ),
        reverse=True,
    )
    text = (
        f'other processes on the machine during the measurements: median '
        f'{statistics.median(loads):.2f} cores, max {max(loads):.2f} (of {os.cpu_count()}); '
    )
    if not disturbed:
        return text + f'no run above {DISTURBED_CORES:g} cores'
    shown = '; '.join(f'{name}, {backend}, round {r}: {v:.2f}' for v, name, backend, r in disturbed[:4])
    more = f'; and {len(disturbed) - 4} more' if len(disturbed) > 4 else ''
    return text + (
        f'{len(disturbed)} of {len(loads)} runs above {DISTURBED_CORES:g} cores, the most disturbed: {shown}{more}'
    )


# --- one run's results, saved and rendered -----------------------------------


@dataclasses.dataclass
class RunData:
    command: str
    rounds: int
    quick: bool
    seconds: float
    machine: str
    values: Values
    other_load: Values = dataclasses.field(default_factory=dict)  # see OtherLoad
    rss: list[dict] = dataclasses.field(default_factory=list)
    breakdown: list[dict] = dataclasses.field(default_factory=list)

    @property
    def sizes(self) -> Sizes:
        return QUICK if self.quick else FULL

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d['values'] = [[label, backend, v] for (label, backend), v in self.values.items()]
        d['other_load'] = [[name, backend, v] for (name, backend), v in self.other_load.items()]
        return d

    @classmethod
    def from_json(cls, d: dict) -> RunData:
        d = dict(d)
        d['values'] = {(label, backend): v for label, backend, v in d['values']}
        d['other_load'] = {(name, backend): v for name, backend, v in d.get('other_load', [])}
        return cls(**d)


def _plot_series(values: Values, workloads) -> dict[str, list]:
    """``{figure key: [report.Series, ...]}`` from the rows that have plot points."""
    points: dict[tuple[str, str, str], list[tuple[float, list[float]]]] = {}
    for m in _all_metrics(workloads):
        for p in m.plots:
            for backend in (BASE, NEW):
                if (m.label, backend) in values:
                    points.setdefault((p.figure, backend, p.series), []).append((p.x, values[(m.label, backend)]))
    out: dict[str, list] = {}
    for (figure, backend, series), xs in points.items():
        xs.sort()
        out.setdefault(figure, []).append(report.Series(backend, series, [x for x, _ in xs], [v for _, v in xs]))
    return out


def write_plots(run: RunData, workloads=WORKLOADS) -> list[tuple[str, str]]:
    """Draw every figure with data; return ``[(title, PNG file name), ...]``."""
    written = []
    for key, series in _plot_series(run.values, workloads).items():
        fig = FIGURES[key]
        report.plot_figure(fig, series, IMG_DIR)
        written.append((fig.title, fig.filename))
    if run.rss:
        report.plot_rss(run.rss, IMG_DIR)
        written.append(('Main-process RSS while streaming', 'bench_rss.png'))
    return written


def render_docs_region(run: RunData, plots: list[tuple[str, str]], workloads=WORKLOADS) -> str:
    parts = [
        f'<!-- generated by benchmarks/bench.py (regenerate: {WRITE_COMMAND}); '
        'edits between the bench:begin/end markers are overwritten -->',
        '',
        '### Machine and settings',
        '',
        run.machine,
        f'- command: `{run.command}` ({run.seconds / 60:.1f} minutes)',
        f'- settings: {settings_description(run.rounds, run.sizes)}',
        *([f'- {other_load_description(run.other_load)}'] if run.other_load else []),
        '',
        '### Results',
        '',
        markdown_table(run.values, workloads),
        '',
        '### Targets',
        '',
        targets_table(target_rows(run.values, run.rss, workloads)),
        '',
    ]
    figures = [(title, name) for title, name in plots if name != 'bench_rss.png']
    if figures:
        parts += ['### Scaling', '']
        for title, name in figures:
            parts += [f'![{title}](img/{name})', '']
    if run.rss:
        rss = run.rss
        parts += [
            '### Main-process memory over a long stream',
            '',
            (
                f'{rss[0]["items"]:,} small ints streamed through 2 worker processes with '
                '`batch_size=64`, in a fresh interpreter per backend; memory of the main process '
                f'after a warm-up (0) and every {int(rss[0]["samples"][1][0]):,} results.  VmRSS is '
                'RssAnon (the heap) + RssShmem (shared memory touched, such as the rings) + mapped '
                'files.'
            ),
            '',
            rss_probe.markdown_table(rss),
            '',
        ]
        if any(name == 'bench_rss.png' for _, name in plots):
            parts += ['![Main-process RSS while streaming](img/bench_rss.png)', '']
    return '\n'.join(parts)


def render_breakdown_region(run: RunData) -> str:
    rows = [breakdown.Row(**r) for r in run.breakdown]
    return '\n'.join(
        [
            f'<!-- generated by benchmarks/breakdown.py via {WRITE_COMMAND}; '
            'edits between the breakdown:begin/end markers are overwritten -->',
            '',
            breakdown.markdown_table(rows),
        ]
    )


def render_readme_region(run: RunData, workloads=WORKLOADS) -> str:
    return '\n'.join(
        [
            compact_table(run.values, workloads),
            '',
            f'Medians of {run.rounds} round(s) on {report.cpu_model()} ({os.cpu_count()} cores); '
            f'ratio > 1 means mpserver is better.  Regenerate with `{WRITE_COMMAND}`; '
            'full table, targets and plots in [docs/benchmarks.md](docs/benchmarks.md).',
        ]
    )


def write_outputs(run: RunData, *, plots: bool) -> None:
    """Write the PNGs and the generated regions of docs/benchmarks.md (and README.md)."""
    written = write_plots(run) if plots else []
    report.replace_region(DOCS_PAGE, 'bench', render_docs_region(run, written), required=True)
    if run.breakdown:
        report.replace_region(DOCS_PAGE, 'breakdown', render_breakdown_region(run), required=True)
    in_readme = report.replace_region(README, 'bench-table', render_readme_region(run))
    print(
        f'wrote {os.path.relpath(DOCS_PAGE, ROOT)}'
        + (f', {len(written)} plot(s) in {os.path.relpath(IMG_DIR, ROOT)}' if written else '')
        + (', README.md table' if in_readme else ''),
        file=sys.stderr,
    )


def print_report(run: RunData, workloads=WORKLOADS) -> None:
    """The tables on stdout, as they go into the docs."""
    print(markdown_table(run.values, workloads))
    print()
    print(settings_description(run.rounds, run.sizes))
    if run.other_load:
        print(other_load_description(run.other_load))
    rows = target_rows(run.values, run.rss, workloads)
    if rows:
        print()
        print(targets_table(rows))
    if run.rss:
        print()
        print(rss_probe.markdown_table(run.rss))
    if run.breakdown:
        print()
        print(render_breakdown_region(run).split('\n', 2)[2])


def measure(
    argv: list[str], rounds: int, quick: bool, workloads, *, full: bool, rss_backends: list[str], rss: bool
) -> RunData:
    """Run the workloads; with ``full`` also the breakdown, with ``rss`` the RSS probe."""
    started = time.perf_counter()
    command = shlex.join(['python', 'benchmarks/bench.py', *argv])
    values, other_load = run_all(rounds, QUICK if quick else FULL, workloads)
    run = RunData(command, rounds, quick, 0.0, machine_description(), values, other_load)
    if rss:
        run.rss = run_rss(rss_backends)
    if full:
        print('breakdown: per-item costs on mpserver ...', file=sys.stderr, flush=True)
        run.breakdown = [dataclasses.asdict(r) for r in breakdown.measure(quick)]
    run.seconds = time.perf_counter() - started
    print(f'total benchmark time: {run.seconds:.0f} s', file=sys.stderr)
    return run


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=None, help='rounds per backend (default 3, or 2 with --quick)')
    parser.add_argument(
        '--quick', action='store_true', help='smaller sizes: a smoke run (under a minute with --rounds 1)'
    )
    parser.add_argument('--out', metavar='PATH', help='also write the tables and a machine description to PATH')
    parser.add_argument('--only', metavar='TEXT', help='run only the workloads whose name contains TEXT')
    parser.add_argument(
        '--write',
        action='store_true',
        help='also run the RSS and breakdown measurements, draw the plots into '
        'docs/img/ and rewrite the generated regions of docs/benchmarks.md '
        '(and README.md, if it has bench-table markers)',
    )
    parser.add_argument('--no-plots', action='store_true', help='do not draw plots (for machines without matplotlib)')
    parser.add_argument('--no-peers', action='store_true', help='with --write: do not run peers.py --write')
    parser.add_argument(
        '--rss', action='store_true', help='only measure the main-process RSS over 1,000,000 streamed items'
    )
    parser.add_argument(
        '--rss-mpservice', action='store_true', help='measure the RSS on mpservice too (about 40 s more)'
    )
    parser.add_argument('--json', metavar='PATH', help='save the raw results to PATH')
    parser.add_argument(
        '--from-json', metavar='PATH', help='do not measure: report (and with --write, write) results saved by --json'
    )
    args = parser.parse_args(argv)

    if args.write and not args.no_plots:
        try:
            report.require_matplotlib()
        except ImportError as e:
            parser.error(str(e))
    if args.write and args.only:
        parser.error('--write publishes a full run: it cannot be combined with --only')
    workloads = tuple(w for w in WORKLOADS if not args.only or args.only in w.name)
    if not workloads:
        parser.error(f'no workload name contains {args.only!r}')
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 3)
    if rounds < 1:
        parser.error('--rounds must be at least 1')
    rss_backends = [NEW] + ([BASE] if args.rss_mpservice else [])

    if args.rss:
        results = run_rss(rss_backends)
        print(rss_probe.markdown_table(results))
        for r in results:
            items, growth = rss_probe.growth_mb(r)
            print(
                f'{r["backend"]}: {r["items"]:,} items in {r["seconds"]:.1f} s; '
                f'VmRSS growth over the last {items:,} items: {growth:+.1f} MB'
            )
        return
    if args.from_json:
        with open(args.from_json, encoding='utf-8') as f:
            run = RunData.from_json(json.load(f))
    else:
        run = measure(
            argv,
            rounds,
            args.quick,
            workloads,
            full=args.write,
            rss_backends=rss_backends,
            rss=args.write or args.rss_mpservice,
        )
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(run.to_json(), f, indent=1)
    print_report(run, workloads)
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write('# mpserver vs mpservice benchmark\n\n')
            f.write(render_docs_region(run, [], workloads) + '\n')
    if args.write:
        write_outputs(run, plots=not args.no_plots)
        if not args.no_peers:
            print('peers: mpserver next to the standard library (peers.py --write) ...', file=sys.stderr, flush=True)
            extra = (['--quick'] if args.quick else []) + (['--no-plots'] if args.no_plots else [])
            subprocess.run([sys.executable, PEERS_SCRIPT, '--write', *extra], check=True)


if __name__ == '__main__':
    main()
