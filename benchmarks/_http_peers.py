"""The servers ``serving.py`` measures, and the load it puts on them.

:class:`Peer` says how to start one HTTP front (:data:`PEERS`);
:class:`Running` is one started server tree, from its start in a session of
its own to its stop (SIGTERM, then SIGKILL to everything it started);
:func:`wrk` runs the load generator with ``http_wrk.lua``, and
:func:`measure` is one measurement at a number of connections: requests/s,
latency, the CPU share of the front process and of the whole tree, and the
cores other processes kept busy meanwhile (``harness.OtherLoad``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import harness
from harness import ROOT, alive, comm, cpu_seconds, descendants, log

from benchmarks import _http_models as models

LUA = os.path.join(harness.HERE, 'http_wrk.lua')
HOST = '127.0.0.1'
CAPACITY = 1024
CONNECTIONS = (1, 32, 256)
WARMUP_SECONDS = 1
WARMUP_CONNECTIONS = 32
READY_TIMEOUT = 60.0
STOP_GRACE = 10.0
WRK_TIMEOUT = '10s'  # per request; wrk's default (2 s) would count slow fronts at 256 connections as errors
BODY = b'0123456789abcdef0123456789abcdef'


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


class NotServing(RuntimeError):
    """A server exited, or did not answer, before it was ready."""


# --- one server -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_env(loops: int) -> dict[str, str]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([ROOT, *filter(None, env.get('PYTHONPATH', '').split(os.pathsep))])
    env[harness.LOOPS_ENV] = str(loops)
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
            log(f'  {self.peer.key}: SIGKILL to {len(leftovers)} process(es) still alive after {STOP_GRACE:.0f} s')
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
    front0 = cpu_seconds(server.front)
    # Not other processes: the server tree (live) and wrk (a reaped child, in own_cpu_seconds).
    with harness.OtherLoad(ours=server.tree_cpu) as load:
        out = wrk(server.url, connections, seconds, service_time=cpu_model)
    front1 = cpu_seconds(server.front)
    rps = out['requests'] / (out['duration_us'] / 1e6)
    lat = out['latency_us']
    values = {
        'rps': rps,
        'p50_ms': lat['p50'] / 1e3,
        'p99_ms': lat['p99'] / 1e3,
        'front_cpu': (front1 - front0) / load.wall,
        'tree_cpu': load.ours / load.wall,
        'other_cores': load.cores,
        'errors': float(sum(out['errors'].values())),
    }
    if cpu_model and out['service_count']:
        service = out['service_sum'] / out['service_count']
        values['service_ms'] = service * 1e3
        values['capacity'] = rps / (models.workers('cpu') / service)
    return values
