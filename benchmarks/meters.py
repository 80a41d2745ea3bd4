"""What counting costs: mpserver with meters on against the same code with meters compiled out.

    python benchmarks/meters.py                  # build both variants if needed, measure, print the table
    python benchmarks/meters.py --write          # the same, and rewrite the meters region of docs/benchmarks.md
    python benchmarks/meters.py --quick --rounds 2   # smoke run: small sizes
    python benchmarks/meters.py --rev HEAD --json run.json   # build a commit, save the run
    python benchmarks/meters.py --from-json run.json --write # publish a saved run

Run it with the virtual environment's interpreter (``.venv/bin/python``): the
builds need CMake, pybind11 and boost-headers from it.

Method
------

1. **Two builds of one source tree.**  The sources the build uses (``cpp/``,
   ``bindings/``, ``python/mpserver/``, ``CMakeLists.txt``, ``pyproject.toml``)
   are copied once into ``build/meters/src`` (only files whose contents
   changed are rewritten, so an unchanged tree rebuilds nothing), so both
   variants are built from the same snapshot even while the working tree is
   being edited (``--rev REV`` builds a git revision instead).  CMake then
   configures two build directories from it, ``-DMPSERVER_METERS=ON`` and
   ``=OFF`` (OFF compiles every counter update and the per-push clock read
   out; the layout stays), and each variant is assembled as a package copy,
   ``build/meters/{on,off}/mpserver/`` (the Python files plus that build's
   ``_core``).  Ninja rebuilds only what changed.
2. **Every measurement in a fresh interpreter** started by this script with
   ``PYTHONPATH`` set to the variant's directory and nothing else; worker
   processes inherit it.  Each measurement checks that it ran the variant it
   claims: ``mpserver.__file__`` lies in the variant's directory and
   ``_core.METERS`` is what the variant says, both in the measuring process
   and, through a ``Where`` worker, in a worker process.
3. **Alternating rounds.**  Each round runs every workload on both variants
   back to back; which variant goes first alternates between rounds, so slow
   drifts of a shared machine hit both alike.  A stream measurement times
   ``--repeat`` streams on one server (after a warm-up stream) and reports
   their median.  The table shows the median over rounds with the min-max
   range, the ratio on/off of the medians, and the range of the per-round
   ratios (the two variants of one round ran next to each other).
4. **Quiet pairs.**  Around every measurement the script records how many
   cores *other* processes kept busy (``/proc/stat`` minus this process
   tree: ``harness.OtherLoad``, as in every benchmark script).  Before each
   pair it waits (up to ``--quiet-wait`` seconds) for a second in which
   others use under 0.25 cores, and a pair during which either side was
   disturbed is measured again (up to ``--retries`` times); the report says
   how many were.

Workloads (``Double``: ``call(x) -> 2 * x`` on small ints, no batching):

* stream, 1 worker: items/s of ``stream(range(200_000))`` through ``ProcessServlet(Double)``;
* stream, 2 workers: the same with ``cpus=2``;
* call one at a time: p50 latency (µs) of 20,000 ``server.call(x)``, one worker;
* stream, 3-stage pipeline: items/s of ``stream(range(100_000))`` through a
  ``SequentialServlet`` of three one-process ``ProcessServlet(Double)``.

The target (the meters issue) is stream throughput with meters on within 3%
of meters off: on/off of the medians >= 0.97 on the stream rows.

This file measures; the builds are in ``_meters_build.py``, the rows, run
file and report in ``_meters_report.py``, and what every benchmark script
shares in ``harness.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import harness
import report as report_module
from _meters_build import VARIANT_ENV, VARIANTS, build, check_variant, snapshot, source_description, variant_env
from _meters_report import (
    BY_KEY,
    DEFAULTS,
    STREAM_WARMUP,
    WORKLOADS,
    Run,
    Workload,
    dump_run,
    load_run,
    report,
    verdicts,
)
from harness import DISTURBED_CORES, DOCS_PAGE, log

CALL_WARMUP = 200


# --- the workers (module level: worker processes re-import this script) ------

if os.environ.get(VARIANT_ENV):
    import mpserver

    class Double(mpserver.Worker):
        def call(self, x):
            return x * 2

    class Where(mpserver.Worker):
        """Says which mpserver this worker process imported, and whether it counts."""

        def call(self, x):
            from mpserver import _core

            return mpserver.__file__, bool(_core.METERS)


# --- measuring (in the measuring interpreter) --------------------------------


def _servlet(key: str):
    if key == 'stream2':
        return mpserver.ProcessServlet(Double, cpus=2)
    if key == 'pipeline':
        return mpserver.SequentialServlet(*(mpserver.ProcessServlet(Double) for _ in range(3)))
    return mpserver.ProcessServlet(Double)


def _timed_stream(server, n: int) -> float:
    start = time.perf_counter()
    count = 0
    for _ in server.stream(range(n)):
        count += 1
    elapsed = time.perf_counter() - start
    if count != n:
        raise RuntimeError(f'stream returned {count} results for {n} items')
    return n / elapsed


def measure(key: str, items: int, repeat: int) -> float:
    """One measurement of workload ``key`` on a fresh server."""
    with mpserver.Server(_servlet(key)) as server:
        if key == 'call':
            for i in range(CALL_WARMUP):
                server.call(i % 100)
            lat = []
            clock = time.perf_counter_ns
            for i in range(items):
                start = clock()
                server.call(i % 100)
                lat.append(clock() - start)
            lat.sort()
            return harness.percentile(lat, 50) / 1e3
        _timed_stream(server, STREAM_WARMUP)
        return statistics.median(_timed_stream(server, items) for _ in range(repeat))


def measure_main(key: str, items: int, repeat: int) -> None:
    """The measuring interpreter: measure, check the variant, print one JSON line."""
    from mpserver import _core

    value = measure(key, items, repeat)
    with mpserver.Server(mpserver.ProcessServlet(Where)) as server:
        worker_file, worker_meters = server.call(0)
    print(
        json.dumps(
            {
                'value': value,
                'file': mpserver.__file__,
                'meters': bool(_core.METERS),
                'worker_file': worker_file,
                'worker_meters': worker_meters,
            }
        )
    )


# --- running ----------------------------------------------------------------


def run_one(variant: str, w: Workload, items: int, repeat: int) -> tuple[float, float]:
    """One measurement in a fresh interpreter: (value, cores other processes kept busy meanwhile)."""
    with harness.OtherLoad() as load:
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), '--measure', w.key, '--items', str(items)]
            + ['--repeat', str(repeat)],
            env=variant_env(variant),
            capture_output=True,
            text=True,
            timeout=900,
        )
    if proc.returncode != 0:
        raise RuntimeError(f'{w.key} on {variant} failed ({proc.returncode}):\n{proc.stderr}')
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    check_variant(variant, out['file'], out['meters'], 'the measuring process')
    check_variant(variant, out['worker_file'], out['worker_meters'], 'a worker process')
    return out['value'], load.cores


def run_all(args: argparse.Namespace, after_round: Callable[[Run, int], None] | None = None) -> Run:
    """Every round: every workload on both variants back to back, in alternating order.

    Before each pair the script waits (up to ``--quiet-wait`` s) for the
    machine to be quiet; a pair during which other processes kept more than
    DISTURBED_CORES cores busy on either side is measured again (up to
    ``--retries`` times), so that both values of a round come from one quiet
    stretch.  ``after_round(run, rounds_done)`` runs after each round (``--json``
    saves there, so that an interrupted run keeps its complete rounds)."""
    run = Run()
    names = list(VARIANTS)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for w in WORKLOADS:
            if args.only and w.key not in args.only:
                continue
            items = w.items // 10 if args.quick else w.items
            for attempt in range(args.retries + 1):
                harness.wait_for_quiet(args.quiet_wait)
                pair = {}
                try:
                    for variant in order:
                        pair[variant] = value, cores = run_one(variant, w, items, args.repeat)
                        log(
                            f'round {r + 1}/{args.rounds}  {w.label:<52} meters {variant:<3} '
                            f'{value:{w.fmt}} {w.unit}  [other processes: {cores:.2f} cores]'
                        )
                except RuntimeError as e:
                    # A shared machine: someone's checkout can hide this script from a
                    # worker for a moment.  Measure the pair again; a real bug fails every time.
                    if attempt == args.retries:
                        raise
                    log(f'  failed ({str(e).strip().splitlines()[-1]}): measuring this pair again')
                    run.redone += 1
                    continue
                disturbed = max(cores for _, cores in pair.values()) > DISTURBED_CORES
                if not disturbed or attempt == args.retries:
                    break
                run.redone += 1
                log('  disturbed: measuring this pair again')
            run.pairs += 1
            run.kept_disturbed += disturbed
            for variant, (value, cores) in pair.items():
                run.values.setdefault((w.key, variant), []).append(value)
                run.other.setdefault((w.key, variant), []).append(cores)
        if after_round is not None:
            after_round(run, r + 1)
    return run


def main() -> None:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=Formatter)
    harness.add_run_options(
        p,
        rounds=DEFAULTS['rounds'],
        quick='a tenth of the items (smoke run)',
        write='rewrite the meters region of docs/benchmarks.md',
        plots=False,
    )
    p.add_argument('--repeat', type=int, default=DEFAULTS['repeat'], help='timed streams per stream measurement')
    p.add_argument('--retries', type=int, default=2, help='measure a disturbed pair again up to this many times')
    p.add_argument(
        '--quiet-wait', type=float, default=120, help='seconds to wait at most for a quiet machine before each pair'
    )
    p.add_argument('--only', action='append', choices=list(BY_KEY), help='only this workload (repeatable)')
    p.add_argument('--rev', help='build this git revision instead of the working tree')
    p.add_argument('--jobs', type=int, help='parallel build jobs (None: the build tool decides)')
    p.add_argument('--measure', choices=list(BY_KEY), help=argparse.SUPPRESS)  # the measuring interpreter
    p.add_argument('--items', type=int, help=argparse.SUPPRESS)
    args = harness.parse_run_options(p)

    if args.measure:
        if not os.environ.get(VARIANT_ENV):
            raise SystemExit("--measure is run by meters.py itself, in a variant's environment")
        measure_main(args.measure, args.items, args.repeat)
        return
    if args.write and (args.only or args.quick):
        raise SystemExit('--write publishes the full run: it refuses --only and --quick')

    if args.from_json:
        run, meta = load_run(harness.load_json(args.from_json))
    else:
        commit = None
        if args.rev:
            commit = harness.git('rev-parse', '--verify', '--quiet', f'{args.rev}^{{commit}}')
            if not commit:
                raise SystemExit(f'--rev {args.rev}: no such commit')
        digest = snapshot(commit)
        meta = {
            'date': harness.now(),
            'source': source_description(commit, digest),
            **{name: getattr(args, name) for name in ('rounds', 'repeat', 'retries', 'quick')},
        }
        for variant in VARIANTS:
            build(variant, args.jobs)

        def save(run: Run, rounds_done: int) -> None:
            harness.save_json(args.json, dump_run(run, {**meta, 'rounds': rounds_done}))

        run = run_all(args, save if args.json else None)
    text = report(run, meta)
    print(text)
    if args.write:
        report_module.replace_region(DOCS_PAGE, 'meters', text, required=True)
        log(f'wrote the meters region of {DOCS_PAGE}')
    if any(not ok for _, _, ok in verdicts(run.values)):
        log('target not met on some stream row (see the table)')


if __name__ == '__main__':
    main()
