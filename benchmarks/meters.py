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
   tree, as ``bench.py`` does).  Before each pair it waits (up to
   ``--quiet-wait`` seconds) for a second in which others use under 0.25
   cores, and a pair during which either side was disturbed is measured
   again (up to ``--retries`` times); the report says how many were.

Workloads (``Double``: ``call(x) -> 2 * x`` on small ints, no batching):

* stream, 1 worker: items/s of ``stream(range(200_000))`` through ``ProcessServlet(Double)``;
* stream, 2 workers: the same with ``cpus=2``;
* call one at a time: p50 latency (µs) of 20,000 ``server.call(x)``, one worker;
* stream, 3-stage pipeline: items/s of ``stream(range(100_000))`` through a
  ``SequentialServlet`` of three one-process ``ProcessServlet(Double)``.

The target (the meters issue) is stream throughput with meters on within 3%
of meters off: on/off of the medians >= 0.97 on the stream rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import io
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from collections.abc import Callable

import report as regions  # benchmarks/report.py, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOCS_PAGE = os.path.join(ROOT, 'docs', 'benchmarks.md')
OUT = os.path.join(ROOT, 'build', 'meters')
SNAPSHOT = os.path.join(OUT, 'src')
#: What the build reads, relative to the repository root.
SOURCES = ('CMakeLists.txt', 'pyproject.toml', 'cpp', 'bindings', 'python/mpserver')
#: Variant name -> the value of MPSERVER_METERS (and of _core.METERS).
VARIANTS = {'on': True, 'off': False}
#: Set in a measuring interpreter (and so in its workers) to the variant's name.
VARIANT_ENV = 'MPSERVER_METERS_BENCH'
WRITE_COMMAND = 'python benchmarks/meters.py --write'
#: Stream rows must keep on/off >= this.
TARGET = 0.97
DISTURBED_CORES = 0.25
STREAM_WARMUP = 1_000
DEFAULTS = {'rounds': 7, 'repeat': 5}
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


# --- workloads (run in the measuring interpreter) -----------------------------


@dataclasses.dataclass(frozen=True)
class Workload:
    key: str  # command-line name
    label: str  # table row
    unit: str
    higher_is_better: bool
    fmt: str
    items: int  # full-run size; --quick divides by 10
    stream: bool  # the 3% target applies


WORKLOADS = (
    Workload('stream1', 'stream, 1 worker, no batching', 'items/s', True, ',.0f', 200_000, True),
    Workload('stream2', 'stream, 2 workers, no batching', 'items/s', True, ',.0f', 200_000, True),
    Workload('call', 'call one at a time, 1 worker, p50', 'µs', False, '.1f', 20_000, False),
    Workload('pipeline', 'stream, 3-stage pipeline of 1-worker process stages', 'items/s', True, ',.0f', 100_000, True),
)
BY_KEY = {w.key: w for w in WORKLOADS}


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
            return lat[(len(lat) + 1) // 2 - 1] / 1e3  # nearest-rank p50
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


# --- building the two variants ------------------------------------------------


def _files(top: str, roots: tuple[str, ...] = SOURCES) -> dict[str, str]:
    """Relative path -> absolute path of the files under ``top``/``roots`` (no .so, .pyc, __pycache__)."""
    out = {}
    for rel in roots:
        path = os.path.join(top, rel)
        if os.path.isfile(path):
            out[rel] = path
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = [d for d in dirnames if d != '__pycache__']
            for name in filenames:
                if name.endswith(('.so', '.pyc')):
                    continue
                full = os.path.join(dirpath, name)
                out[os.path.relpath(full, top)] = full
    return out


def _same(a: str, b: str) -> bool:
    if not os.path.exists(b) or os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        return fa.read() == fb.read()


def _sync(files: dict[str, str], dest: str, roots: tuple[str, ...] = SOURCES) -> int:
    """Make ``dest`` hold exactly ``files`` (relative -> source path); rewrite
    only files whose contents differ, so that unchanged files keep their
    modification times and the build does not redo them.  Returns files written."""
    written = 0
    for rel, src in files.items():
        dst = os.path.join(dest, rel)
        if not _same(src, dst):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst)
            written += 1
    for rel in set(_files(dest, roots)) - set(files):
        os.remove(os.path.join(dest, rel))
    return written


