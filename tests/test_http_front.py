"""The native HTTP front (Server.start_http / serve_http, python -m mpserver serve).

mpserver only: mpservice has no HTTP front of its own (its ASGI path is
tested in test_http_asgi.py on both backends).  Real sockets on 127.0.0.1,
a real HTTP client (httpx), real worker processes.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip('httpx')
parser = pytest.importorskip('prometheus_client.parser')

import _front_workers as fw  # noqa: E402
import mpserver  # noqa: E402
from mpserver import (  # noqa: E402
    ConfigError,
    EnsembleServlet,
    HttpRoute,
    ProcessServlet,
    SequentialServlet,
    Server,
    SwitchServlet,
    ThreadServlet,
)

TESTS = Path(__file__).resolve().parent
# The mpserver that is imported (an installed one, or the source tree with a
# built core), and the tests, for subprocesses.
PYTHONPATH = os.pathsep.join([str(Path(mpserver.__file__).resolve().parent.parent), str(TESTS.parent)])


class Either(SwitchServlet):
    def switch(self, x: object) -> int:
        return 0


def post(svc: mpserver.HttpService, body: bytes, path: str = '/', **kw: object) -> httpx.Response:
    return httpx.post(svc.url + path, content=body, timeout=30, **kw)


@pytest.fixture(scope='module')
def echo():
    """One server for the plain request/response tests."""
    server = Server(ProcessServlet(fw.Echo, cpus=[0]), capacity=256)
    svc = server.start_http(port=0, timeout=20)
    yield svc
    svc.stop()


# ------------------------------------------------------------------ responses


def test_bytes_come_back_as_they_are(echo):
    r = post(echo, b'\x00\xffraw bytes')
    assert r.status_code == 200
    assert r.headers['content-type'] == 'application/octet-stream'
    assert r.content == b'\x00\xffraw bytes'
    assert r.headers['server'] == 'mpserver'


def test_empty_body(echo):
    r = post(echo, b'')
    assert (r.status_code, r.content) == (200, b'')


def test_str_is_utf8_text_and_other_values_json(echo):
    r = post(echo, b'text')
    assert (r.status_code, r.headers['content-type'], r.text) == (200, 'text/plain; charset=utf-8', 'héllo')
    r = post(echo, b'json')
    assert r.headers['content-type'] == 'application/json'
    assert r.json() == {'a': [1, 2], 'b': None, 'c': 'é'}
    assert post(echo, b'number').json() == 42


def test_encoding_happens_in_the_worker_process(echo):
    assert int(post(echo, b'pid').text) != os.getpid()


def test_worker_exception_is_a_500_with_its_type_and_message(echo):
    r = post(echo, b'boom')
    assert r.status_code == 500
    assert r.json() == {'error': 'ValueError', 'message': 'boom!'}  # no traceback without debug


def test_a_result_that_is_not_json_is_a_500(echo):
    r = post(echo, b'object')
    assert r.status_code == 500
    body = r.json()
    assert body['error'] == 'TypeError' and 'JSON' in body['message']


def test_unknown_path_wrong_method(echo):
    r = httpx.post(echo.url + '/nowhere', content=b'x')
    assert r.status_code == 404 and r.json()['error'] == 'NotFound'
    r = httpx.get(echo.url + '/')
    assert r.status_code == 405 and r.headers['allow'] == 'POST'
    r = httpx.post(echo.url + '/healthz')
    assert r.status_code == 405 and r.headers['allow'] == 'GET'


def test_query_string_does_not_change_the_route(echo):
    assert post(echo, b'q', '/?a=1').content == b'q'


def test_keep_alive_reuses_one_connection(echo):
    before = echo.counts()['accepted']
    with httpx.Client(base_url=echo.url) as c:
        for i in range(50):
            assert c.post('/', content=str(i).encode()).content == str(i).encode()
    assert echo.counts()['accepted'] == before + 1


def test_concurrent_clients_each_get_their_own_answer(echo):
    def one(i: int) -> bytes:
        with httpx.Client(base_url=echo.url) as c:
            return b''.join(c.post('/', content=f'{i}-{k};'.encode()).content for k in range(20))

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        got = list(pool.map(one, range(64)))
    assert got == [b''.join(f'{i}-{k};'.encode() for k in range(20)) for i in range(64)]


def test_large_bodies_pass_through_the_rings(echo):
    body = os.urandom(3 << 20)  # several frames of the entry ring: the pusher thread's path
    r = post(echo, body)
    assert r.status_code == 200 and r.content == body


# ------------------------------------------------------------------ operations


def test_healthz_readyz_metrics(echo):
    assert httpx.get(echo.url + '/healthz').text == 'ok\n'
    r = httpx.get(echo.url + '/readyz')
    assert (r.status_code, r.text) == (200, 'ready\n')
    for _ in range(3):
        post(echo, b'm')
    r = httpx.get(echo.url + '/metrics')
    assert r.status_code == 200 and r.headers['content-type'].startswith('text/plain; version=0.0.4')
    families = {f.name: f for f in parser.text_string_to_metric_families(r.text)}
    admitted = families['mpserver_requests_admitted'].samples[0].value
    assert admitted >= 3
    workers = [s for s in families['mpserver_worker_items_in'].samples if s.name.endswith('_total')]
    assert {s.labels['worker'] for s in workers} == {'Echo-process-0'}
    # The same numbers mpserver.metrics gives from Server.stats() (the C++ text mirrors it).
    stats = echo.server.stats()
    assert stats.admitted >= admitted


# ------------------------------------------------------------------ trees and routes


def test_a_pipeline_answers_from_its_last_stage():
    servlet = SequentialServlet(ProcessServlet(fw.Upper), ThreadServlet(fw.Upper), ProcessServlet(fw.Tag))
    with Server(servlet).start_http(port=0) as svc:
        assert post(svc, b'abc').json() == {'tagged': 'ABC'}
        r = post(svc, b'fail-first')  # an upstream error, encoded by the last stage
        assert r.status_code == 500 and r.json()['error'] == 'KeyError'


def test_a_thread_servlet_answers_too():
    with Server(ThreadServlet(fw.Echo)).start_http(port=0) as svc:
        assert post(svc, b'json').json()['a'] == [1, 2]
        assert post(svc, b'boom').status_code == 500


def test_batches_form_from_http_requests():
    with Server(ProcessServlet(fw.Sum)).start_http(port=0) as svc:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda i: post(svc, str(i).encode()).json(), range(32)))
    assert [g['body'] for g in got] == [str(i) for i in range(32)]
    assert max(g['batch'] for g in got) > 1


def test_routes_to_the_members_of_a_top_switch():
    sw = Either(ProcessServlet(fw.Echo), ThreadServlet(fw.Upper), ProcessServlet(fw.Info))
    server = Server(sw)
    routes = {'/echo': 0, '/upper': sw._servlets[1], '/info': HttpRoute(2, request=True), '/': None}
    with server.start_http(port=0, routes=routes) as svc:
        assert post(svc, b'abc', '/echo').content == b'abc'
        assert post(svc, b'abc', '/upper').content == b'ABC'
        assert post(svc, b'via switch', '/').content == b'via switch'  # the switch decides
        r = httpx.put(svc.url + '/info?x=1&y=2', content=b'{"k": 1}', headers={'X-Thing': 'a b'})
        info = r.json()
        assert info['method'] == 'PUT' and info['path'] == '/info' and info['query'] == 'x=1&y=2'
        assert info['headers']['x-thing'] == 'a b' and info['body'] == '{"k": 1}' and info['type'] == 'bytes'
        assert httpx.get(svc.url + '/info').json()['method'] == 'GET'  # whole-request routes take any method
        # Server.call still works next to the front.
        assert server.call(b'direct') == b'direct'


def test_whole_requests_for_the_default_route():
    with Server(ProcessServlet(fw.Info)).start_http(port=0, request=True) as svc:
        info = httpx.patch(svc.url + '/', content=b'x').json()
        assert info['method'] == 'PATCH' and info['body'] == 'x'


@pytest.mark.parametrize(
    'make, routes, message',
    [
        (lambda: ProcessServlet(fw.Echo), {'/a': 0}, 'not a SwitchServlet'),
        (lambda: Either(ProcessServlet(fw.Echo)), {'/a': 3}, 'no member 3'),
        (lambda: ProcessServlet(fw.Echo), {'/metrics': None}, 'cannot be a route'),
        (lambda: ProcessServlet(fw.Echo), {'a': None}, "starts with '/'"),
        (lambda: ProcessServlet(fw.Echo), {}, 'non-empty mapping'),
        (lambda: EnsembleServlet(ThreadServlet(fw.Echo), ThreadServlet(fw.Echo)), None, 'end it with'),
        (
            lambda: SequentialServlet(ThreadServlet(fw.Echo), ProcessServlet(fw.Echo)),
            {'/first': ThreadServlet(fw.Echo)},
            'results are not final',
        ),
    ],
)
def test_bad_routes_are_refused_before_anything_starts(make, routes, message):
    server = Server(make())
    with pytest.raises((ConfigError, ValueError), match=message):
        server.start_http(port=0, routes=routes)
    assert server._state == 'new'


def test_a_port_in_use_is_an_oserror():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        s.listen()
        with pytest.raises(OSError, match='cannot listen'):
            Server(ProcessServlet(fw.Echo)).start_http(port=s.getsockname()[1])


# ------------------------------------------------------------------ capacity, time, failures


def test_a_full_backlog_is_a_503_with_retry_after():
    with Server(ProcessServlet(fw.Echo), capacity=2).start_http(port=0, retry_after=3) as svc:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda _: post(svc, b'sleep:1.0'), range(8)))
        codes = sorted(r.status_code for r in got)
        assert codes.count(200) >= 2 and 503 in codes
        refused = [r for r in got if r.status_code == 503]
        assert all(r.headers['retry-after'] == '3' and r.json()['error'] == 'ServerBacklogFull' for r in refused)
        assert svc.server.stats().rejected == len(refused)


def test_a_request_past_its_timeout_is_a_504_and_its_late_result_is_dropped():
    with Server(ProcessServlet(fw.Echo)).start_http(port=0, timeout=0.5) as svc:
        r = post(svc, b'sleep:2')
        assert r.status_code == 504 and r.json()['error'] == 'TimeoutError'
        deadline = time.monotonic() + 10
        while svc.server.backlog and time.monotonic() < deadline:  # the slot is freed when the late result comes
            time.sleep(0.05)
        stats = svc.server.stats()
        assert svc.server.backlog == 0 and stats.timed_out == 1 and stats.late == 1
        assert post(svc, b'after').content == b'after'


def test_a_worker_killed_mid_request_is_a_502_and_serving_goes_on():
    with Server(ProcessServlet(fw.Echo)).start_http(port=0) as svc:
        pid = int(post(svc, b'pid').text)
        r = post(svc, b'die')
        assert r.status_code == 502
        body = r.json()
        assert body['error'] == 'WorkerCrashedError'
        assert f'(pid {pid})' in body['message'] and 'SIGKILL' in body['message']
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the guardian restarts the worker
            r = post(svc, b'again')
            if r.status_code == 200:
                break
            time.sleep(0.1)
        assert r.content == b'again'
        assert int(post(svc, b'pid').text) != pid


def test_readyz_is_503_while_starting_and_after_a_servlet_lost_its_workers(monkeypatch):
    monkeypatch.setenv('MPSERVER_TEST_SLOW_START', '2')
    server = Server(ProcessServlet(fw.SlowStart), capacity=4)
    box: dict[str, object] = {}
    started = threading.Thread(target=lambda: box.update(svc=server.start_http(port=0, timeout=10)))
    before = _listening_ports()
    started.start()
    deadline = time.monotonic() + 30
    port = None
    while port is None and time.monotonic() < deadline:  # the front listens before the workers are up
        new = _listening_ports() - before
        port = min(new) if new else None
        time.sleep(0.01)
    assert port is not None
    url = f'http://127.0.0.1:{port}'
    early = httpx.get(url + '/readyz', timeout=5)
    early_post = httpx.post(url + '/', content=b'x', timeout=5)
    started.join(30)
    svc = box['svc']
    try:
        assert early.status_code == 503
        assert early_post.status_code in (200, 503)  # 503 + Retry-After unless the workers came up in between
        if early_post.status_code == 503:
            assert 'retry-after' in early_post.headers
        assert httpx.get(url + '/readyz').status_code == 200
    finally:
        svc.stop()  # type: ignore[attr-defined]

    server = Server(ProcessServlet(fw.Echo, max_restarts=0))
    with server.start_http(port=0) as svc:
        assert httpx.get(svc.url + '/readyz').status_code == 200
        assert post(svc, b'die').status_code == 502
        deadline = time.monotonic() + 20
        while httpx.get(svc.url + '/readyz').status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        r = httpx.get(svc.url + '/readyz')
        assert (r.status_code, r.text) == (503, 'not ready\n')
        assert httpx.get(svc.url + '/healthz').status_code == 200  # the process still serves
        assert post(svc, b'x').status_code in (502, 503)  # no worker left to answer


def _listening_ports() -> set[int]:
    """The TCP ports this process listens on (to find a front before it is attached)."""
    inodes = set()
    for fd in os.listdir('/proc/self/fd'):
        try:
            link = os.readlink(f'/proc/self/fd/{fd}')
        except OSError:
            continue
        if link.startswith('socket:['):
            inodes.add(link[8:-1])
    ports = set()
    with open('/proc/net/tcp') as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[3] == '0A' and cols[9] in inodes:  # LISTEN
                ports.add(int(cols[1].split(':')[1], 16))
    return ports


def test_stopping_the_server_stops_its_front():
    with Server(ProcessServlet(fw.Echo)) as server:
        svc = server.start_http(port=0)
        assert post(svc, b'a').content == b'a'
    assert svc.stopped
    with pytest.raises(httpx.TransportError):
        httpx.post(svc.url + '/', content=b'a', timeout=2)


def test_access_log_goes_through_logging():
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    log = logging.getLogger('mpserver.access')
    handler = Keep()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with Server(ProcessServlet(fw.Echo)).start_http(port=0, access_log=True) as svc:
            post(svc, b'a', '/?q=1')
            httpx.get(svc.url + '/nowhere')
            deadline = time.monotonic() + 10
            while len(seen) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        log.removeHandler(handler)
        log.setLevel(logging.NOTSET)
    assert seen[0].startswith('POST /?q=1 200 ') and seen[1].startswith('GET /nowhere 404 ')


def test_debug_puts_the_traceback_in_error_responses(monkeypatch):
    monkeypatch.setenv('MPSERVER_HTTP_TRACEBACKS', '1')
    with Server(ProcessServlet(fw.Echo)).start_http(port=0) as svc:
        body = post(svc, b'boom').json()
    assert body['error'] == 'ValueError' and 'Traceback' in body['traceback'] and 'boom!' in body['traceback']


# ------------------------------------------------------------------ serve_http and the CLI


def _serve(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Starts ``python -m mpserver serve ...`` on a free port; returns it and its URL once it serves."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=PYTHONPATH)
    proc = subprocess.Popen(
        [sys.executable, '-m', 'mpserver', 'serve', *args, '--port', str(port)],
        env=env,
        cwd=TESTS.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f'http://127.0.0.1:{port}'
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f'serve exited with {proc.returncode}: {proc.stdout.read()}')  # type: ignore[union-attr]
        try:
            if httpx.get(url + '/readyz', timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError('serve did not become ready')


def test_cli_serves_a_servlet_and_drains_on_sigterm():
    proc, url = _serve('tests._front_workers:echo_servlet', '--capacity', '16')
    try:
        assert httpx.post(url + '/', content=b'cli').content == b'cli'
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(httpx.post, url + '/', content=b'sleep:1.5', timeout=30) for _ in range(6)]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # all six admitted before the signal
                m = httpx.get(url + '/metrics').text
                if 'mpserver_backlog 6.0' in m:
                    break
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            got = [f.result() for f in futures]
        assert [(r.status_code, r.content) for r in got] == [(200, b'slept')] * 6  # none lost
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert 'draining' in out
        with pytest.raises(httpx.TransportError):
            httpx.get(url + '/healthz', timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_serves_a_mapping_of_routes():
    proc, url = _serve('tests._front_workers:routes')
    try:
        assert httpx.post(url + '/echo', content=b'abc').content == b'abc'
        assert httpx.post(url + '/upper', content=b'abc').content == b'ABC'
        assert httpx.post(url + '/', content=b'abc').status_code == 404
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize(
    'target, message',
    [
        ('nocolon', 'expected MODULE:ATTR'),
        ('tests._front_workers:missing', 'has no attribute'),
        ('no_such_module_here:x', 'cannot import'),
        ('tests._front_workers:Echo', 'is a Worker class'),
        ('tests._front_workers:TESTS_CONSTANT', 'not a servlet'),
    ],
)
def test_cli_refuses_what_is_not_a_servlet(target, message):
    env = dict(os.environ, PYTHONPATH=PYTHONPATH)
    r = subprocess.run(
        [sys.executable, '-m', 'mpserver', 'serve', target],
        env=env,
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_serve_http_returns_on_stop_http():
    server = Server(ProcessServlet(fw.Echo))
    t = threading.Thread(target=server.serve_http, kwargs={'port': 0})
    t.start()
    deadline = time.monotonic() + 30
    while (server._run is None or not server._run.fronts) and time.monotonic() < deadline:
        time.sleep(0.02)
    (svc,) = server._run.fronts
    assert post(svc, b'x').content == b'x'
    server.stop_http()
    t.join(30)
    assert not t.is_alive() and svc.stopped and server._state != 'running'


def test_json_of_every_status_is_an_object(echo):
    # Every error the front makes itself is {"error", "message"} JSON.
    for r in (httpx.post(echo.url + '/x', content=b''), httpx.get(echo.url + '/')):
        assert set(json.loads(r.content)) == {'error', 'message'}


def test_a_forked_child_cannot_touch_its_parents_front(echo):
    pid = os.fork()
    if pid == 0:  # the child: its copy of the front is the parent's, not its own
        code = 1
        try:
            echo.counts()
        except RuntimeError as e:
            code = 0 if 'process' in str(e) else 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert post(echo, b'still').content == b'still'
