"""``serving.py``'s runs and report: the per-round values, their run file,
the tables and targets, the plots, and the ``http`` region of
``docs/benchmarks.md``.

Cells are medians over rounds with the min–max range (a single value for one
round); ratios compare medians of peers measured in the same run.
"""

from __future__ import annotations

import dataclasses
import os
import statistics

import harness
import report as regions
from _http_peers import BODY, BY_KEY, CONNECTIONS, WARMUP_CONNECTIONS, WARMUP_SECONDS
from harness import DOCS_PAGE

from benchmarks import _http_models as models

REGION = 'http'
WRITE_COMMAND = 'python benchmarks/serving.py --write'
DEFAULTS = {'rounds': 3, 'duration': 5.0}
MODEL_LABELS = {'trivial': 'Trivial model (body echoed, 1 worker)', 'cpu': '~1 ms CPU model (1 worker per core)'}
#: Measured per (model, connections, peer), one value per round.
METRICS = ('rps', 'p50_ms', 'p99_ms', 'front_cpu', 'tree_cpu', 'other_cores', 'errors', 'service_ms', 'capacity')
Values = dict[tuple[str, int, str, str], list[float]]  # (model, connections, peer, metric) -> per round


@dataclasses.dataclass
class Run:
    values: Values = dataclasses.field(default_factory=dict)
    missing: dict[str, str] = dataclasses.field(default_factory=dict)  # peer -> why it has no values


def dump_run(run: Run, meta: dict) -> dict:
    return {'meta': meta, 'values': harness.flatten(run.values), 'missing': run.missing}


def load_run(data: dict) -> tuple[Run, dict]:
    return Run(harness.unflatten(data['values'], str, int, str, str), dict(data['missing'])), data['meta']


# --- reporting -----------------------------------------------------------------------


def _median(run: Run, model: str, connections: int, peer: str, metric: str) -> float | None:
    vs = run.values.get((model, connections, peer, metric))
    return statistics.median(vs) if vs else None


def _cell(vs: list[float] | None, fmt: str) -> str:
    return harness.cell(vs, fmt, range_of_one=False)


