"""Serving over HTTP: mpserver's native front against uvicorn fronts and mosec, in one run.

    python benchmarks/serving.py                         # 3 rounds of 5 s measurements, print the tables
    python benchmarks/serving.py --duration 3 --rounds 1 # smoke run (about 2 minutes)
    python benchmarks/serving.py --write                 # the same, and write "Serving over HTTP" in docs/benchmarks.md
    python benchmarks/serving.py --json run.json         # also save the per-round values
    python benchmarks/serving.py --from-json run.json --write   # publish a saved run, measuring nothing

Run it from a source tree with ``PYTHONPATH=$PWD/python`` (as ``bench.py``)
or with mpserver installed; the load generator is ``wrk``
(``apt-get install -y wrk``), and the peers need ``uvicorn``, ``starlette``
and ``mosec`` (the ``bench`` extra).

Peers
-----

* ``native``: ``python -m mpserver serve benchmarks._http_models:MODEL --host
  127.0.0.1 --port P --capacity 1024``, mpserver's own HTTP front (``POST /``);
* ``mpserver+uvicorn``: uvicorn + Starlette holding an ``mpserver.AsyncServer``;
* ``mpservice+uvicorn``: the same app with ``mpservice.mpserver.AsyncServer`` 0.16.8;
* ``mosec``: a mosec ``Server`` with one worker stage (its Rust front feeds
  Python worker processes; ``POST /inference``).

The apps are in ``_http_apps.py``, the models in ``_http_models.py``.

Method
------

Each round starts every peer for every model in a fresh process tree
(its own session, so its process group can be signalled as a whole); the
peer order is rotated by one from round to round.  A started server is
polled with the real request (1 s timeout per try, up to 60 s) until it
answers 200, warmed up with 1 s of wrk at 32 connections, then measured at
1, 32 and 256 connections, each for ``--duration`` seconds:
``wrk -t1 -cC`` for 1 and 32 connections and ``-t2 -c256`` for 256 (one
wrk thread cannot keep 256 connections busy on its own), with
``http_wrk.lua``, whose ``done()`` hook prints the request count, errors
and latency percentiles as JSON.  Around each wrk run the script reads
utime + stime of the server's front process from ``/proc/PID/stat`` (the
main process; for mosec its Rust ``mosec`` process) and of the whole server
tree, and the machine's busy time from ``/proc/stat``; the front's CPU
share is its CPU seconds over the wall time, and "other processes" is the
machine's busy time minus the server tree and wrk.  The server is then
stopped: SIGTERM to its main process, SIGKILL to its process group and to
every process of its tree still alive after 10 s.  No server outlives the
script: the stop runs in a ``finally``, and SIGTERM to the script raises
``SystemExit`` so that it runs then too.

Cells are medians over rounds with the min-max range.  Ratios compare
medians of peers measured in the same run.  For the cpu model, the
response is the seconds the worker spent in its loop; the capacity
fraction is requests/s / (workers / mean service time), i.e. the share of
the workers' time spent computing.

The native front does not exist yet in every tree: if ``python -m mpserver
serve`` exits before answering, the column is reported as missing, with the
last line of its stderr, and the rest of the run goes on.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

import report as regions  # benchmarks/report.py, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from benchmarks import _http_models as models  # noqa: E402 - after ROOT is on sys.path

DOCS_PAGE = os.path.join(ROOT, 'docs', 'benchmarks.md')
IMG_DIR = os.path.join(ROOT, 'docs', 'img')
LUA = os.path.join(HERE, 'http_wrk.lua')
REGION = 'http'
WRITE_COMMAND = 'python benchmarks/serving.py --write'
INSTALL_WRK = 'apt-get install -y wrk'
DEFAULTS = {'rounds': 3, 'duration': 5.0}
HOST = '127.0.0.1'
CAPACITY = 1024
CONNECTIONS = (1, 32, 256)
WARMUP_SECONDS = 1
WARMUP_CONNECTIONS = 32
READY_TIMEOUT = 60.0
STOP_GRACE = 10.0
WRK_TIMEOUT = '10s'  # per request; wrk's default (2 s) would count slow fronts at 256 connections as errors
BODY = b'0123456789abcdef0123456789abcdef'
DISTURBED_CORES = 0.25
TICKS = os.sysconf('SC_CLK_TCK')


@dataclasses.dataclass(frozen=True)
class Peer:
    key: str
    label: str
    path: str  # the URL path it serves

    def command(self, model: str, port: int) -> list[str]:
        if self.key == 'native':
            return [
                sys.executable,
                '-m',
                'mpserver',
                'serve',
                f'benchmarks._http_models:{model}',
                '--host',
                HOST,
                '--port',
                str(port),
                '--capacity',
                str(CAPACITY),
            ]
        backend = {'mpserver-asgi': 'mpserver', 'mpservice-asgi': 'mpservice', 'mosec': 'mosec'}[self.key]
        return [sys.executable, '-m', 'benchmarks._http_apps', backend, model, '--host', HOST, '--port', str(port)]


PEERS = (
    Peer('native', 'mpserver native front', '/'),
    Peer('mpserver-asgi', 'mpserver + uvicorn', '/'),
    Peer('mpservice-asgi', 'mpservice 0.16.8 + uvicorn', '/'),
    Peer('mosec', 'mosec', '/inference'),
)
BY_KEY = {p.key: p for p in PEERS}
MODEL_LABELS = {'trivial': 'Trivial model (body echoed, 1 worker)', 'cpu': '~1 ms CPU model (1 worker per core)'}

#: Measured per (model, connections, peer), one value per round.
METRICS = ('rps', 'p50_ms', 'p99_ms', 'front_cpu', 'tree_cpu', 'other_cores', 'errors', 'service_ms', 'capacity')


class NotServing(RuntimeError):
    """A server exited, or did not answer, before it was ready."""


# --- /proc --------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 onwards), or None."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(')') + 2 :].split()


def cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS if fields else 0.0


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ('Z', 'X')


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir('/proc'):
        if name.isdigit():
            fields = _stat(int(name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def comm(pid: int) -> str:
    try:
        with open(f'/proc/{pid}/comm') as f:
            return f.read().strip()
    except OSError:
        return ''


def machine_busy_seconds() -> float:
    with open('/proc/stat') as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / TICKS


# --- one server -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_env(loops: int) -> dict[str, str]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([ROOT, *filter(None, env.get('PYTHONPATH', '').split(os.pathsep))])
    env[models.LOOPS_ENV] = str(loops)
    env[models.WORKERS_ENV] = str(os.cpu_count() or 1)
    return env


class Running:
    """A server process tree: started in its own session, stopped with everything it started."""

    def __init__(self, peer: Peer, model: str, env: dict[str, str], logdir: str) -> None:
        self.peer, self.model = peer, model
        self.port = free_port()
        self.url = f'http://{HOST}:{self.port}{peer.path}'
        self.log_path = os.path.join(logdir, f'{peer.key}-{model}-{self.port}.log')
        self._log = open(self.log_path, 'wb')  # closed in stop()
        self.proc = subprocess.Popen(
            peer.command(model, self.port),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.seen: set[int] = {self.proc.pid}
        self.front = self.proc.pid

    def log_tail(self, lines: int = 1) -> str:
        try:
            with open(self.log_path, errors='replace') as f:
                text = [line.rstrip() for line in f if line.strip()]
        except OSError:
            return ''
        return ' | '.join(text[-lines:])

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise NotServing(f'exited with status {self.proc.returncode}: {self.log_tail() or "(no output)"}')
            try:
                request = urllib.request.Request(self.url, data=BODY, method='POST')
                with urllib.request.urlopen(request, timeout=1.0) as response:
                    if response.status == 200:
                        response.read()
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise NotServing(f'no answer within {READY_TIMEOUT:.0f} s: {self.log_tail() or "(no output)"}')
            time.sleep(0.2)
        self.seen.update(descendants(self.proc.pid))
        if self.peer.key == 'mosec':
            fronts = [pid for pid in descendants(self.proc.pid) if comm(pid) == 'mosec']
            if not fronts:
                raise NotServing("mosec answers, but its Rust front process ('mosec') is not in its tree")
            self.front = fronts[0]

    def tree_cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in descendants(self.proc.pid))

    def stop(self) -> None:
        """SIGTERM to the main process; after STOP_GRACE, SIGKILL to its group and every process it had."""
        self.seen.update(descendants(self.proc.pid))
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline:
            self.proc.poll()
            if not any(alive(pid) for pid in self.seen if pid != self.proc.pid) and self.proc.returncode is not None:
                break
            time.sleep(0.1)
        leftovers = [pid for pid in self.seen if alive(pid)]
        if leftovers:
            _log(f'  {self.peer.key}: SIGKILL to {len(leftovers)} process(es) still alive after {STOP_GRACE:.0f} s')
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self._log.close()


# --- wrk --------------------------------------------------------------------------


def wrk(url: str, connections: int, seconds: float, *, service_time: bool) -> dict:
    threads = 2 if connections >= 256 else 1
    env = dict(os.environ, HTTPBENCH_BODY=BODY.decode(), HTTPBENCH_SERVICE_TIME='1' if service_time else '0')
    argv = ['wrk', f'-t{threads}', f'-c{connections}', f'-d{seconds:g}s', '--latency', '--timeout', WRK_TIMEOUT]
    argv += ['-s', LUA, url]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60)
    for line in proc.stdout.splitlines():
        if line.startswith('HTTPBENCH '):
            return json.loads(line[len('HTTPBENCH ') :])
    raise RuntimeError(f'wrk printed no report (status {proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-500:]}')


def measure(server: Running, connections: int, seconds: float) -> dict[str, float]:
    cpu_model = server.model == 'cpu'
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    front0, tree0, busy0, t0 = cpu_seconds(server.front), server.tree_cpu(), machine_busy_seconds(), time.monotonic()
    out = wrk(server.url, connections, seconds, service_time=cpu_model)
    front1, tree1, busy1, t1 = cpu_seconds(server.front), server.tree_cpu(), machine_busy_seconds(), time.monotonic()
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = t1 - t0
    wrk_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    rps = out['requests'] / (out['duration_us'] / 1e6)
    lat = out['latency_us']
    values = {
        'rps': rps,
        'p50_ms': lat['p50'] / 1e3,
        'p99_ms': lat['p99'] / 1e3,
        'front_cpu': (front1 - front0) / wall,
        'tree_cpu': (tree1 - tree0) / wall,
        'other_cores': max(0.0, (busy1 - busy0) - (tree1 - tree0) - wrk_cpu) / wall,
        'errors': float(sum(out['errors'].values())),
    }
    if cpu_model and out['service_count']:
        service = out['service_sum'] / out['service_count']
        values['service_ms'] = service * 1e3
        values['capacity'] = rps / (models.workers('cpu') / service)
    return values


# --- the run -----------------------------------------------------------------------


Values = dict[tuple[str, int, str, str], list[float]]  # (model, connections, peer, metric) -> per round


@dataclasses.dataclass
class Run:
    values: Values = dataclasses.field(default_factory=dict)
    missing: dict[str, str] = dataclasses.field(default_factory=dict)  # peer -> why it has no values


def run_peer(run: Run, peer: Peer, model: str, env: dict[str, str], args: argparse.Namespace, label: str) -> None:
    if peer.key in run.missing:
        return
    server = Running(peer, model, env, args.logdir)
    try:
        try:
            server.wait_ready()
        except NotServing as e:
            run.missing[peer.key] = str(e)
            _log(f'{label}  {peer.label:<28} not serving: {e}')
            return
        wrk(server.url, WARMUP_CONNECTIONS, WARMUP_SECONDS, service_time=False)
        for connections in CONNECTIONS:
            values = measure(server, connections, args.duration)
            for metric, value in values.items():
                run.values.setdefault((model, connections, peer.key, metric), []).append(value)
            extra = f'  capacity {values["capacity"]:.3f}' if 'capacity' in values else ''
            errors = f'  ERRORS {values["errors"]:.0f}' if values['errors'] else ''
            _log(
                f'{label}  {model:<7} {peer.label:<28} c={connections:<3} {values["rps"]:>9,.0f} req/s  '
                f'p50 {values["p50_ms"]:7.2f} ms  p99 {values["p99_ms"]:7.2f} ms  front {values["front_cpu"]:.2f} '
                f'cores{extra}{errors}  [other processes: {values["other_cores"]:.2f} cores]'
            )
    finally:
        server.stop()


def run_all(args: argparse.Namespace, loops: int, after_round=None) -> Run:
    run = Run()
    env = server_env(loops)
    peers = [BY_KEY[k] for k in args.peers]
    for r in range(args.rounds):
        order = peers[r % len(peers) :] + peers[: r % len(peers)]
        model_order = models.MODELS if r % 2 == 0 else models.MODELS[::-1]
        for model in model_order:
            for peer in order:
                run_peer(run, peer, model, env, args, f'round {r + 1}/{args.rounds}')
        if after_round is not None:
            after_round(run, r + 1)
    return run


def dump_run(run: Run, meta: dict) -> dict:
    flat = {'/'.join(map(str, k)): vs for k, vs in run.values.items()}
    return {'meta': meta, 'values': flat, 'missing': run.missing}


def load_run(data: dict) -> tuple[Run, dict]:
    values: Values = {}
    for k, vs in data['values'].items():
        model, connections, peer, metric = k.split('/')
        values[(model, int(connections), peer, metric)] = vs
    return Run(values, dict(data['missing'])), data['meta']


# --- reporting -----------------------------------------------------------------------


def _median(run: Run, model: str, connections: int, peer: str, metric: str) -> float | None:
    vs = run.values.get((model, connections, peer, metric))
    return statistics.median(vs) if vs else None


def _cell(vs: list[float] | None, fmt: str) -> str:
    if not vs:
        return '—'
    if len(vs) == 1:
        return f'{vs[0]:{fmt}}'
    return f'{statistics.median(vs):{fmt}} ({min(vs):{fmt}}–{max(vs):{fmt}})'


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
    disturbed = sum(c > DISTURBED_CORES for c in others)
    other_text = (
        f'other processes kept a median {statistics.median(others):.2f} cores busy (max {max(others):.2f}; '
        f'{disturbed} of {len(others)} measurements above {DISTURBED_CORES} cores)'
        if others
        else 'no measurements'
    )
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


# --- main -----------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return 'not installed'


def _mpserver_origin(env: dict[str, str]) -> str:
    code = 'import mpserver, os; print(os.path.dirname(mpserver.__file__))'
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    where = proc.stdout.strip() or 'nowhere (import failed)'
    return os.path.relpath(where, ROOT) if where.startswith(ROOT) else where


def _wrk_version() -> str:
    proc = subprocess.run(['wrk', '--version'], capture_output=True, text=True, timeout=10)
    words = (proc.stdout + proc.stderr).split()
    return ' '.join(words[:2]) if words else 'wrk'


def main() -> int:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=Formatter)
    p.add_argument('--rounds', type=int, default=DEFAULTS['rounds'], help='rounds of every peer and model')
    p.add_argument('--duration', type=float, default=DEFAULTS['duration'], help='seconds of wrk per measurement')
    p.add_argument(
        '--peer',
        dest='peers',
        action='append',
        choices=list(BY_KEY),
        help='only this peer (repeatable; not with --write)',
    )
    p.add_argument('--write', action='store_true', help='write the "Serving over HTTP" section of docs/benchmarks.md')
    p.add_argument('--no-plots', action='store_true', help='with --write: no PNGs (no matplotlib needed)')
    p.add_argument('--json', metavar='PATH', help='also save the run (per-round values, settings) to PATH')
    p.add_argument('--from-json', metavar='PATH', help='report (and with --write publish) a saved run; measure nothing')
    p.add_argument('--logdir', help="where the servers' output goes (default: a fresh temporary directory)")
    args = p.parse_args()
    if args.write and args.peers:
        p.error('--write publishes the full run: it refuses --peer')
    args.peers = args.peers or [peer.key for peer in PEERS]
    if args.write and not args.no_plots:
        regions.require_matplotlib()

    if args.from_json:
        with open(args.from_json) as f:
            run, meta = load_run(json.load(f))
    else:
        if shutil.which('wrk') is None:
            print(f'benchmarks/serving.py needs wrk, the HTTP load generator: {INSTALL_WRK}', file=sys.stderr)
            return 2
        if args.logdir is None:
            import tempfile

            args.logdir = tempfile.mkdtemp(prefix='mpserver-http-bench-')
        os.makedirs(args.logdir, exist_ok=True)
        # SIGTERM ends the run through the finally blocks that stop the servers.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        loops = models.calibrate()
        loop_seconds = []
        for _ in range(21):
            start = time.perf_counter()
            models.burn(loops)
            loop_seconds.append(time.perf_counter() - start)
        env = server_env(loops)
        meta = {
            'date': datetime.datetime.now().astimezone().isoformat(timespec='minutes'),
            'cpu': regions.cpu_model(),
            'cores': os.cpu_count(),
            'python': platform.python_version(),
            'versions': ', '.join(
                f'{d} {_version(d)}' for d in ('mpservice', 'mosec', 'uvicorn', 'starlette', 'uvloop', 'httptools')
            ),
            'mpserver': _mpserver_origin(env),
            'wrk': _wrk_version(),
            'loops': loops,
            'loop_ms': statistics.median(loop_seconds) * 1e3,
            'cpu_workers': models.workers('cpu'),
            'peers': args.peers,
            **{name: getattr(args, name) for name in ('rounds', 'duration')},
        }
        _log(f'cpu model: {loops:,} loops (~1 ms); servers log to {args.logdir}')

        def save(run: Run, rounds_done: int) -> None:
            tmp = args.json + '.tmp'
            with open(tmp, 'w') as f:
                json.dump(dump_run(run, {**meta, 'rounds': rounds_done}), f, indent=1)
            os.replace(tmp, args.json)

        run = run_all(args, loops, save if args.json else None)

    if args.write and run.missing:
        # A published table has every column: a missing peer is a run to repeat, not a result.
        print(report(run, meta))
        _log(f'not writing {DOCS_PAGE}: peers missing from this run: {", ".join(run.missing)}')
        return 1
    images = figures(run, meta['peers'], IMG_DIR) if args.write and not args.no_plots else []
    text = report(run, meta, images)
    print(text)
    if args.write:
        write_page(text)
        _log(f'wrote the {REGION} region of {DOCS_PAGE}')
    # The native front may not exist yet; any other peer missing is a failure of the harness or its setup.
    return 1 if set(run.missing) - {'native'} else 0


if __name__ == '__main__':
    sys.exit(main())
