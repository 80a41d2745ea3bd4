"""Real models next to the servers users would pick (issue 35): one command.

::

    python benchmarks/real_models.py                      # every peer, every workload: the full run
    python benchmarks/real_models.py --quick --peers mpserver-native,fastapi --workloads digits
    python benchmarks/real_models.py --install-only       # make the peers' venvs and stop
    python benchmarks/real_models.py --from-json run.json # report a saved run

Two workloads (``benchmarks/real/work.py``): W1, OCR (rapidocr's bundled ONNX
models, detect then recognise, PNG images of 1-3 lines drawn with Pillow from a
fixed seed) and W2, tabular scoring (a HistGradientBoostingClassifier trained at
start-up on load_digits, one JSON row per request; W2b the same model in ONNX
Runtime).  Served over HTTP by each peer of ``benchmarks/real/peerlist.py``
(configs in ``benchmarks/real/peers/``), each in its own venv under
``~/.cache/mpserver/real-models/`` made from ``benchmarks/real/requirements/``;
and offline, in one program, by ``Server.stream`` and the standard pools
(``benchmarks/real/offline.py``).  What each row means: benchmarks/README.md,
"Real models".

The load is open-loop (``benchmarks/real/loadgen.py``): a fixed arrival
rate, latency counted from each request's due time.  The generator runs in
this process, on the same machine as the server (2 cores here): it is part of
the machine's load for every peer alike.

This script re-runs itself with the ``base`` venv's Python (which has the
workloads' packages, to make the requests and the expected answers) unless
``--python current`` says to use the running one.
"""

from __future__ import annotations

import os
import sys