def snapshot(commit: str | None) -> str:
    """Copy the sources into SNAPSHOT (from the working tree, or git ``commit``); return a content hash."""
    if commit is None:
        _sync(_files(ROOT), SNAPSHOT)
    else:
        archive = ['git', 'archive', '--format=tar', commit, *SOURCES]
        tar = subprocess.run(archive, cwd=ROOT, check=True, capture_output=True).stdout
        with tempfile.TemporaryDirectory() as tmp:
            with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
                tf.extractall(tmp, **({'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}))
            _sync(_files(tmp), SNAPSHOT)
    digest = hashlib.sha256()
    for rel, path in sorted(_files(SNAPSHOT).items()):
        digest.update(rel.encode() + b'\0')
        with open(path, 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()[:12]


def _tool(name: str) -> str | None:
    """A build tool from the running venv, else from PATH (None if neither has it)."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.access(beside, os.X_OK) else shutil.which(name)


def build(variant: str, jobs: int | None) -> str:
    """Configure and build one variant from SNAPSHOT; assemble and check its package; return its directory."""
    try:
        import pybind11
    except ImportError:
        raise SystemExit('pybind11 is not importable: run this with the venv python (.venv/bin/python)') from None
    cmake, ninja = _tool('cmake'), _tool('ninja')
    if cmake is None:
        raise SystemExit('cmake not found: pip install cmake ninja into the venv')
    build_dir = os.path.join(OUT, f'{variant}-cmake')
    configure = [
        cmake,
        '-S',
        SNAPSHOT,
        '-B',
        build_dir,
        '-DCMAKE_BUILD_TYPE=Release',
        '-DMPSERVER_BUILD_PYTHON=ON',
        f'-DMPSERVER_METERS={"ON" if VARIANTS[variant] else "OFF"}',
        f'-Dpybind11_DIR={pybind11.get_cmake_dir()}',
        f'-DPython_EXECUTABLE={sys.executable}',
    ]
    if ninja and not os.path.exists(os.path.join(build_dir, 'CMakeCache.txt')):
        configure += ['-G', 'Ninja', f'-DCMAKE_MAKE_PROGRAM={ninja}']
    _log(f'build {variant}: configure')
    subprocess.run(configure, check=True, stdout=subprocess.DEVNULL)
    start = time.perf_counter()
    cmd = [cmake, '--build', build_dir, '--target', '_core'] + (['-j', str(jobs)] if jobs else [])
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    _log(f'build {variant}: built in {time.perf_counter() - start:.0f} s')

    so_name = '_core' + sysconfig.get_config_var('EXT_SUFFIX')
    home = os.path.join(OUT, variant)
    package = {rel: path for rel, path in _files(SNAPSHOT).items() if rel.startswith('python/mpserver/')}
    files = {os.path.relpath(rel, 'python'): path for rel, path in package.items()}
    files[os.path.join('mpserver', so_name)] = os.path.join(build_dir, so_name)
    _sync(files, home, roots=('mpserver',))
    check = subprocess.run(
        [
            sys.executable,
            '-c',
            'import json, mpserver, mpserver._core as c; print(json.dumps([mpserver.__file__, c.METERS]))',
        ],
        env=_env(variant),
        check=True,
        capture_output=True,
        text=True,
    )
    path, meters = json.loads(check.stdout)
    _check(variant, path, meters, 'a fresh interpreter')
    return home


def _env(variant: str) -> dict[str, str]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.path.join(OUT, variant)
    env[VARIANT_ENV] = variant
    return env


def _check(variant: str, path: str, meters: bool, where: str) -> None:
    home = os.path.join(OUT, variant)
    if os.path.commonpath([os.path.abspath(path), home]) != home or meters is not VARIANTS[variant]:
        raise RuntimeError(
            f'variant {variant!r}: {where} imported mpserver from {path} with METERS={meters}, '
            f'expected {home} with METERS={VARIANTS[variant]}'
        )


# --- running ----------------------------------------------------------------


def _machine_busy_seconds() -> float:
    with open('/proc/stat') as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf('SC_CLK_TCK')


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_one(variant: str, w: Workload, items: int, repeat: int) -> tuple[float, float]:
    """One measurement in a fresh interpreter: (value, cores other processes kept busy meanwhile)."""
    wall0, busy0, own0 = time.perf_counter(), _machine_busy_seconds(), _own_cpu_seconds()
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), '--measure', w.key, '--items', str(items), '--repeat', str(repeat)],
        env=_env(variant),
        capture_output=True,
        text=True,
        timeout=900,
    )
    wall = time.perf_counter() - wall0
    other = max((_machine_busy_seconds() - busy0) - (_own_cpu_seconds() - own0), 0.0) / wall
    if proc.returncode != 0:
        raise RuntimeError(f'{w.key} on {variant} failed ({proc.returncode}):\n{proc.stderr}')
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    _check(variant, out['file'], out['meters'], 'the measuring process')
    _check(variant, out['worker_file'], out['worker_meters'], 'a worker process')
    return out['value'], other


Values = dict[tuple[str, str], list[float]]  # (workload key, variant) -> one value per round


def wait_for_quiet(limit: float, window: float = 1.0) -> None:
    """Wait, up to ``limit`` seconds, for a ``window`` in which other processes keep
    fewer than DISTURBED_CORES cores busy (someone's test run or compile has ended)."""
    deadline = time.perf_counter() + limit
    while True:
        busy0, own0 = _machine_busy_seconds(), _own_cpu_seconds()
        time.sleep(window)
        cores = ((_machine_busy_seconds() - busy0) - (_own_cpu_seconds() - own0)) / window
        if cores < DISTURBED_CORES or time.perf_counter() >= deadline:
            return


@dataclasses.dataclass
class Run:
    values: Values = dataclasses.field(default_factory=dict)
    other: Values = dataclasses.field(default_factory=dict)  # cores other processes kept busy
    pairs: int = 0
    redone: int = 0  # pairs measured again because one side was disturbed
    kept_disturbed: int = 0  # pairs still disturbed after the last retry


def dump_run(run: Run, meta: dict) -> dict:
    """A run as JSON data (``--json``); :func:`load_run` reads it back."""

    def flat(values: Values) -> dict[str, list[float]]:
        return {f'{key}/{variant}': vs for (key, variant), vs in values.items()}

    counts = {name: getattr(run, name) for name in ('pairs', 'redone', 'kept_disturbed')}
    return {'meta': meta, 'values': flat(run.values), 'other': flat(run.other), **counts}


def load_run(data: dict) -> tuple[Run, dict]:
    def nested(flat: dict[str, list[float]]) -> Values:
        return {tuple(k.split('/')): vs for k, vs in flat.items()}

    run = Run(nested(data['values']), nested(data['other']), data['pairs'], data['redone'], data['kept_disturbed'])
    return run, data['meta']


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
                wait_for_quiet(args.quiet_wait)
                pair = {}
                try:
                    for variant in order:
                        pair[variant] = value, cores = run_one(variant, w, items, args.repeat)
                        _log(
                            f'round {r + 1}/{args.rounds}  {w.label:<52} meters {variant:<3} '
                            f'{value:{w.fmt}} {w.unit}  [other processes: {cores:.2f} cores]'
                        )
                except RuntimeError as e:
                    # A shared machine: someone's checkout can hide this script from a
                    # worker for a moment.  Measure the pair again; a real bug fails every time.
                    if attempt == args.retries:
                        raise
                    _log(f'  failed ({str(e).strip().splitlines()[-1]}): measuring this pair again')
                    run.redone += 1
                    continue
                disturbed = max(cores for _, cores in pair.values()) > DISTURBED_CORES
                if not disturbed or attempt == args.retries:
                    break
                run.redone += 1
                _log('  disturbed: measuring this pair again')
            run.pairs += 1
            run.kept_disturbed += disturbed
            for variant, (value, cores) in pair.items():
                run.values.setdefault((w.key, variant), []).append(value)
                run.other.setdefault((w.key, variant), []).append(cores)
        if after_round is not None:
            after_round(run, r + 1)
    return run


# --- reporting --------------------------------------------------------------


def _cell(vs: list[float], fmt: str) -> str:
    return f'{statistics.median(vs):{fmt}} ({min(vs):{fmt}}–{max(vs):{fmt}})'


def _ratio(values: Values, key: str) -> float:
    return statistics.median(values[(key, 'on')]) / statistics.median(values[(key, 'off')])


def ratio_interval(values: Values, key: str, resamples: int = 2000) -> tuple[float, float]:
    """A 95% bootstrap interval of on/off of the medians: rounds resampled with
    replacement, the two values of a round kept together (fixed seed)."""
    on, off = values[(key, 'on')], values[(key, 'off')]
    rng = random.Random(0)
    ratios = []
    for _ in range(resamples):
        picks = [rng.randrange(len(on)) for _ in on]
        ratios.append(statistics.median(on[i] for i in picks) / statistics.median(off[i] for i in picks))
    ratios.sort()
    return ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]


def verdicts(values: Values) -> list[tuple[Workload, float, bool]]:
    """(workload, on/off of medians, met) for every measured stream row."""
    return [
        (w, _ratio(values, w.key), _ratio(values, w.key) >= TARGET)
        for w in WORKLOADS
        if w.stream and (w.key, 'on') in values
    ]


def markdown_table(values: Values) -> str:
    lines = [
        '| workload | meters on (median, min–max) | meters off (median, min–max) | on/off '
        '| on/off, 95% interval | on/off per round (min–max) | target |',
        '| --- | --- | --- | ---: | --- | --- | --- |',
    ]
    for w in WORKLOADS:
        if (w.key, 'on') not in values:
            continue
        on, off = values[(w.key, 'on')], values[(w.key, 'off')]
        paired = [a / b for a, b in zip(on, off, strict=True)]
        if w.stream:
            target = f'≥ {TARGET:.2f}: ' + ('met' if _ratio(values, w.key) >= TARGET else '**not met**')
        else:
            target = '—'
        low, high = ratio_interval(values, w.key)
        lines.append(
            f'| {w.label} ({w.unit}) | {_cell(on, w.fmt)} | {_cell(off, w.fmt)} | {_ratio(values, w.key):.3f} | '
            f'{low:.3f}–{high:.3f} | {min(paired):.3f}–{max(paired):.3f} | {target} |'
        )
    return '\n'.join(lines)


def _git(*args: str) -> str:
    try:
        return subprocess.run(['git', *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ''


def source_description(commit: str | None, digest: str) -> str:
    """What was built, as of the snapshot (call it right after :func:`snapshot`)."""
    if commit is not None:
        return f'git revision {commit[:7]} (snapshot {digest})'
    head = _git('rev-parse', '--short', 'HEAD') or 'unknown'
    dirty = _git('status', '--porcelain', '--', *SOURCES)
    return f'working tree at {head}' + (' with uncommitted changes' if dirty else '') + f' (snapshot {digest})'


def rerun_command(meta: dict) -> str:
    """WRITE_COMMAND with the sampling options of this run, where they differ from the defaults."""
    extra = [f'--{name} {meta[name]}' for name in ('rounds', 'repeat') if meta[name] != DEFAULTS[name]]
    return ' '.join([WRITE_COMMAND, *extra])


def _verdict(w: Workload, ratio: float, low: float, high: float) -> str:
    """One line of the target list: the verdict on the median, and whether the interval agrees."""
    shown = f'- {w.label}: on/off {ratio:.3f} (95% interval {low:.3f}–{high:.3f}): '
    if ratio >= TARGET:
        return shown + ('met.' if low >= TARGET else 'met at the median; the interval reaches below the target.')
    cost = f'{(1 - ratio) * 100:.1f}% slower'
    if high < TARGET:
        return shown + f'**not met**, {cost}; the whole interval is below the target.'
    return shown + f'**not met** at the median ({cost}); the interval reaches the target.'


def report(run: Run, meta: dict) -> str:
    """The generated region: setup, table, note.  ``meta``: date, source, rounds, repeat, retries, quick."""
    values, other = run.values, run.other
    usable = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    cores = [c for vs in other.values() for c in vs]
    disturbed = sum(c > DISTURBED_CORES for c in cores)
    results = verdicts(values)
    met = sum(ok for _, _, ok in results)
    verdict = '\n'.join(
        [
            f'Target: stream throughput with meters on within 3% of meters off (on/off ≥ {TARGET:.2f}), '
            f'met on {met} of {len(results)} stream rows:',
            '',
            *(_verdict(w, ratio, *ratio_interval(values, w.key)) for w, ratio, _ in results),
        ]
    )
    sizes = ', '.join(f'{w.key} {w.items // 10 if meta["quick"] else w.items:,}' for w in WORKLOADS)
    setup = (
        f'{meta["date"]}; {regions.cpu_model()}, '
        f'{os.cpu_count()} cores ({usable} usable), shared with other work and noisy; '
        f'Python {platform.python_version()}, {platform.system()} {platform.release()}; '
        f'both variants built from the {meta["source"]}; {meta["rounds"]} round(s), variant order alternating '
        f'per round, every measurement in a fresh interpreter; stream cells are the median of {meta["repeat"]} timed '
        'streams '
        f'on one server after a {STREAM_WARMUP:,}-item warm-up; items: {sizes}; '
        f'other processes kept a median {statistics.median(cores):.2f} cores busy '
        f'(max {max(cores):.2f}; {disturbed} of {len(cores)} measurements above {DISTURBED_CORES} cores); '
        f'{run.redone} pair(s) measured again (disturbed, or a measurement failed), '
        f'{run.kept_disturbed} of {run.pairs} kept disturbed '
        f'after {meta["retries"]} retries.'
    )
    note = (
        'With meters on, each worker counts every item it takes (items in, and its wait in the input ring — the '
        "push's stamp against the clock read the claim takes anyway — into a 25-bucket histogram) and every result "
        'it pushes (items out, and taken → answered into another histogram, with one clock read per push that '
        'also stamps the frames), plus a batch count and size per `gather`; the main process stamps each run of '
        'inputs it pushes with one clock read; and the server record counts each request: admitted and freed by '
        "the caller (relaxed `fetch_add`s on the record's first cache line), filed and its admitted → filed time "
        'by the collector thread (plain stores and one clock read, on the second line).  Meters off '
        '(`-DMPSERVER_METERS=OFF`, `_core.METERS` False) compiles all of that out; the layout, including the '
        "frames' stamp field, is the same.  "
        'Ratios are on/off: below 1 means slower with meters for items/s, '
        'above 1 for the p50.  Single streams on this machine move by 10–15% either way (which cores the '
        "threads land on, other tenants), so the 95% interval (rounds resampled, each round's pair kept "
        'together) says how far the median ratio itself can be trusted within this run; separate runs of the '
        'same two builds have differed by more than that (the machine drifts over tens of minutes), so a '
        'verdict within a few points of the target needs several runs.  '
        f'Re-run: `{rerun_command(meta)}` (with the venv python; `--quick --rounds 2` for a smoke run).'
    )
    return '\n\n'.join(
        [
            f'<!-- generated by benchmarks/meters.py (regenerate: {WRITE_COMMAND}); '
            'edits between the meters:begin/end markers are overwritten -->',
            f'Setup: {setup}',
            markdown_table(values),
            *([verdict] if results else []),
            note,
        ]
    )


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> None:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=Formatter)
    p.add_argument('--rounds', type=int, default=DEFAULTS['rounds'], help='rounds of every workload on both variants')
    p.add_argument('--repeat', type=int, default=DEFAULTS['repeat'], help='timed streams per stream measurement')
    p.add_argument('--retries', type=int, default=2, help='measure a disturbed pair again up to this many times')
    p.add_argument(
        '--quiet-wait', type=float, default=120, help='seconds to wait at most for a quiet machine before each pair'
    )
    p.add_argument('--quick', action='store_true', help='a tenth of the items (smoke run)')
    p.add_argument('--only', action='append', choices=list(BY_KEY), help='only this workload (repeatable)')
    p.add_argument('--rev', help='build this git revision instead of the working tree')
    p.add_argument('--jobs', type=int, help='parallel build jobs (None: the build tool decides)')
    p.add_argument('--write', action='store_true', help='rewrite the meters region of docs/benchmarks.md')
    p.add_argument('--json', metavar='PATH', help='also save the run (per-round values, settings) to PATH')
    p.add_argument(
        '--from-json', metavar='PATH', help='report (and with --write publish) a saved run; no build, no run'
    )
    p.add_argument('--measure', choices=list(BY_KEY), help=argparse.SUPPRESS)  # the measuring interpreter
    p.add_argument('--items', type=int, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.measure:
        if not os.environ.get(VARIANT_ENV):
            raise SystemExit("--measure is run by meters.py itself, in a variant's environment")
        measure_main(args.measure, args.items, args.repeat)
        return
    if args.write and (args.only or args.quick):
        raise SystemExit('--write publishes the full run: it refuses --only and --quick')

    if args.from_json:
        with open(args.from_json) as f:
            run, meta = load_run(json.load(f))
    else:
        commit = None
        if args.rev:
            commit = _git('rev-parse', '--verify', '--quiet', f'{args.rev}^{{commit}}')
            if not commit:
                raise SystemExit(f'--rev {args.rev}: no such commit')
        digest = snapshot(commit)
        meta = {
            'date': datetime.datetime.now().astimezone().isoformat(timespec='minutes'),
            'source': source_description(commit, digest),
            **{name: getattr(args, name) for name in ('rounds', 'repeat', 'retries', 'quick')},
        }
        for variant in VARIANTS:
            build(variant, args.jobs)

        def save(run: Run, rounds_done: int) -> None:
            tmp = args.json + '.tmp'
            with open(tmp, 'w') as f:
                json.dump(dump_run(run, {**meta, 'rounds': rounds_done}), f, indent=1)
            os.replace(tmp, args.json)

        run = run_all(args, save if args.json else None)
    text = report(run, meta)
    print(text)
    if args.write:
        regions.replace_region(DOCS_PAGE, 'meters', text, required=True)
        _log(f'wrote the meters region of {DOCS_PAGE}')
    if any(not ok for _, _, ok in verdicts(run.values)):
        _log('target not met on some stream row (see the table)')


if __name__ == '__main__':
    main()
