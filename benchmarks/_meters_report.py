"""``meters.py``'s workloads as table rows, its runs and their run file, and its report.

:data:`WORKLOADS` lists what ``meters.py`` measures (key, row label, unit,
size, whether the 3% target applies); :class:`Run` holds one run's
per-round values; :func:`report` is the ``meters`` region of
``docs/benchmarks.md``: setup, table (medians with min–max, on/off ratio of
medians with a bootstrap interval and the per-round range), verdicts, note.
"""

from __future__ import annotations

import dataclasses
import random
import statistics

import harness

WRITE_COMMAND = 'python benchmarks/meters.py --write'
#: Stream rows must keep on/off >= this.
TARGET = 0.97
STREAM_WARMUP = 1_000
DEFAULTS = {'rounds': 7, 'repeat': 5}


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

Values = dict[tuple[str, str], list[float]]  # (workload key, variant) -> one value per round


@dataclasses.dataclass
class Run:
    values: Values = dataclasses.field(default_factory=dict)
    other: Values = dataclasses.field(default_factory=dict)  # cores other processes kept busy
    pairs: int = 0
    redone: int = 0  # pairs measured again because one side was disturbed
    kept_disturbed: int = 0  # pairs still disturbed after the last retry


def dump_run(run: Run, meta: dict) -> dict:
    """A run as JSON data (``--json``); :func:`load_run` reads it back."""
    counts = {name: getattr(run, name) for name in ('pairs', 'redone', 'kept_disturbed')}
    return {'meta': meta, 'values': harness.flatten(run.values), 'other': harness.flatten(run.other), **counts}


def load_run(data: dict) -> tuple[Run, dict]:
    values, other = harness.unflatten(data['values']), harness.unflatten(data['other'])
    return Run(values, other, data['pairs'], data['redone'], data['kept_disturbed']), data['meta']


def _cell(vs: list[float], fmt: str) -> str:
    return harness.cell(vs, fmt)


def _ratio(values: Values, key: str) -> float:
    return harness.ratio(values[(key, 'on')], values[(key, 'off')])


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
    count, usable = harness.core_counts()
    cores = [c for vs in other.values() for c in vs]
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
        f'{meta["date"]}; {harness.cpu_model()}, '
        f'{count} cores ({usable} usable), shared with other work and noisy; '
        f'Python {harness.python_version()}, {harness.system()}; '
        f'both variants built from the {meta["source"]}; {meta["rounds"]} round(s), variant order alternating '
        f'per round, every measurement in a fresh interpreter; stream cells are the median of {meta["repeat"]} timed '
        'streams '
        f'on one server after a {STREAM_WARMUP:,}-item warm-up; items: {sizes}; '
        f'{harness.load_summary(cores)}; '
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
