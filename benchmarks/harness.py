"""What every benchmark script shares, so that it is written once.

* Load accounting: :class:`OtherLoad` (how many cores *other* processes kept
  busy during a measurement), :func:`wait_for_quiet`, the ``/proc/PID/stat``
  readers, :data:`DISTURBED_CORES` and the notes the scripts print.
* The ~1 ms item: :func:`burn`, the one busy-work function, and
  :func:`burn_loops`, its one calibration.
* Run files and options: :func:`add_run_options` / :func:`parse_run_options`
  (``--rounds``, ``--quick``, ``--write``, ``--no-plots``, ``--json``,
  ``--from-json``), :func:`save_json` (atomic) and :func:`load_json`.
* Cells and ratios: :func:`cell` (median with the min–max range),
  :func:`ratio` (of medians), :func:`paired_ratio` (median of per-round ratios).
* Provenance: :func:`now`, :func:`cpu_model`, :func:`core_counts`,
  :func:`python_version`, :func:`system`, :func:`git_revision`, :func:`dist_version`.

Standard library only: worker processes import it for :func:`burn` without
pulling in a backend, numpy or matplotlib.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOCS_PAGE = os.path.join(ROOT, 'docs', 'benchmarks.md')
IMG_DIR = os.path.join(ROOT, 'docs', 'img')
README = os.path.join(ROOT, 'README.md')


def log(msg: str) -> None:
    """A progress line, on stderr (the tables go to stdout)."""
    print(msg, file=sys.stderr, flush=True)


# --- load accounting ------------------------------------------------------------

TICKS = os.sysconf('SC_CLK_TCK')
#: A measurement during which other processes kept more than this many cores busy is listed as disturbed.
DISTURBED_CORES = 0.25


def machine_busy_seconds() -> float:
    """CPU-seconds every process on the machine has used (and the hypervisor has stolen) since boot."""
    with open('/proc/stat') as f:
        user, nice, system_, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    return (user + nice + system_ + irq + softirq + steal) / TICKS


def own_cpu_seconds() -> float:
    """CPU-seconds of this process and of its children that have been reaped."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3, the state, onwards), or None."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(')') + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one live process (0 if it is gone)."""
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS if fields else 0.0


def alive(pid: int) -> bool:
    fields = proc_stat(pid)
    return fields is not None and fields[0] not in ('Z', 'X')


def _parents() -> dict[int, list[int]]:
    """Parent pid -> its children's pids, for every process in /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir('/proc'):
        if name.isdigit():
            fields = proc_stat(int(name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(name))
    return children


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, from /proc."""
    children = _parents()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def children_cpu_seconds(parent: int | None = None) -> float:
    """utime + stime of the live child processes of ``parent`` (default: this process)."""
    return sum(cpu_seconds(pid) for pid in _parents().get(os.getpid() if parent is None else parent, ()))


def comm(pid: int) -> str:
    """A process's command name, or '' if it is gone."""
    try:
        with open(f'/proc/{pid}/comm') as f:
            return f.read().strip()
    except OSError:
        return ''


class OtherLoad:
    """How many cores other processes kept busy during a ``with`` block.

    Machine-wide busy time from /proc/stat minus this process's own CPU time
    and that of its reaped children, and minus ``ours()`` (the CPU seconds of
    live processes the caller accounts for itself, such as a server tree it
    started), divided by the block's wall time.  Resolution: one clock tick
    (10 ms) of CPU time.  After the block: ``cores``, ``wall`` (seconds) and
    ``ours`` (what ``ours()`` grew by, CPU seconds).
    """

    cores: float = 0.0
    wall: float = 0.0
    ours: float = 0.0

    def __init__(self, ours: Callable[[], float] | None = None) -> None:
        self._read_ours = ours or (lambda: 0.0)

    def __enter__(self) -> OtherLoad:
        self._start = (time.perf_counter(), machine_busy_seconds(), own_cpu_seconds(), self._read_ours())
        return self

    def __exit__(self, *exc) -> None:
        wall0, busy0, own0, ours0 = self._start
        self.wall = time.perf_counter() - wall0
        self.ours = self._read_ours() - ours0
        other = (machine_busy_seconds() - busy0) - (own_cpu_seconds() - own0) - self.ours
        self.cores = max(other, 0.0) / self.wall if self.wall > 0 else 0.0


def wait_for_quiet(limit: float, window: float = 1.0) -> None:
    """Wait, up to ``limit`` seconds, for a ``window`` in which other processes keep
    fewer than DISTURBED_CORES cores busy (someone's test run or compile has ended)."""
    deadline = time.perf_counter() + limit
    while True:
        with OtherLoad() as load:
            time.sleep(window)
        if load.cores < DISTURBED_CORES or time.perf_counter() >= deadline:
            return


def load_note(cores: float) -> str:
    """The end of a progress line."""
    return f'[other processes: {cores:.2f} cores]'


def load_summary(cores: Sequence[float]) -> str:
    """One clause for a setup line: how busy other processes kept the machine over all measurements."""
    if not cores:
        return 'no measurements'
    disturbed = sum(c > DISTURBED_CORES for c in cores)
    return (
        f'other processes kept a median {statistics.median(cores):.2f} cores busy (max {max(cores):.2f}; '
        f'{disturbed} of {len(cores)} measurements above {DISTURBED_CORES} cores)'
    )


# --- the ~1 ms item -------------------------------------------------------------

#: What one busy-work item costs, by calibration.
ITEM_SECONDS = 1e-3
#: Set to a loop count to skip the calibration and use that count (a script passes
#: its own to the scripts and servers it starts, so that they all do the same work).
LOOPS_ENV = 'MPSERVER_BENCH_LOOPS'


def burn(loops: int) -> int:
    """Pure-Python busy work: ``loops`` additions in a ``for`` loop."""
    total = 0
    for i in range(loops):
        total += i
    return total


def seconds_per_burn(loops: int, calls: int = 20, repeat: int = 7) -> float:
    """Seconds one ``burn(loops)`` takes in this process: the fastest of ``repeat`` batches of ``calls``.

    The fastest batch is the cost of the work itself; slower ones were
    interrupted by other processes.
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
    """The loop count of the ~1 ms item, calibrated once per process.

    Starting from 10,000 loops, three times: time ``burn`` with
    :func:`seconds_per_burn` (the fastest of 7 batches of 20 calls) and scale
    the count so that one call takes ITEM_SECONDS; at least 1,000 loops.  The
    calibration runs in the main process of the script, before any server
    starts; workers get the count, not a duration, so every backend and peer
    does the same work.  With ``$MPSERVER_BENCH_LOOPS`` set, that count is
    used instead.
    """
    if os.environ.get(LOOPS_ENV):
        return int(os.environ[LOOPS_ENV])
    loops = 10_000
    for _ in range(3):
        loops = max(1_000, round(loops * ITEM_SECONDS / seconds_per_burn(loops)))
    return loops


# --- cells and ratios -------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float('nan')


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values, ``q`` in (0, 100]."""
    rank = math.ceil(q / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


def cell(values: Sequence[float] | None, fmt: str, *, range_of_one: bool = True) -> str:
    """'median (min–max)' of per-round values; '—' for none; just the value for one
    round when ``range_of_one`` is False."""
    if not values:
        return '—'
    if len(values) == 1 and not range_of_one:
        return f'{values[0]:{fmt}}'
    return f'{statistics.median(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})'


def ratio(new: Sequence[float], old: Sequence[float], higher_is_better: bool = True) -> float:
    """Ratio of medians, oriented so that > 1 means ``new`` is better."""
    a, b = statistics.median(new), statistics.median(old)
    return a / b if higher_is_better else b / a


def paired_ratio(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The median of the rounds' ratios x / y (each round's pair ran close together)."""
    return median([x / y for x, y in zip(xs, ys, strict=True)])


# --- run files and options ----------------------------------------------------------


def save_json(path: str, data) -> None:
    """Write ``data`` to ``path`` as JSON, atomically (through ``path.tmp``)."""
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def load_json(path: str):
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def flatten(values: dict[tuple, list[float]]) -> dict[str, list[float]]:
    """``{(a, b, ...): v}`` as ``{'a/b/...': v}``, for a run file."""
    return {'/'.join(map(str, key)): v for key, v in values.items()}


def unflatten(flat: dict[str, list[float]], *types: type) -> dict[tuple, list[float]]:
    """The inverse of :func:`flatten`; ``types`` converts the key's parts (default: all str)."""
    out = {}
    for key, v in flat.items():
        parts = key.split('/')
        out[tuple(t(p) for t, p in zip(types or (str,) * len(parts), parts, strict=True))] = v
    return out


def add_run_options(
    parser: argparse.ArgumentParser,
    *,
    rounds: int,
    write: str | None,
    quick: str | None = None,
    quick_rounds: int | None = None,
    plots: bool = True,
) -> None:
    """The options the benchmark scripts share: ``--rounds`` (default ``rounds``, or
    ``quick_rounds`` with ``--quick``), ``--quick`` (if given its help text), and unless
    ``write`` is None, ``--write`` (with that help text), ``--no-plots`` (if ``plots``),
    ``--json`` and ``--from-json``.  Parse with :func:`parse_run_options`."""
    if quick_rounds is None:
        parser.add_argument('--rounds', type=int, default=rounds, help='rounds of every measurement')
    else:
        help_ = f'rounds of every measurement (default {rounds}, or {quick_rounds} with --quick)'
        parser.add_argument('--rounds', type=int, default=None, help=help_)
        parser.set_defaults(_rounds=(rounds, quick_rounds))
    if quick is not None:
        parser.add_argument('--quick', action='store_true', help=quick)
    if write is None:
        return
    parser.add_argument('--write', action='store_true', help=write)
    if plots:
        parser.add_argument('--no-plots', action='store_true', help='with --write: no PNGs (no matplotlib needed)')
    parser.add_argument('--json', metavar='PATH', help='also save the run (per-round values, settings) to PATH')
    parser.add_argument(
        '--from-json', metavar='PATH', help='measure nothing: report (and with --write publish) a run saved by --json'
    )


def parse_run_options(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse, fill in the default ``--rounds`` and check the options of :func:`add_run_options`:
    at least one round, and matplotlib for ``--write`` unless ``--no-plots``."""
    args = parser.parse_args(argv)
    if args.rounds is None:
        full, quick = args._rounds
        args.rounds = quick if getattr(args, 'quick', False) else full
    if args.rounds < 1:
        parser.error('--rounds must be at least 1')
    if getattr(args, 'write', False) and not getattr(args, 'no_plots', True):
        import report

        try:
            report.require_matplotlib()
        except ImportError as e:
            parser.error(str(e))
    return args


# --- provenance -------------------------------------------------------------------


def now() -> str:
    """The local date and time, to the minute, with its UTC offset."""
    return datetime.datetime.now().astimezone().isoformat(timespec='minutes')


def cpu_model() -> str:
    """The CPU's model name."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def core_counts() -> tuple[int, int]:
    """(cores of the machine, cores this process may run on)."""
    count = os.cpu_count() or 1
    try:
        return count, len(os.sched_getaffinity(0))
    except AttributeError:
        return count, count


def python_version() -> str:
    return platform.python_version()


def system() -> str:
    """The operating system and its release: 'Linux 6.1.0'."""
    return f'{platform.system()} {platform.release()}'


def git(*args: str) -> str:
    """The output of a git command in the repository, or '' if it fails."""
    try:
        return subprocess.run(['git', *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ''


def git_revision(*paths: str) -> str:
    """The short revision of HEAD, '(with uncommitted changes)' to tracked files (under
    ``paths``, if given); 'unknown' outside a git checkout."""
    rev = git('rev-parse', '--short', 'HEAD')
    if not rev:
        return 'unknown'
    dirty = git('status', '--porcelain', '--untracked-files=no', *(['--', *paths] if paths else []))
    return f'{rev} (with uncommitted changes)' if dirty else rev


def dist_version(dist: str) -> str:
    """The installed version of a distribution, or 'not installed'."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return 'not installed'