# Before numpy is imported anywhere: one compute thread (the servers get the same).
for _k, _v in {'OMP_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}.items():
    os.environ.setdefault(_k, _v)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (HERE, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import argparse  # noqa: E402
import glob  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import harness  # noqa: E402
from harness import alive, cpu_seconds, descendants, log  # noqa: E402

from benchmarks.real import loadgen, work  # noqa: E402
from benchmarks.real.peerlist import BY_KEY, HOST, NOT_CONFIGURED, PEERS, Peer  # noqa: E402
from benchmarks.real.peers.settings import WORKERS_ENV  # noqa: E402

CACHE = os.path.join(os.path.expanduser('~'), '.cache', 'mpserver', 'real-models')
REQUIREMENTS = os.path.join(HERE, 'real', 'requirements')
INNER_ENV = 'MPSERVER_REAL_MODELS_INNER'
OFFLINE_PEERS = ('mpserver', 'ProcessPoolExecutor.map', 'Pool.imap', 'joblib', 'mpire')


# --- sizes ---------------------------------------------------------------------------


class Sizes:
    """How long each measurement runs, full or ``--quick``."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.seconds = 1.5 if quick else 10.0  # one open-loop run
        self.idle = 0.5 if quick else 5.0
        self.goodput_steps = 1 if quick else 4
        # --quick: slower than a digits worker's restart (~3 s to train its model), or every kill lands on a restart.
        self.kill_every, self.kill_for = (3.0, 6.0) if quick else (5.0, 60.0)
        self.stuck_sleep = 2.0 if quick else 30.0
        # --quick: a few stuck requests only: each holds a worker for stuck_sleep, and the rounds after it
        # run on the same server (at 5 %, the backlog they left made the next round all timeouts).
        self.stuck_share = 0.003 if quick else 0.005
        self.restart_run = 12.0 if quick else 30.0  # the restart comes at a quarter of it: room for a cold start
        self.bad_share = 0.05 if quick else 0.01
        self.ready_timeout = 120.0
        self.timeout_scale = 0.5 if quick else 1.0  # of timeout_for(): --quick waits less for hopeless requests
        self.offline_items = {'ocr': 40 if quick else 1_000, 'digits': 400 if quick else 10_000}
        self.samples = {'ocr': 16 if quick else 64, 'digits': 500 if quick else 2_000}


SIZES = Sizes(quick=False)  # main() sets the run's


def timeout_for(workload: str) -> float:
    """A request is a timeout after this many seconds (20 SLOs, at least 10 s)."""
    return max(10.0, 20 * work.SLO_MS[workload] / 1e3)


# --- venvs ---------------------------------------------------------------------------


def _requirements_text(venv: str) -> str:
    parts = []
    for name in (f'{venv}.txt', 'work.txt'):
        with open(os.path.join(REQUIREMENTS, name)) as f:
            parts.append(f.read())
    return '\n'.join(parts)


def built_core() -> bool:
    """Whether python/mpserver/ of this checkout has its compiled core (a dev build or its symlink)."""
    return bool(glob.glob(os.path.join(ROOT, 'python', 'mpserver', '_core*.so')))


def ensure_venv(venv: str, *, install: bool) -> tuple[str | None, str]:
    """(the venv's python, '') or (None, why not)."""
    where = os.path.join(CACHE, venv)
    python = os.path.join(where, 'bin', 'python')
    stamp = os.path.join(where, '.requirements-sha256')
    want = hashlib.sha256(_requirements_text(venv).encode()).hexdigest()
    if os.path.exists(python) and os.path.exists(stamp) and open(stamp).read().strip() == want:
        return python, ''
    if not install:
        return None, f'venv {where} not installed or out of date (run without --no-install)'
    log(f'installing {venv} into {where} (pip, one package at a time) ...')
    base = getattr(sys, '_base_executable', sys.executable)
    steps = [[base, '-m', 'venv', '--clear', where]]
    steps.append([python, '-m', 'pip', 'install', '-q', '-r', os.path.join(REQUIREMENTS, f'{venv}.txt')])
    if venv == 'base' and not built_core():
        steps.append([python, '-m', 'pip', 'install', '-q', ROOT])  # builds mpserver from the checkout
    for argv in steps:
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode:
            lines = [x for x in (proc.stderr or proc.stdout).splitlines() if x.strip() and 'is ignored' not in x]
            return None, f'{" ".join(argv[-2:])} failed: {lines[-1] if lines else proc.returncode}'
    with open(stamp, 'w') as f:
        f.write(want + '\n')
    return python, ''


def pythons(peers: list[Peer], args: argparse.Namespace) -> dict[str, tuple[str | None, str]]:
    out = {}
    for venv in sorted({p.venv for p in peers}):
        if venv == 'base' and args.python == 'current':
            out[venv] = (sys.executable, '')
        else:
            out[venv] = ensure_venv(venv, install=not args.no_install)
    return out


def server_env() -> dict[str, str]:
    env = dict(os.environ, **work.THREAD_ENV)
    env[WORKERS_ENV] = str(os.cpu_count() or 1)
    # examples/: worker processes re-import the examples' classes (peers/mpserver_native.py) by name.
    paths = [ROOT, os.path.join(ROOT, 'examples'), *([os.path.join(ROOT, 'python')] if built_core() else [])]
    env['PYTHONPATH'] = os.pathsep.join([*paths, *filter(None, env.get('PYTHONPATH', '').split(os.pathsep))])
    env.pop(INNER_ENV, None)
    return env


# --- one server ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pss_kib(pid: int) -> int:
    try:
        with open(f'/proc/{pid}/smaps_rollup') as f:
            for line in f:
                if line.startswith('Pss:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> str:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return ''


class NotServing(RuntimeError):
    pass


class Running:
    """A peer's server tree, in a session of its own; stopped with everything it started."""

    def __init__(self, peer: Peer, python: str, workload: str, logdir: str, port: int | None = None) -> None:
        self.peer, self.python, self.workload = peer, python, workload
        self.port = port or free_port()
        self.log_path = os.path.join(logdir, f'{peer.key}-{workload}-{self.port}.log')
        self.seen: set[int] = set()
        self.start()

    def start(self) -> None:
        self._log = open(self.log_path, 'ab')
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.peer.command(self.python, self.workload, self.port),
            cwd=ROOT,
            env=server_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.seen.add(self.proc.pid)

    def log_tail(self, lines: int = 2) -> str:
        try:
            with open(self.log_path, errors='replace') as f:
                text = [x.rstrip() for x in f if x.strip()]
        except OSError:
            return ''
        return ' | '.join(text[-lines:])[-400:]

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f'http://{HOST}:{self.port}{path}', timeout=1.0) as r:
                r.read()
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (OSError, urllib.error.URLError):
            return 0

    def post(self, body: bytes, content_type: str, timeout: float = 30.0) -> tuple[int, bytes]:
        req = urllib.request.Request(
            f'http://{HOST}:{self.port}{self.peer.path}', data=body, headers={'Content-Type': content_type}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (OSError, urllib.error.URLError):
            return 0, b''

    def wait_ready(self, limit: float) -> float:
        """Seconds from the process's start to its health endpoint's first 200."""
        deadline = time.perf_counter() + limit
        while True:
            if self.proc.poll() is not None:
                raise NotServing(f'exited with status {self.proc.returncode}: {self.log_tail() or "(no output)"}')
            if self.get(self.peer.health) == 200:
                self.seen.update(descendants(self.proc.pid))
                return time.perf_counter() - self.t0
            if time.perf_counter() > deadline:
                raise NotServing(f'not ready within {limit:.0f} s: {self.log_tail() or "(no output)"}')
            time.sleep(0.05)

    def first_answer(self, body: bytes, content_type: str, check: Callable[[bytes], bool], limit: float) -> float:
        """Seconds from the process's start to the first correct answer."""
        deadline = time.perf_counter() + limit
        failed = 0
        while True:
            status, data = self.post(body, content_type, timeout=max(1.0, deadline - time.perf_counter()))
            if status == 200 and check(data):
                return time.perf_counter() - self.t0
            # 503 and no answer may mean "still starting"; anything else 20 times over is a broken config.
            failed += status not in (0, 503)
            if time.perf_counter() > deadline or failed >= 20:
                raise NotServing(f'no correct answer (last: {status} {data[:200]!r}); log: {self.log_tail()}')
            time.sleep(0.05)

    def tree(self) -> list[int]:
        pids = descendants(self.proc.pid)
        self.seen.update(pids)
        return pids

    def tree_cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.tree())

    def pss_mib(self) -> float:
        return sum(pss_kib(pid) for pid in self.tree()) / 1024

    def worker_pids(self) -> list[int]:
        """The processes that hold a model (see ``Peer.worker_marker``)."""
        pids = [p for p in self.tree() if p != self.proc.pid]
        if self.peer.worker_marker:
            return [p for p in pids if self.peer.worker_marker in cmdline(p)]
        sizes = {p: pss_kib(p) for p in pids}
        top = max(sizes.values(), default=0)
        return [p for p, s in sizes.items() if top and s >= top / 2]

    def stop(self, grace: float = 15.0) -> float:
        """SIGTERM to the main process; SIGKILL to what is left after ``grace``.  Returns seconds to exit."""
        if self._log.closed:
            return 0.0
        self.tree()
        start = time.perf_counter()
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            log(f'  {self.peer.key}: still running {grace:.0f} s after SIGTERM; SIGKILL')
        took = time.perf_counter() - start
        deadline = time.perf_counter() + 5.0
        while any(alive(p) for p in self.seen if p != self.proc.pid) and time.perf_counter() < deadline:
            time.sleep(0.1)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in self.seen:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc.wait()
        self._log.close()
        return took


# --- what is sent and what is right ----------------------------------------------------


class Samples:
    """A workload's request bodies and expected answers (fixed seed)."""

    def __init__(self, workload: str, n: int) -> None:
        self.workload = workload
        if workload == 'ocr':
            pairs = work.ocr_samples(n)
            self.bodies = [png for png, _ in pairs]
            self.expected: list[Any] = [text for _, text in pairs]
        else:
            self.bodies = work.digits_bodies(n)
            self.expected = work.digits_expected(self.bodies, onnx=workload == 'digits-onnx')
        self.bad = [b'not an image, not JSON: \x00\x01garbage', b'{"row": [1, 2, 3]}', b'']

    def ok(self, i: int, data: bytes) -> bool:
        want = self.expected[i % len(self.expected)]
        if self.workload == 'ocr':
            if data.startswith(b'{'):  # a peer that answers JSON only (LitServe): {"text": ...}
                try:
                    data = json.loads(data)['text'].encode()
                except (ValueError, KeyError, TypeError, AttributeError):
                    return False
            return work.ocr_text_ok(data, want)
        try:
            value = json.loads(data)
        except ValueError:
            return False
        if isinstance(value, dict):
            value = value.get('label')
        return value == want


def stuck_body(body: bytes, seconds: float) -> bytes:
    value = json.loads(body)
    value['sleep'] = seconds
    return json.dumps(value).encode()


def summarize(run: loadgen.Run, samples: Samples, special: set[int] = frozenset()) -> dict[str, float]:
    """Counts and latencies of one open-loop run; ``special`` (indexes of stuck or bad requests) counted apart."""
    n = len(samples.bodies)
    normal = [o for o in run.outcomes if o.index not in special]
    good = [o for o in normal if o.status == 200 and samples.ok(o.index % n, o.body)]
    lat = sorted(o.latency for o in good)
    out = {
        'sent': float(len(run.outcomes)),
        'ok': float(len(good)),
        'wrong': float(sum(1 for o in normal if o.status == 200 and not samples.ok(o.index % n, o.body))),
        'non_2xx': float(sum(1 for o in normal if o.status and not 200 <= o.status < 300)),
        'timeouts': float(sum(1 for o in normal if o.error == loadgen.TIMEOUT)),
        'refused': float(sum(1 for o in normal if o.error and o.error != loadgen.TIMEOUT)),
        'late_p99_ms': harness.percentile(sorted(o.late for o in run.outcomes), 99) * 1e3,
    }
    if lat:
        for q, name in ((50, 'p50_ms'), (99, 'p99_ms'), (99.9, 'p999_ms')):
            out[name] = harness.percentile(lat, q) * 1e3
    out['errors'] = out['wrong'] + out['non_2xx'] + out['timeouts'] + out['refused']
    return out


def shoot(server: Running, samples: Samples, rate: float, seconds: float, bodies: list[bytes] | None = None):
    wire = [server.peer.body(samples.workload, b) for b in (bodies or samples.bodies)]
    content_type = wire[0][1]
    return loadgen.run(
        HOST,
        server.port,
        server.peer.path,
        [b for b, _ in wire],
        rate,
        seconds,
        timeout=timeout_for(samples.workload) * SIZES.timeout_scale,
        content_type=content_type,
    )


# --- the measurements of one peer on one workload --------------------------------------


def serve_round(peer: Peer, python: str, samples: Samples, sizes: Sizes, logdir: str) -> dict[str, float]:
    """Cold start, idle CPU, PSS, capacity, latency at 50/90 %, CPU per request, goodput; then the failure rounds."""
    workload = samples.workload
    slo = work.SLO_MS[workload]
    values: dict[str, float] = {}
    body0, ctype = peer.body(workload, samples.bodies[0])
    server = Running(peer, python, workload, logdir)
    try:
        values['ready_s'] = server.wait_ready(sizes.ready_timeout)
        values['first_answer_s'] = server.first_answer(body0, ctype, lambda d: samples.ok(0, d), sizes.ready_timeout)
        time.sleep(0.5)
        cpu0 = server.tree_cpu()
        time.sleep(sizes.idle)
        values['idle_cpu'] = (server.tree_cpu() - cpu0) / sizes.idle
        # One at a time: the service time, for the first guess of capacity.
        singles = []
        for i in range(5):
            b, _ = peer.body(workload, samples.bodies[i])
            t = time.perf_counter()
            server.post(b, ctype)
            singles.append(time.perf_counter() - t)
        service = statistics.median(singles)
        values['single_ms'] = service * 1e3
        guess = (os.cpu_count() or 1) / service * (4 if work.batched(workload) else 1)
        shoot(server, samples, guess * 0.3, min(2.0, sizes.seconds))  # warm-up
        values['pss_mib'] = server.pss_mib()
        # Capacity: an overload (1.5x the guess), completions over the wall time.
        # Capacity: correct answers per second under an overload, counted over the sending window only (what
        # was still queued at its end would otherwise add its timeouts' wait).  Starting at 1.5x the guess, the
        # offered rate doubles while the server keeps up with it (the guess from one-at-a-time calls can be low).
        n = len(samples.bodies)
        offered, capacity, over = guess * 1.5, 0.0, None
        for _ in range(4):
            over = shoot(server, samples, offered, sizes.seconds)
            done = [o for o in over.outcomes if o.status == 200 and o.due + o.latency <= sizes.seconds]
            capacity = max(capacity, sum(1 for o in done if samples.ok(o.index % n, o.body)) / sizes.seconds)
            if capacity < 0.8 * offered:
                break
            offered *= 2
        values['offered_rps'] = offered
        if not capacity:
            raise RuntimeError(f'no correct answer under load ({summarize(over, samples)})')
        values['max_rps'] = capacity
        log(f'  {peer.key} {workload}: ready {values["ready_s"]:.2f} s, capacity ~{capacity:.0f}/s')
        for share in (0.5, 0.9):
            with harness.OtherLoad(ours=server.tree_cpu) as load:
                run = shoot(server, samples, capacity * share, sizes.seconds)
            s = summarize(run, samples)
            tag = f'{round(share * 100)}'
            for k in ('p50_ms', 'p99_ms', 'p999_ms', 'errors', 'late_p99_ms'):
                if k in s:
                    values[f'{k}@{tag}'] = s[k]
            if share == 0.9 and s['ok']:
                values['cpu_ms_per_req'] = load.ours / s['ok'] * 1e3
            values[f'other_cores@{tag}'] = load.cores
        # Goodput: the highest rate with p99 <= SLO and no errors (bisection between 0 and the capacity).
        lo, hi = 0.0, capacity
        for _ in range(sizes.goodput_steps):
            rate = (lo + hi) / 2
            s = summarize(shoot(server, samples, rate, sizes.seconds), samples)
            if s['errors'] == 0 and s.get('p99_ms', float('inf')) <= slo:
                lo = rate
            else:
                hi = rate
        values['goodput_rps'] = lo
    finally:
        server.stop()
    return values


def failure_rounds(peer: Peer, python: str, samples: Samples, capacity: float, sizes: Sizes, logdir: str):
    """The four failure rounds at 70 % of the peer's capacity: counts of what went wrong."""
    workload = samples.workload
    rate = 0.7 * capacity
    values: dict[str, float] = {}

    def fresh() -> Running:
        server = Running(peer, python, workload, logdir)
        server.wait_ready(sizes.ready_timeout)
        body0, ctype = peer.body(workload, samples.bodies[0])
        server.first_answer(body0, ctype, lambda d: samples.ok(0, d), sizes.ready_timeout)
        return server

    def record(tag: str, s: dict[str, float]) -> None:
        for k in ('ok', 'wrong', 'non_2xx', 'timeouts', 'refused', 'p99_ms'):
            if k in s:
                values[f'{tag}:{k}'] = s[k]

    # (d) bad bodies: a share of the requests is not an image / not JSON.
    server = fresh()
    try:
        _failures(server, fresh, record, values, samples, rate, sizes)
    finally:
        server.stop()  # --quick runs every round on this one server
    return values


def _failures(server, fresh, record, values, samples, rate, sizes) -> None:
    workload = samples.workload
    n = len(samples.bodies)
    try:
        count = max(1, round(rate * sizes.seconds))
        rng = random.Random(work.SEED)
        bad = set(rng.sample(range(count), max(1, round(count * sizes.bad_share))))
        bodies = [samples.bad[i % len(samples.bad)] if i in bad else samples.bodies[i % n] for i in range(count)]
        run = shoot(server, samples, rate, sizes.seconds, bodies)
        record('bad_body', summarize(run, samples, special=bad))
        answered = [o for o in run.outcomes if o.index in bad]
        values['bad_body:bad_got_4xx'] = float(sum(1 for o in answered if 400 <= o.status < 500))
        values['bad_body:bad_got_5xx'] = float(sum(1 for o in answered if o.status >= 500))
        values['bad_body:bad_no_answer'] = float(sum(1 for o in answered if not o.status))
    finally:
        if not sizes.quick:
            server.stop()
    # (b) stuck requests (W2 only): a share of bodies makes the worker sleep.
    if work.batched(workload):
        if not sizes.quick:
            server = fresh()
        try:
            count = max(1, round(rate * sizes.seconds))
            rng = random.Random(work.SEED + 1)
            stuck = set(rng.sample(range(count), max(1, round(count * sizes.stuck_share))))
            bodies = [
                stuck_body(samples.bodies[i % n], sizes.stuck_sleep) if i in stuck else samples.bodies[i % n]
                for i in range(count)
            ]
            record('stuck', summarize(shoot(server, samples, rate, sizes.seconds, bodies), samples, special=stuck))
        finally:
            if not sizes.quick:
                server.stop()
        if sizes.quick:
            time.sleep(sizes.stuck_sleep)  # let the stuck batches end before the next round on this server
    # (a) kill -9 a random worker every few seconds.
    if not sizes.quick:
        server = fresh()
    try:
        kills: list[int] = []
        stop = threading.Event()

        def killer() -> None:
            rng = random.Random(work.SEED + 2)
            while not stop.wait(sizes.kill_every):
                pids = server.worker_pids()
                if pids:
                    pid = rng.choice(pids)
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills.append(pid)
                    except ProcessLookupError:
                        pass

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            run = shoot(server, samples, rate, sizes.kill_for)
        finally:
            stop.set()
            thread.join()
        record('kill', summarize(run, samples))
        values['kill:kills'] = float(len(kills))
        time.sleep(min(5.0, sizes.kill_every * 2))
        s = summarize(shoot(server, samples, rate, min(2.0, sizes.seconds)), samples)
        values['kill:serves_after'] = float(s['ok'] > 0 and s['errors'] == 0)
    finally:
        if not sizes.quick:
            server.stop()
    # (c) SIGTERM and a plain restart on the same port, under load.
    if not sizes.quick:
        server = fresh()
    try:
        result: dict[str, float] = {}

        def restart() -> None:
            time.sleep(sizes.restart_run / 4)
            result['stop_s'] = server.stop()
            t = time.perf_counter()
            server.start()
            try:
                server.wait_ready(sizes.ready_timeout)
                result['back_s'] = time.perf_counter() - t
            except NotServing:
                result['back_s'] = float('nan')

        thread = threading.Thread(target=restart, daemon=True)
        thread.start()
        run = shoot(server, samples, rate, sizes.restart_run)
        thread.join()
        record('restart', summarize(run, samples))
        for k, v in result.items():
            values[f'restart:{k}'] = v
    finally:
        server.stop()


# --- the run ---------------------------------------------------------------------------


ROWS = (
    ('goodput_rps', 'goodput at the p99 target, req/s', '.1f'),
    ('max_rps', 'maximum throughput (correct answers/s under overload), req/s', '.1f'),
    ('p50_ms@50', 'p50 at 50 % of capacity, ms', '.1f'),
    ('p99_ms@50', 'p99 at 50 %, ms', '.1f'),
    ('p999_ms@50', 'p99.9 at 50 %, ms', '.1f'),
    ('p50_ms@90', 'p50 at 90 %, ms', '.1f'),
    ('p99_ms@90', 'p99 at 90 %, ms', '.1f'),
    ('p999_ms@90', 'p99.9 at 90 %, ms', '.1f'),
    ('errors@90', 'errors at 90 % (non-2xx, wrong, timeouts)', '.0f'),
    ('late_p99_ms@90', "generator's own lateness p99 at 90 %, ms", '.1f'),
    ('cpu_ms_per_req', 'server CPU per request (at 90 %), ms', '.2f'),
    ('pss_mib', "PSS of the server's processes, MiB", '.0f'),
    ('ready_s', 'cold start: start -> ready, s', '.2f'),
    ('first_answer_s', 'cold start: start -> first correct answer, s', '.2f'),
    ('idle_cpu', 'idle CPU, cores', '.3f'),
    ('bad_body:ok', '(d) bad bodies: good requests answered right', '.0f'),
    ('bad_body:errors', '(d) bad bodies: good requests failed', '.0f'),
    ('bad_body:bad_got_4xx', '(d) bad bodies answered 4xx', '.0f'),
    ('bad_body:bad_got_5xx', '(d) bad bodies answered 5xx', '.0f'),
    ('bad_body:bad_no_answer', '(d) bad bodies not answered', '.0f'),
    ('stuck:ok', '(b) stuck requests: others answered right', '.0f'),
    ('stuck:errors', '(b) stuck requests: others failed', '.0f'),
    ('stuck:p99_ms', '(b) stuck requests: p99 of the others, ms', '.1f'),
    ('kill:kills', '(a) kill -9: workers killed', '.0f'),
    ('kill:ok', '(a) kill -9: answered right', '.0f'),
    ('kill:errors', '(a) kill -9: failed (non-2xx, wrong, timeouts, refused)', '.0f'),
    ('kill:serves_after', '(a) kill -9: serves cleanly afterwards (1 = yes)', '.0f'),
    ('restart:ok', '(c) restart: answered right', '.0f'),
    ('restart:errors', '(c) restart: failed', '.0f'),
    ('restart:back_s', '(c) restart: SIGTERM sent -> ready again, s', '.2f'),
)


def _with_errors(values: dict[str, float]) -> dict[str, float]:
    out = dict(values)
    for tag in ('bad_body', 'stuck', 'kill', 'restart'):
        parts = [values.get(f'{tag}:{k}') for k in ('wrong', 'non_2xx', 'timeouts', 'refused')]
        if any(p is not None for p in parts):
            out[f'{tag}:errors'] = sum(p or 0.0 for p in parts)
    return out


def report(data: dict) -> str:
    lines = [
        f'Real models ({"--quick, a smoke run: not results" if data["quick"] else "full run"}); '
        f'{data["rounds"]} round(s); {data["cpu"]}, {data["cores"]} cores; '
        f'revision {data["revision"]}; {data["when"]}.',
        '',
    ]
    for workload, per_peer in data['serving'].items():
        peers = [p for p in per_peer if per_peer[p].get('rounds')]
        lines.append(f'### {workload} over HTTP (p99 target {work.SLO_MS[workload]:.0f} ms)')
        lines.append('')
        if peers:
            lines.append('| | ' + ' | '.join(BY_KEY[p].label for p in peers) + ' |')
            lines.append('|---|' + '---|' * len(peers))
            for key, label, fmt in ROWS:
                cells = []
                for p in peers:
                    vals = [_with_errors(r).get(key) for r in per_peer[p]['rounds']]
                    vals = [v for v in vals if v is not None]
                    cells.append(harness.cell(vals, fmt, range_of_one=False))
                if any(c != '—' for c in cells):
                    lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
            lines.append('')
        for p, entry in per_peer.items():
            if entry.get('skipped'):
                lines.append(f'- {p}: skipped: {entry["skipped"]}')
        lines.append('')
    for workload, per_peer in data['offline'].items():
        lines.append(f'### {workload} offline, {data["offline_items"][workload]} inputs (items/s, best chunk size)')
        lines.append('')
        lines.append('| | quiet | busy host (2 other CPU-bound processes) | busy / quiet |')
        lines.append('|---|---|---|---|')
        for peer, r in per_peer.items():
            if 'skipped' in r:
                lines.append(f'| {peer} | skipped: {r["skipped"]} | | |')
                continue
            q, b = r.get('quiet', {}), r.get('busy', {})
            quiet = f'{q["items_per_s"]:.1f} (chunk {q["chunk"]:.0f})' if q.get('items_per_s') else '—'
            busy = f'{b["items_per_s"]:.1f}' if b.get('items_per_s') else '—'
            both = q.get('items_per_s') and b.get('items_per_s')
            ratio = f'{b["items_per_s"] / q["items_per_s"]:.2f}' if both else '—'
            lines.append(f'| {peer} | {quiet} | {busy} | {ratio} |')
        lines.append('')
    return '\n'.join(lines)


def offline(workloads: list[str], peers: list[str], sizes: Sizes, busy: bool) -> dict:
    from benchmarks.real import offline as off

    out: dict[str, dict] = {}
    for workload in workloads:
        if workload == 'digits-onnx':
            continue
        samples = Samples(workload, sizes.offline_items[workload])

        def check(i: int, result: Any, samples: Samples = samples) -> bool:
            if samples.workload == 'ocr':
                return work.ocr_text_ok(result, samples.expected[i])
            return result == samples.expected[i]

        out[workload] = {}
        for peer in peers:
            try:
                entry = {'quiet': off.measure(peer, workload, samples.bodies, check)}
                log(f'  offline {workload} {peer}: {entry["quiet"]["items_per_s"]:.1f} items/s')
                if busy:
                    with off.busy_host():
                        entry['busy'] = off.measure(peer, workload, samples.bodies, check)
            except Exception as e:  # noqa: BLE001 - a peer that fails is reported, the run goes on
                entry = {'skipped': f'{type(e).__name__}: {e}'[:300]}
                log(f'  offline {workload} {peer}: {entry["skipped"]}')
            out[workload][peer] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    harness.add_run_options(p, rounds=3, write=None, quick='a smoke run: short runs, few inputs', quick_rounds=1)
    p.add_argument('--json', metavar='PATH', help='also save the run (per-round values, settings) to PATH')
    p.add_argument('--from-json', metavar='PATH', help='measure nothing: report a run saved by --json')
    every = [x.key for x in PEERS] + list(NOT_CONFIGURED)
    p.add_argument('--peers', default=','.join(every), help='comma-separated: ' + ', '.join(every) + ' (default: all)')
    p.add_argument('--workloads', default=','.join(work.WORKLOADS), help='comma-separated (default: all)')
    p.add_argument('--offline-peers', default=','.join(OFFLINE_PEERS), help="comma-separated, or '' for none")
    p.add_argument('--no-failures', action='store_true', help='skip the four failure rounds')
    p.add_argument('--no-busy', action='store_true', help='skip the offline busy-host run')
    p.add_argument('--python', default='venv', choices=('venv', 'current'), help="'current': run here")
    p.add_argument('--no-install', action='store_true', help='use only venvs already installed; skip the other peers')
    p.add_argument('--install-only', action='store_true', help='make the venvs and stop')
    p.add_argument('--logdir', help="keep the servers' output here (default: a temporary directory)")
    args = harness.parse_run_options(p, argv)
    if args.from_json:
        print(report(harness.load_json(args.from_json)))
        return 0
    wanted = [k for k in args.peers.split(',') if k]
    unknown = [k for k in wanted if k not in BY_KEY and k not in NOT_CONFIGURED]
    if unknown:
        p.error(f'unknown peer(s) {unknown}; known: {[x.key for x in PEERS] + list(NOT_CONFIGURED)}')
    workloads = [w for w in args.workloads.split(',') if w]
    if any(w not in work.WORKLOADS for w in workloads):
        p.error(f'--workloads: choose from {work.WORKLOADS}')
    peers = [BY_KEY[k] for k in wanted if k in BY_KEY]
    if built_core() and os.path.join(ROOT, 'python') not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, 'python'))  # mpserver for the offline runs, from the checkout
    # Re-run in the base venv (the workloads' packages make the bodies and the expected answers).
    if args.python == 'venv' and not os.environ.get(INNER_ENV):
        base, why = ensure_venv('base', install=not args.no_install)
        if base is None:
            log(f'cannot run: the base venv: {why}')
            return 2
        os.environ[INNER_ENV] = '1'
        argv_ = [base, os.path.abspath(__file__), *(sys.argv[1:] if argv is None else argv)]
        os.execv(base, argv_)
    found = pythons(peers, args)
    if args.install_only:
        for venv, (python, why) in found.items():
            log(f'{venv}: {python or why}')
        return 0
    global SIZES
    sizes = SIZES = Sizes(args.quick)
    os.environ['PYTHONPATH'] = server_env()['PYTHONPATH']  # the offline runs' worker processes
    logdir = args.logdir or tempfile.mkdtemp(prefix='real-models-')
    os.makedirs(logdir, exist_ok=True)
    log(f'servers log into {logdir}')
    data: dict[str, Any] = {
        'quick': args.quick,
        'rounds': args.rounds,
        'cpu': harness.cpu_model(),
        'cores': os.cpu_count(),
        'revision': harness.git_revision(),
        'when': harness.now(),
        'serving': {},
        'offline': {},
        'offline_items': sizes.offline_items,
        'versions': {},
    }
    for workload in workloads:
        samples = Samples(workload, sizes.samples['ocr' if workload == 'ocr' else 'digits'])
        per_peer: dict[str, dict] = {k: {'rounds': []} for k in wanted}
        for k, why in NOT_CONFIGURED.items():
            if k in wanted:
                per_peer[k] = {'skipped': why}
        for rnd in range(args.rounds):
            order = peers[rnd % len(peers) :] + peers[: rnd % len(peers)] if peers else []
            for peer in order:
                python, why = found[peer.venv]
                if python is None:
                    per_peer[peer.key] = {'skipped': why}
                    continue
                if workload not in peer.workloads:
                    per_peer[peer.key] = {'skipped': f'no config for {workload}'}
                    continue
                if per_peer[peer.key].get('skipped'):
                    continue
                log(f'round {rnd + 1}: {peer.key} {workload}')
                try:
                    values = serve_round(peer, python, samples, sizes, logdir)
                    if not args.no_failures:
                        values.update(failure_rounds(peer, python, samples, values['max_rps'], sizes, logdir))
                except (NotServing, OSError, RuntimeError, KeyError, ValueError) as e:
                    per_peer[peer.key] = {'skipped': f'{type(e).__name__}: {e}'[:400]}
                    log(f'  {peer.key}: {per_peer[peer.key]["skipped"]}')
                    continue
                per_peer[peer.key]['rounds'].append(values)
                if args.json:
                    data['serving'][workload] = per_peer
                    harness.save_json(args.json, data)
        data['serving'][workload] = per_peer
    offline_peers = [x for x in args.offline_peers.split(',') if x]
    if offline_peers:
        data['offline'] = offline(workloads, offline_peers, sizes, busy=not args.no_busy)
    if args.json:
        harness.save_json(args.json, data)
    print(report(data))
    return 0


if __name__ == '__main__':
    sys.exit(main())
