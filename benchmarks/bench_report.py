"""bench.py's report: the tables, the targets, one run's saved form, and its
generated regions and plots.

:class:`RunData` is one run (what ``--json`` saves and ``--from-json``
reads); :func:`print_report` prints its tables and :func:`write_outputs`
publishes it (``--write``): the PNGs in ``docs/img/`` and the ``bench`` and
``breakdown`` regions of ``docs/benchmarks.md`` and the ``bench-table``
region of ``README.md``.  Cells are medians with the min–max range over the
rounds, ratios compare medians and are > 1 when mpserver is better.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import sys

import breakdown
import harness
import report
import rss as rss_probe
from harness import DISTURBED_CORES, DOCS_PAGE, IMG_DIR, README, ROOT
from measurements import MB, STREAM_WARMUP_ITEMS
from workloads import FULL, QUICK, WORKLOADS, Metric, Sizes

#: The documented command that regenerates the tables and plots.
WRITE_COMMAND = 'python benchmarks/bench.py --rounds 5 --write'
#: Main-process VmRSS growth allowed over the second half of the RSS stream (rss.growth_mb).
RSS_FLAT_MB = 1.0
BASE, NEW = 'mpservice', 'mpserver'
Values = dict[tuple[str, str], list[float]]  # (metric label, backend) -> value per round

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


def _all_metrics(workloads) -> list[Metric]:
    return [m for w in workloads for m in w.metrics]


def _ratio(values: Values, m: Metric) -> float:
    return harness.ratio(values[(m.label, NEW)], values[(m.label, BASE)], m.higher_is_better)


def _cell(values: list[float], metric: Metric) -> str:
    return harness.cell(values, metric.fmt)


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


def machine_description() -> str:
    import mpserver
    import mpservice

    cores, usable = harness.core_counts()
    return '\n'.join(
        [
            f'- date: {harness.now()}',
            f'- CPU: {harness.cpu_model()}, {cores} cores ({usable} usable by this process)',
            f'- Python {harness.python_version()} ({platform.python_implementation()}), {harness.system()}',
            f'- mpservice {mpservice.__version__}; '
            f'mpserver {getattr(mpserver, "__version__", "?")} from {os.path.dirname(mpserver.__file__)}, '
            f'source revision {harness.git_revision()}',
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
    other_load: Values = dataclasses.field(default_factory=dict)  # see harness.OtherLoad
    rss: list[dict] = dataclasses.field(default_factory=list)
    breakdown: list[dict] = dataclasses.field(default_factory=list)
    loops: int = 0  # the ~1 ms item's loop count (harness.burn_loops); 0: not measured, or an older file

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
            f'Medians of {run.rounds} round(s) on {harness.cpu_model()} ({os.cpu_count()} cores); '
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
