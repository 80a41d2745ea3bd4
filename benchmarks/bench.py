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

Around every measurement, ``harness.OtherLoad`` records how many cores
other processes on the machine kept busy (``/proc/stat`` minus this process
tree), shown in the progress lines and summarised in the report, so that a
run disturbed by someone else's compile or test is visible as such.

This file is the entry point: options, the round loop and the run.  The
workloads are in ``workloads.py`` (what: rows, sizes, targets) and
``measurements.py`` (how), the report in ``bench_report.py``, and what every
benchmark script shares (load accounting, the ~1 ms item, run files, cells,
ratios, provenance) in ``harness.py``.

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
import gc
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable

import bench_report
import breakdown
import harness
import rss as rss_probe
from _bench_workers import BACKENDS
from bench_report import BASE, NEW, RunData, Values
from workloads import FULL, QUICK, WORKLOADS, Sizes

RSS_SCRIPT = os.path.join(harness.HERE, 'rss.py')
PEERS_SCRIPT = os.path.join(harness.HERE, 'peers.py')


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
                with harness.OtherLoad() as load:
                    results = workload.run(backend, sizes)
                    # Finalize finished servers now, at a quiet point: mpservice's
                    # finalizers join threads and can deadlock when a random GC
                    # runs them inside a new thread's start-up.
                    gc.collect()
                other.setdefault((workload.name, backend), []).append(load.cores)
                for metric, value in zip(workload.metrics, results, strict=True):
                    values.setdefault((metric.label, backend), []).append(value)
                shown = ', '.join(f'{v:{m.fmt}} {m.unit}' for m, v in zip(workload.metrics, results, strict=True))
                harness.log(
                    f'round {r + 1}/{rounds}  {workload.name:<48} {backend:<9} {shown}  {harness.load_note(load.cores)}'
                )
    return values, other


def run_rss(backends: Iterable[str]) -> list[dict]:
    """Run ``rss.py`` in a fresh interpreter per backend; return its results."""
    results = []
    for backend in backends:
        harness.log(f'rss: streaming 1,000,000 items on {backend} ...')
        proc = subprocess.run(
            [sys.executable, RSS_SCRIPT, '--backend', backend, '--json'], capture_output=True, text=True, timeout=900
        )
        if proc.returncode != 0:
            raise RuntimeError(f'rss.py --backend {backend} failed ({proc.returncode}):\n{proc.stderr}')
        results.append(json.loads(proc.stdout))
    return results


def measure(
    argv: list[str], rounds: int, quick: bool, workloads, *, full: bool, rss_backends: list[str], rss: bool
) -> RunData:
    """Run the workloads; with ``full`` also the breakdown, with ``rss`` the RSS probe."""
    started = time.perf_counter()
    command = shlex.join(['python', 'benchmarks/bench.py', *argv])
    values, other_load = run_all(rounds, QUICK if quick else FULL, workloads)
    run = RunData(command, rounds, quick, 0.0, bench_report.machine_description(), values, other_load)
    if harness.burn_loops.cache_info().currsize:  # the CPU-bound workload ran
        run.loops = harness.burn_loops()
    if rss:
        run.rss = run_rss(rss_backends)
    if full:
        harness.log('breakdown: per-item costs on mpserver ...')
        run.breakdown = [dataclasses.asdict(r) for r in breakdown.measure(quick)]
    run.seconds = time.perf_counter() - started
    harness.log(f'total benchmark time: {run.seconds:.0f} s')
    return run


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    harness.add_run_options(
        parser,
        rounds=3,
        quick_rounds=2,
        quick='smaller sizes: a smoke run (under a minute with --rounds 1)',
        write='also run the RSS and breakdown measurements, draw the plots into docs/img/ and rewrite the '
        'generated regions of docs/benchmarks.md (and README.md, if it has bench-table markers)',
    )
    parser.add_argument('--out', metavar='PATH', help='also write the tables and a machine description to PATH')
    parser.add_argument('--only', metavar='TEXT', help='run only the workloads whose name contains TEXT')
    parser.add_argument('--no-peers', action='store_true', help='with --write: do not run peers.py --write')
    parser.add_argument(
        '--rss', action='store_true', help='only measure the main-process RSS over 1,000,000 streamed items'
    )
    parser.add_argument(
        '--rss-mpservice', action='store_true', help='measure the RSS on mpservice too (about 40 s more)'
    )
    args = harness.parse_run_options(parser, argv)
    if args.write and args.only:
        parser.error('--write publishes a full run: it cannot be combined with --only')
    workloads = tuple(w for w in WORKLOADS if not args.only or args.only in w.name)
    if not workloads:
        parser.error(f'no workload name contains {args.only!r}')
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
        run = RunData.from_json(harness.load_json(args.from_json))
    else:
        run = measure(
            argv,
            args.rounds,
            args.quick,
            workloads,
            full=args.write,
            rss_backends=rss_backends,
            rss=args.write or args.rss_mpservice,
        )
    if args.json:
        harness.save_json(args.json, run.to_json())
    bench_report.print_report(run, workloads)
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write('# mpserver vs mpservice benchmark\n\n')
            f.write(bench_report.render_docs_region(run, [], workloads) + '\n')
    if args.write:
        bench_report.write_outputs(run, plots=not args.no_plots)
        if not args.no_peers:
            harness.log('peers: mpserver next to the standard library (peers.py --write) ...')
            extra = (['--quick'] if args.quick else []) + (['--no-plots'] if args.no_plots else [])
            # The same ~1 ms item as this run's CPU-bound rows.
            env = dict(os.environ, **({harness.LOOPS_ENV: str(run.loops)} if run.loops else {}))
            subprocess.run([sys.executable, PEERS_SCRIPT, '--write', *extra], check=True, env=env)


if __name__ == '__main__':
    main()
