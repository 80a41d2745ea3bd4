"""What bench.py measures: every workload, the rows it gives, their targets and plot points.

A :class:`Workload` is one measurement on a fresh server (a function of
``measurements.py`` with its arguments) and yields one value per
:class:`Metric`, a row of the table.  A metric may carry a :class:`Target`
(the goals of the issue are data here) and plot points (where its
values go in the scaling plots of ``bench_report.py``).  :data:`WORKLOADS`
is the table in its order; :data:`FULL` and :data:`QUICK` are the sizes of
a full and of a ``--quick`` run.  ``benchmarks/README.md`` says what each
row measures.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

from measurements import (
    CPU_BOUND_PROCS,
    KB,
    MB,
    call_latency,
    concurrent_calls,
    cpu_bound,
    enter_first_call,
    payload_throughput,
    stream_throughput,
)

PAYLOAD_SIZES = (100, 10 * KB, 1 * MB, 16 * MB)
ENTER_WORKERS = (1, 2, 4)


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