def results_table(run: Run, model: str, peers: list[str]) -> str:
    cpu = model == 'cpu'
    head = '| connections | peer | requests/s | p50 ms | p99 ms | front process CPU (cores) |'
    rule = '| ---: | --- | --- | --- | --- | --- |'
    if cpu:
        head += ' service ms | capacity fraction |'
        rule += ' --- | --- |'
    lines = [head, rule]
    for connections in CONNECTIONS:
        for key in peers:

            def get(metric: str, connections: int = connections, key: str = key) -> list[float] | None:
                return run.values.get((model, connections, key, metric))

            if key in run.missing and not get('rps'):
                cells = ['missing (see the note)'] + ['—'] * (3 + 2 * cpu)
            else:
                errors = sum(get('errors') or [])
                rps = _cell(get('rps'), ',.0f') + (f' ({errors:.0f} errors)' if errors else '')
                cells = [rps, _cell(get('p50_ms'), '.2f'), _cell(get('p99_ms'), '.2f'), _cell(get('front_cpu'), '.2f')]
                if cpu:
                    cells += [_cell(get('service_ms'), '.3f'), _cell(get('capacity'), '.3f')]
            lines.append(f'| {connections} | {BY_KEY[key].label} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


@dataclasses.dataclass(frozen=True)
class Target:
    label: str
    row: str
    goal: float
    shown: str  # how the measured value reads: '{:.2f}×'

    def measure(self, run: Run) -> tuple[float | None, str]:
        """The measured value (None if a peer is missing) and which peer is missing."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class RatioTarget(Target):
    model: str = 'trivial'
    connections: int = 32
    metric: str = 'rps'
    better: str = 'native'
    than: str = 'mosec'
    lower_is_better: bool = False

    def measure(self, run: Run) -> tuple[float | None, str]:
        a = _median(run, self.model, self.connections, self.better, self.metric)
        b = _median(run, self.model, self.connections, self.than, self.metric)
        if a is None or b is None:
            return None, self.better if a is None else self.than
        return (b / a if self.lower_is_better else a / b), ''


@dataclasses.dataclass(frozen=True)
class ValueTarget(Target):
    model: str = 'cpu'
    connections: int = 32
    metric: str = 'capacity'
    peer: str = 'native'

    def measure(self, run: Run) -> tuple[float | None, str]:
        v = _median(run, self.model, self.connections, self.peer, self.metric)
        return v, '' if v is not None else self.peer


TARGETS = (
    RatioTarget('native front ≥ 2× mosec, requests/s', 'trivial, 32 connections', 2.0, '{:.2f}×', than='mosec'),
    RatioTarget(
        'native front ≥ 5× mpservice + uvicorn, requests/s',
        'trivial, 32 connections',
        5.0,
        '{:.2f}×',
        than='mpservice-asgi',
    ),
    RatioTarget(
        "native front's p99 ≤ mosec's (mosec p99 / native p99 ≥ 1)",
        'trivial, 32 connections',
        1.0,
        '{:.2f}',
        metric='p99_ms',
        than='mosec',
        lower_is_better=True,
    ),
    RatioTarget(
        'mpserver + uvicorn ≥ 1× mpservice + uvicorn, requests/s',
        'trivial, 32 connections',
        1.0,
        '{:.2f}×',
        better='mpserver-asgi',
        than='mpservice-asgi',
    ),
    ValueTarget('native front capacity fraction ≥ 0.95', 'cpu, 32 connections', 0.95, '{:.3f}'),
    ValueTarget('native front capacity fraction ≥ 0.95', 'cpu, 256 connections', 0.95, '{:.3f}', connections=256),
)


def targets_table(run: Run) -> tuple[str, int, int]:
    """The targets table, how many were met, and how many could be judged."""
    lines = ['| target | row | measured | verdict |', '| --- | --- | ---: | --- |']
    met = judged = 0
    for t in TARGETS:
        value, missing = t.measure(run)
        if value is None:
            cell, verdict = '—', f'not measured ({BY_KEY[missing].label} missing)'
        else:
            judged += 1
            ok = value >= t.goal
            met += ok
            cell, verdict = t.shown.format(value), 'met' if ok else '**not met**'
        lines.append(f'| {t.label} | {t.row} | {cell} | {verdict} |')
    return '\n'.join(lines), met, judged


def ratios_table(run: Run, peers: list[str]) -> str:
    """requests/s of every peer relative to mpservice + uvicorn, per model and connections."""
    base = 'mpservice-asgi'
    others = [p for p in peers if p != base]
    if base not in peers or not others:
        return ''
    lines = [
        '| model | connections | ' + ' | '.join(f'{BY_KEY[p].label} / mpservice + uvicorn' for p in others) + ' |',
        '| --- | ---: |' + ' ---: |' * len(others),
    ]
    for model in models.MODELS:
        for connections in CONNECTIONS:
            b = _median(run, model, connections, base, 'rps')
            cells = []
            for p in others:
                a = _median(run, model, connections, p, 'rps')
                cells.append(f'{a / b:.2f}' if a is not None and b else '—')
            lines.append(f'| {model} | {connections} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def figures(run: Run, peers: list[str], outdir: str) -> list[tuple[str, str]]:
    """Requests/s against connections, one PNG per model; (path, alt text) of each."""
    paths = []
    for model in models.MODELS:
        series = []
        for key in peers:
            rounds = [run.values.get((model, c, key, 'rps')) for c in CONNECTIONS]
            if all(rounds):
                series.append(regions.Series(BY_KEY[key].label, '', list(CONNECTIONS), rounds))
        if series:
            spec = regions.Figure(
                key=f'http_{model}',
                filename=f'bench_http_{model}.png',
                title=f'Requests/s over HTTP, {MODEL_LABELS[model][0].lower()}{MODEL_LABELS[model][1:]}',
                xlabel='connections (wrk)',
                ylabel='requests/s',
                xlog=2,
            )
            paths.append((regions.plot_figure(spec, series, outdir), spec.title + ', against connections'))
    return paths


def rerun_command(meta: dict) -> str:
    extra = [f'--{name} {meta[name]:g}' for name in ('rounds', 'duration') if meta[name] != DEFAULTS[name]]
    return ' '.join([WRITE_COMMAND, *extra])


def report(run: Run, meta: dict, images: list[tuple[str, str]] | None = None) -> str:
    peers = meta['peers']
    others = [c for vs in (v for k, v in run.values.items() if k[3] == 'other_cores') for c in vs]
    other_text = harness.load_summary(others)
    setup = (
        f'{meta["date"]}; {meta["cpu"]}, {meta["cores"]} cores; Python {meta["python"]}; '
        f'{meta["versions"]}; mpserver from {meta["mpserver"]}; load generator {meta["wrk"]}; '
        f'{meta["rounds"]} round(s), peer order rotated per round, every peer started afresh per model and round, '
        f'warmed up with {WARMUP_SECONDS} s of wrk at {WARMUP_CONNECTIONS} connections, '
        f'then {meta["duration"]:g} s per connection count '
        '(`wrk -t1` for 1 and 32 connections, `-t2` for 256, on the same machine); '
        f'POST bodies of {len(BODY)} bytes; cpu model: {meta["loops"]:,} loop iterations '
        f'({meta["loop_ms"]:.3f} ms in the main process at calibration), {meta["cpu_workers"]} workers; '
        f'{other_text}.'
    )
    parts = [
        f'<!-- generated by benchmarks/serving.py (regenerate: {WRITE_COMMAND}); '
        f'edits between the {REGION}:begin/end markers are overwritten -->',
        f'Setup: {setup}',
    ]
    if run.missing:
        parts.append(
            '\n'.join(
                ['Missing peers (no values in this run):', '']
                + [f'- {BY_KEY[k].label}: {why}' for k, why in run.missing.items()]
            )
        )
    for model in models.MODELS:
        parts += [f'### {MODEL_LABELS[model]}', results_table(run, model, peers)]
    ratios = ratios_table(run, peers)
    if ratios:
        parts += ['### Ratios of requests/s (medians of this run)', ratios]
    table, met, judged = targets_table(run)
    parts += ['### Targets', f'{met} of {judged} judged targets met ({len(TARGETS)} in all):', table]
    if images:
        parts.append('\n\n'.join(f'![{alt}](img/{os.path.basename(path)})' for path, alt in images))
    parts.append(
        'Cells are the median over rounds (min–max when there are several).  The front process is the one that '
        "speaks HTTP: the server's main process for the native front and for uvicorn (which runs the AsyncServer "
        "in that process), mosec's Rust process for mosec; its CPU share is its utime + stime over the wall time "
        'of the measurement.  The capacity fraction is requests/s / (workers / mean service time), the service '
        'time being what each worker measured around its loop (returned as the response body).  wrk runs on the '
        'same 2 cores as the servers, so every peer shares the machine with its load generator.  '
        f'Re-run: `{rerun_command(meta)}` (`--duration 3 --rounds 1` for a smoke run).'
    )
    return '\n\n'.join(parts)


SECTION_INTRO = """## Serving over HTTP

`benchmarks/serving.py` serves the same two models (a trivial one that echoes
the request body, and one that burns about 1 ms of pure-Python CPU per
request) over HTTP with four fronts, started one after the other in one run:
mpserver's native front (`python -m mpserver serve`), mpserver and
mpservice 0.16.8 each behind uvicorn + Starlette (an `AsyncServer` in the
app's lifespan), and mosec (a Rust front feeding Python workers).  Every
peer runs the model in worker processes: one for the trivial model, one
per core for the CPU model.  `wrk` is the load generator.  The script's
docstring describes the method; `benchmarks/README.md` the options.
"""


def write_page(text: str) -> None:
    """Replace the http region of docs/benchmarks.md, appending the section (with its markers) if it is absent."""
    if regions.replace_region(DOCS_PAGE, REGION, text):
        return
    begin, end = f'<!-- {REGION}:begin -->', f'<!-- {REGION}:end -->'
    with open(DOCS_PAGE, encoding='utf-8') as f:
        page = f.read()
    with open(DOCS_PAGE, 'w', encoding='utf-8') as f:
        f.write(page.rstrip('\n') + '\n\n' + SECTION_INTRO + f'\n{begin}\n\n{text.strip()}\n\n{end}\n')
