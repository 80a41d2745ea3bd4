"""The real-models benchmark's parts: its open-loop generator, the examples it serves, and its ``--quick`` run.

* The load generator (``benchmarks/real/loadgen.py``, standard library) against
  local servers whose delay is known: one that answers every request after
  exactly 50 ms (the latencies it reports are that delay), and one that
  serves one request at a time (an open-loop generator keeps sending at its
  rate, so the queue and the latency grow; a closed-loop one would report the
  service time).
* ``examples/ocr_service.py`` and ``examples/digits_service.py`` start, say
  ready, and answer right.
* ``benchmarks/real_models.py --quick`` for W2 with mpserver's native front
  and the FastAPI baseline, failure rounds and offline pools included, so the
  script cannot rot.

The last two need the workloads' packages (scikit-learn, onnxruntime,
skl2onnx, rapidocr, Pillow: ``pip install '.[real]'``, about 150 MB of wheels,
hence not in the ``test`` extra): they run with this Python if it has them,
else with the benchmark's ``base`` venv if ``python benchmarks/real_models.py
--install-only`` made it, and are skipped otherwise.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.real import loadgen  # noqa: E402

WORKLOAD_MODULES = ('sklearn', 'onnxruntime', 'skl2onnx', 'rapidocr', 'PIL')
BASE_VENV_PYTHON = os.path.join(os.path.expanduser('~'), '.cache', 'mpserver', 'real-models', 'base', 'bin', 'python')
WAIT = 120


# --- the load generator ---------------------------------------------------------------


class LocalServer:
    """An HTTP/1.1 keep-alive server on its own event loop thread: every request is
    answered ``delay`` seconds after it was read; with ``serial`` one at a time."""

    def __init__(self, delay: float, serial: bool = False) -> None:
        self.delay, self.serial = delay, serial
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        lock = asyncio.Lock()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b'\r\n\r\n')
                    length = 0
                    for line in head.split(b'\r\n'):
                        if line.lower().startswith(b'content-length:'):
                            length = int(line.split(b':')[1])
                    body = await reader.readexactly(length)
                    if self.serial:
                        async with lock:
                            await asyncio.sleep(self.delay)
                    else:
                        await asyncio.sleep(self.delay)
                    writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s' % (len(body), body))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        async def start() -> None:
            self.server = await asyncio.start_server(handle, '127.0.0.1', 0)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_loadgen_reports_a_known_delay():
    server = LocalServer(delay=0.050)
    try:
        run = loadgen.run('127.0.0.1', server.port, '/', [b'x' * 10], rate=40, seconds=1.0)
    finally:
        server.close()
    assert len(run.outcomes) == 40
    assert all(o.status == 200 and o.body == b'x' * 10 for o in run.outcomes)
    latencies = run.latencies()
    # asyncio.sleep(0.05) lasts at least 50 ms; the rest is the loopback and two event loops.
    assert 0.050 <= latencies[len(latencies) // 2] < 0.065, latencies
    assert latencies[-1] < 0.120, latencies
    # Sent on schedule: request i was due at i / 40 s, and the generator was not late.
    assert max(o.late for o in run.outcomes) < 0.02


def test_loadgen_is_open_loop_latency_counts_from_the_due_time():
    # 20 ms per request, one at a time: capacity 50/s.  At 100/s for 1 s the queue grows by
    # 50 requests per second, so the last request waits ~1 s; a closed-loop generator would
    # have slowed down to 50/s and reported ~20 ms.
    server = LocalServer(delay=0.020, serial=True)
    try:
        run = loadgen.run('127.0.0.1', server.port, '/', [b'y'], rate=100, seconds=1.0)
    finally:
        server.close()
    assert len(run.outcomes) == 100 and all(o.status == 200 for o in run.outcomes)
    first, last = run.outcomes[0].latency, run.outcomes[-1].latency
    assert first < 0.06, first
    assert 0.7 < last < 1.6, last
    assert run.wall > 1.7  # 100 requests of 20 ms, one at a time


def test_loadgen_counts_timeouts_and_refusals():
    server = LocalServer(delay=0.5)
    try:
        run = loadgen.run('127.0.0.1', server.port, '/', [b'z'], rate=20, seconds=0.25, timeout=0.1)
    finally:
        server.close()
    assert [o.error for o in run.outcomes] == [loadgen.TIMEOUT] * 5
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    run = loadgen.run('127.0.0.1', port, '/', [b'z'], rate=20, seconds=0.1)
    assert run.outcomes and all(o.error == loadgen.CONNECT for o in run.outcomes)


# --- what needs the workloads' packages -------------------------------------------------------


def workload_python() -> str:
    if all(importlib.util.find_spec(m) for m in WORKLOAD_MODULES):
        return sys.executable
    if os.path.exists(BASE_VENV_PYTHON):
        version = subprocess.run(
            [BASE_VENV_PYTHON, '-c', 'import sys; print(sys.version_info[:2])'], capture_output=True, text=True
        ).stdout.strip()
        if version != str(sys.version_info[:2]):
            pytest.skip(f'the base venv is Python {version}, this mpserver is built for {sys.version_info[:2]}')
        return BASE_VENV_PYTHON
    pytest.skip(
        f'needs {", ".join(WORKLOAD_MODULES)} (pip install ".[real]"), or the benchmark\'s base venv: '
        'python benchmarks/real_models.py --install-only'
    )


def _mpserver_only() -> str:
    """A directory holding nothing but the mpserver this test imports (a link
    to it): the base venv has the workloads' packages but not mpserver, and
    the site-packages of this interpreter would bring everything else too."""
    import tempfile

    import mpserver

    home = tempfile.mkdtemp(prefix='mpserver-only-')
    atexit.register(shutil.rmtree, home, True)
    os.symlink(os.path.dirname(os.path.abspath(mpserver.__file__)), os.path.join(home, 'mpserver'))
    return home


MPSERVER_ONLY = _mpserver_only()


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop('PYTHONSAFEPATH', None)
    paths = [ROOT, os.path.join(ROOT, 'examples'), MPSERVER_ONLY]
    env['PYTHONPATH'] = os.pathsep.join([*paths, *(p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p)])
    env.update({'OMP_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def samples(python: str, workload: str) -> tuple[bytes, object]:
    """One request body and its expected answer, made by ``benchmarks/real/work.py`` with ``python``."""
    code = (
        'import base64, json; from benchmarks.real import work\n'
        "if WORKLOAD == 'ocr':\n"
        '    body, want = work.ocr_samples(1)[0]\n'
        'else:\n'
        '    body = work.digits_bodies(1)[0]; want = work.digits_expected([body])[0]\n'
        'print(json.dumps([base64.b64encode(body).decode(), want]))\n'
    ).replace('WORKLOAD', repr(workload))
    out = subprocess.run(
        [python, '-c', code], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=WAIT, check=True
    )
    import base64

    body, want = json.loads(out.stdout.strip().splitlines()[-1])
    return base64.b64decode(body), want


def serve_example(python: str, script: str, body: bytes) -> tuple[int, bytes, str]:
    port = free_port()
    proc = subprocess.Popen(
        [python, os.path.join(ROOT, 'examples', script), '--port', str(port)],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + WAIT
        while True:
            assert proc.poll() is None, proc.stdout.read().decode(errors='replace')[-2000:]
            try:
                with urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, 'not ready'
            time.sleep(0.2)
        req = urllib.request.Request(f'http://127.0.0.1:{port}/', data=body, method='POST')
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            return r.status, r.read(), r.headers['Content-Type']
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_digits_example_answers_the_models_label():
    python = workload_python()
    body, want = samples(python, 'digits')
    status, data, ctype = serve_example(python, 'digits_service.py', body)
    assert status == 200 and ctype.startswith('application/json')
    assert json.loads(data) == {'label': want}


def test_ocr_example_reads_the_text_that_was_drawn():
    python = workload_python()
    body, want = samples(python, 'ocr')
    status, data, ctype = serve_example(python, 'ocr_service.py', body)
    assert status == 200 and ctype.startswith('text/plain')
    got = data.decode().strip().split('\n')
    assert [''.join(x.split()).upper() for x in got] == [''.join(x.split()).upper() for x in want.split('\n')]


@pytest.mark.timeout(400)
def test_quick_run_serves_digits_with_two_peers_and_reports_them():
    python = workload_python()
    argv = [python, os.path.join(ROOT, 'benchmarks', 'real_models.py'), '--quick', '--python', 'current']
    argv += ['--peers', 'mpserver-native,fastapi', '--workloads', 'digits']
    argv += ['--offline-peers', 'mpserver,Pool.imap', '--no-busy']
    proc = subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert 'smoke run' in out and '### digits over HTTP' in out, out
    assert 'skipped' not in out, out + proc.stderr[-3000:]
    for row in ('goodput at the p99 target', 'maximum throughput', "PSS of the server's processes", '(a) kill -9'):
        assert row in out, out
    assert '| mpserver |' in out and '| Pool.imap |' in out, out
