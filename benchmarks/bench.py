"""Benchmark mpserver against mpservice.mpserver (0.16.8) in one run.

    PYTHONPATH=python python benchmarks/bench.py [--rounds N] [--quick] [--out PATH]

Every workload runs a trivial worker (``call(x) -> x`` on small ints) in a
fresh ``Server`` per round and per backend.  Within a round each workload runs
on both backends back to back, and the backend that goes first alternates from
round to round, so slow drifts of a shared machine hit both sides alike.  The
table reports the median over rounds and the min-max range; the ratio compares
medians and is oriented so that > 1 means mpserver is better (throughput:
mpserver / mpservice; latency and start-up time: mpservice / mpserver).

Workloads:

* stream: items/s for ``server.stream(range(n))`` with 1 and 2 worker
  processes, without batching and with ``batch_size=64``; plus one row that
  streams a generator with 2 processes.  Only the streaming loop is timed,
  after a short warm-up stream on the same server.
* composition: items/s streamed through a Process -> Thread -> Process
  SequentialServlet, and through an EnsembleServlet of two ProcessServlets
  (one process each, no batching).
* call: p50 and p99 latency of one-at-a-time ``server.call(x)`` with 1 process,
  after a warm-up.
* enter + first call: seconds from the start of ``Server(...).__enter__`` with
  2 processes to the first result of ``server.call``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import gc
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable

from _bench_workers import BACKENDS, ECHO

STREAM_WARMUP_ITEMS = 256


@dataclasses.dataclass(frozen=True)
class Sizes:
    stream_items: int
    call_warmup: int
    call_count: int


FULL = Sizes(stream_items=50_000, call_warmup=200, call_count=3_000)
QUICK = Sizes(stream_items=10_000, call_warmup=50, call_count=1_000)


@dataclasses.dataclass(frozen=True)
class Metric:
    """One row of the table."""

    label: str
    unit: str
    higher_is_better: bool
    fmt: str  # format spec for one value


@dataclasses.dataclass(frozen=True)
class Workload:
    """One measurement run on a fresh server; yields one value per metric."""

    name: str
    metrics: tuple[Metric, ...]
    run: Callable[[str, Sizes], tuple[float, ...]]  # (backend name, sizes) -> values


# --- workloads --------------------------------------------------------------


def _drain(results: Iterable) -> int:
    count = 0
    for _ in results:
        count += 1
    return count


def _make_server(backend: str, *, cpus: int, batch_size: int = 0, shape: str = 'process'):
    """A Server on ``backend`` running the Echo worker in one of these shapes:
    ``process`` (one ProcessServlet), ``pipeline`` (Process -> Thread -> Process)
    or ``ensemble`` (an EnsembleServlet of two ProcessServlets)."""
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
    else:
        raise ValueError(f'unknown shape {shape!r}')
    return mod.Server(servlet)


def stream_throughput(
    backend: str, sizes: Sizes, *, cpus: int, batch_size: int, generator: bool = False,
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


def enter_first_call(backend: str, sizes: Sizes) -> tuple[float]:
    start = time.perf_counter()
    with _make_server(backend, cpus=2) as server:
        server.call(0)
        elapsed = time.perf_counter() - start
    return (elapsed,)


def _throughput(label: str) -> Metric:
    return Metric(label, 'items/s', higher_is_better=True, fmt=',.0f')


def _stream(label: str, **kwargs) -> Workload:
    return Workload(label, (_throughput(label),), functools.partial(stream_throughput, **kwargs))


WORKLOADS = (
    _stream('stream range, 1 proc, no batching', cpus=1, batch_size=0),
    _stream('stream range, 1 proc, batch_size=64', cpus=1, batch_size=64),
    _stream('stream range, 2 procs, no batching', cpus=2, batch_size=0),
    _stream('stream range, 2 procs, batch_size=64', cpus=2, batch_size=64),
    _stream('stream generator, 2 procs, no batching', cpus=2, batch_size=0, generator=True),
    _stream('stream, Process -> Thread -> Process pipeline', cpus=1, batch_size=0, shape='pipeline'),
    _stream('stream, ensemble of 2 process servlets', cpus=1, batch_size=0, shape='ensemble'),
    Workload(
        'call one at a time, 1 proc',
        (
            Metric('call one at a time, 1 proc, p50', 'µs', higher_is_better=False, fmt=',.0f'),
            Metric('call one at a time, 1 proc, p99', 'µs', higher_is_better=False, fmt=',.0f'),
        ),
        call_latency,
    ),
    Workload(
        'enter + first call, 2 procs',
        (Metric('enter + first call, 2 procs', 's', higher_is_better=False, fmt='.3f'),),
        enter_first_call,
    ),
)


# --- running ----------------------------------------------------------------


def run_all(rounds: int, sizes: Sizes, workloads=WORKLOADS) -> dict[tuple[str, str], list[float]]:
    """Return ``{(metric label, backend): [value per round]}``."""
    names = list(BACKENDS)
    values: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for workload in workloads:
            for backend in order:
                results = workload.run(backend, sizes)
                # Finalize finished servers now, at a quiet point: mpservice's
                # finalizers join threads and can deadlock when a random GC
                # runs them inside a new thread's start-up.
                gc.collect()
                for metric, value in zip(workload.metrics, results, strict=True):
                    values.setdefault((metric.label, backend), []).append(value)
                shown = ', '.join(
                    f'{v:{m.fmt}} {m.unit}' for m, v in zip(workload.metrics, results)
                )
                print(f'round {r + 1}/{rounds}  {workload.name:<40} {backend:<9} {shown}',
                      file=sys.stderr, flush=True)
    return values


def _cell(values: list[float], metric: Metric) -> str:
    f = metric.fmt
    return f'{statistics.median(values):{f}} ({min(values):{f}}–{max(values):{f}})'


def markdown_table(values: dict[tuple[str, str], list[float]], workloads=WORKLOADS) -> str:
    base, new = 'mpservice', 'mpserver'
    lines = [
        f'| workload | {base} (median, min–max) | {new} (median, min–max) | ratio |',
        '| --- | --- | --- | --- |',
    ]
    for workload in workloads:
        for m in workload.metrics:
            old_v, new_v = values[(m.label, base)], values[(m.label, new)]
            old_med, new_med = statistics.median(old_v), statistics.median(new_v)
            ratio = new_med / old_med if m.higher_is_better else old_med / new_med
            lines.append(
                f'| {m.label} ({m.unit}) | {_cell(old_v, m)} | {_cell(new_v, m)} | {ratio:.2f}× |'
            )
    return '\n'.join(lines)


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def machine_description() -> str:
    import mpservice

    mpserver = BACKENDS['mpserver']
    mpserver_version = getattr(mpserver, '__version__', '?')
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return '\n'.join([
        f'- date: {datetime.datetime.now().astimezone().isoformat(timespec="minutes")}',
        f'- CPU: {_cpu_model()}, {os.cpu_count()} cores ({usable} usable by this process)',
        f'- Python {platform.python_version()} ({platform.python_implementation()}), '
        f'{platform.system()} {platform.release()}',
        f'- mpservice {mpservice.__version__}; '
        f'mpserver {mpserver_version} from {os.path.dirname(mpserver.__file__)}',
    ])


def settings_description(rounds: int, sizes: Sizes) -> str:
    return (
        f'{rounds} round(s), backend order alternating per round; '
        f'stream: {sizes.stream_items:,} items after a {STREAM_WARMUP_ITEMS}-item warm-up; '
        f'call: {sizes.call_count:,} calls after {sizes.call_warmup} warm-up calls. '
        'Ratio: mpserver/mpservice for throughput, mpservice/mpserver for times; '
        '> 1 means mpserver is better.'
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=None,
                        help='rounds per backend (default 3, or 2 with --quick)')
    parser.add_argument('--quick', action='store_true',
                        help='smaller sizes and fewer rounds: a ~1-minute smoke run')
    parser.add_argument('--out', metavar='PATH',
                        help='also write the table and a machine description to PATH')
    parser.add_argument('--only', metavar='TEXT',
                        help="run only the workloads whose name contains TEXT")
    args = parser.parse_args(argv)
    workloads = tuple(w for w in WORKLOADS if not args.only or args.only in w.name)
    if not workloads:
        parser.error(f'no workload name contains {args.only!r}')
    sizes = QUICK if args.quick else FULL
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 3)
    if rounds < 1:
        parser.error('--rounds must be at least 1')

    started = time.perf_counter()
    values = run_all(rounds, sizes, workloads)
    table = markdown_table(values, workloads)
    settings = settings_description(rounds, sizes)
    print(f'total benchmark time: {time.perf_counter() - started:.0f} s', file=sys.stderr)
    print(table)
    print()
    print(settings)

    if args.out:
        with open(args.out, 'w') as f:
            f.write('# mpserver vs mpservice benchmark\n\n')
            f.write(machine_description() + '\n\n')
            f.write(settings + '\n\n')
            f.write(table + '\n')


if __name__ == '__main__':
    main()
