"""The ASGI path: ``start_server``/``stop_server`` serving a Starlette app with an
AsyncServer in its lifespan, over real HTTP (uvicorn on 127.0.0.1, httpx clients).

The in-process tests run on both backends (``mpservice.http`` with mpservice's
AsyncServer, ``mpserver.http`` with mpserver's): ``start_server`` runs in a
thread, on a listening socket the test bound to port 0 and hands over as
``fd=``.  The subprocess tests (mpserver only) run ``examples/asgi_app.py``,
an mpservice HTTP script unchanged through ``python -m mpserver``, and
``workers > 1``, with the imported mpserver's package home on PYTHONPATH.
No test asserts on timing; waits are bounded generously.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import mpserver
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPTS = os.path.join(HERE, 'porting_scripts')
HOME = os.path.dirname(os.path.dirname(os.path.abspath(mpserver.__file__)))
#: Bound on every wait (start-up, a request, shut-down); only catches hangs.
WAIT = 90


def http_module(backend):
    return importlib.import_module('mpservice.http' if backend.name == 'mpservice' else 'mpserver.http')


def make_app(backend, http, servlet):
    """A Starlette app whose lifespan runs an AsyncServer over ``servlet``; and its state."""
    state = {'context': 'unset', 'closed': False, 'inflight': 0}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state['context'] = app.worker_context
        async with backend.AsyncServer(servlet) as model:
            yield {'model': model}
        state['closed'] = True

    async def predict(request):
        x = (await request.json())['x']
        state['inflight'] += 1
        try:
            y = await request.state.model.call(x)
        except ValueError as e:  # the app's choice: a worker's ValueError is a 500 with its message
            return JSONResponse({'error': str(e), 'remote': backend.is_remote_exception(e)}, status_code=500)
        finally:
            state['inflight'] -= 1
        return JSONResponse({'y': y})

    async def inflight(request):
        return JSONResponse(state['inflight'])

    async def health(request):
        return PlainTextResponse('ok')

    async def stop(request):
        await http.stop_server()
        return PlainTextResponse('stopping')

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route('/predict', predict, methods=['POST']),
            Route('/inflight', inflight),
            Route('/health', health),
            Route('/stop', stop, methods=['POST']),
        ],
    )
    return app, state


def wait_ready(url, alive=lambda: True, timeout=WAIT):
    """Poll ``GET url/health`` until it answers 200 (while ``alive()``)."""
    deadline = time.monotonic() + timeout
    while True:
        assert alive(), 'the server ended before it answered'
        try:
            if httpx.get(f'{url}/health', timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f'{url} did not answer within {timeout} s'
        time.sleep(0.1)


class Serving:
    """``http.start_server(app, fd=<a socket on 127.0.0.1:0>, **kwargs)`` in a thread."""

    def __init__(self, http, app, **kwargs):
        self.http = http
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(128)
        self.url = f'http://127.0.0.1:{self.sock.getsockname()[1]}'
        self.error = None
        self.returned = False
        self.thread = threading.Thread(target=self._run, args=(app,), kwargs=kwargs, daemon=True)

    def _run(self, app, **kwargs):
        try:
            self.http.start_server(app, fd=self.sock.fileno(), **kwargs)
            self.returned = True
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            # Without its traceback: its frames would keep mpservice's server
            # object, hence its registration under the server_id, alive.
            self.error = e.with_traceback(None)

    def __enter__(self):
        self.thread.start()
        return self

    def wait_ready(self):
        wait_ready(self.url, self.thread.is_alive)

    def join(self):
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), 'start_server did not return'

    def __exit__(self, *exc):
        if self.thread.is_alive():
            asyncio.run(self.http.stop_server())
            self.join()
        self.sock.close()


# -- both backends, in process ------------------------------------------------------------


def test_start_stop_lifecycle_and_worker_context(backend):
    http = http_module(backend)
    app, state = make_app(backend, http, backend.ProcessServlet(backend.w.FailOn))
    with Serving(http, app, worker_contexts=[{'model': 'v1'}]) as s:
        s.wait_ready()
        assert state['context'] == {'model': 'v1'}  # set before the lifespan ran
        r = httpx.post(f'{s.url}/predict', json={'x': 4}, timeout=WAIT)
        assert (r.status_code, r.json()) == (200, {'y': 40})
        assert not state['closed']
        r = httpx.post(f'{s.url}/stop', timeout=WAIT)
        assert (r.status_code, r.text) == (200, 'stopping')  # the stopping request is answered
        s.join()
    assert s.returned and s.error is None
    assert state['closed']  # the lifespan's exit ran: the AsyncServer is closed
    with pytest.raises(httpx.TransportError):
        httpx.post(f'{s.url}/predict', json={'x': 4}, timeout=5)


def test_stop_server_from_another_thread(backend):
    http = http_module(backend)
    app, state = make_app(backend, http, backend.ThreadServlet(backend.w.FailOn))
    with Serving(http, app) as s:
        s.wait_ready()
        asyncio.run(http.stop_server())
        s.join()
    assert s.returned and state['closed']


def test_stop_server_with_unknown_id_does_nothing(backend):
    http = http_module(backend)
    app, _ = make_app(backend, http, backend.ThreadServlet(backend.w.FailOn))
    with Serving(http, app) as s:
        s.wait_ready()
        asyncio.run(http.stop_server('no-such-server'))
        r = httpx.post(f'{s.url}/predict', json={'x': 1}, timeout=WAIT)
        assert r.json() == {'y': 10}
    assert s.returned


def test_concurrent_requests(backend):
    """Many requests in flight at once through one AsyncServer; each gets its own answer."""
    http = http_module(backend)
    app, _ = make_app(backend, http, backend.ProcessServlet(backend.w.FailOn, cpus=2))

    async def client(url):
        async with httpx.AsyncClient(timeout=WAIT, limits=httpx.Limits(max_connections=32)) as c:
            rs = await asyncio.gather(*(c.post(f'{url}/predict', json={'x': i}) for i in range(100) if i != 3))
        return [(r.status_code, r.json()) for r in rs]

    with Serving(http, app) as s:
        s.wait_ready()
        got = asyncio.run(client(s.url))
    assert got == [(200, {'y': 10 * i}) for i in range(100) if i != 3]


def test_requests_are_in_flight_together(backend, tmp_path):
    """The loop keeps accepting while the workers compute: 8 requests held at
    a gate are all inside the app at once, then all complete."""
    http = http_module(backend)
    app, _ = make_app(backend, http, backend.ThreadServlet(backend.w.Gate, num_threads=8))
    gate = str(tmp_path / 'open')

    async def client(url):
        async with httpx.AsyncClient(timeout=WAIT) as c:
            calls = [asyncio.ensure_future(c.post(f'{url}/predict', json={'x': [gate, i]})) for i in range(8)]
            deadline = time.monotonic() + WAIT
            while (await c.get(f'{url}/inflight')).json() < 8:
                assert time.monotonic() < deadline, 'the 8 requests never were in flight together'
                await asyncio.sleep(0.05)
            open(gate, 'w').close()
            return [(await call).json() for call in calls]

    with Serving(http, app) as s:
        s.wait_ready()
        assert asyncio.run(client(s.url)) == [{'y': i} for i in range(8)]


def test_worker_exception_becomes_the_apps_response(backend):
    http = http_module(backend)
    app, _ = make_app(backend, http, backend.ProcessServlet(backend.w.FailOn))
    with Serving(http, app) as s:
        s.wait_ready()
        r = httpx.post(f'{s.url}/predict', json={'x': 3}, timeout=WAIT)
        assert r.status_code == 500
        assert r.json() == {'error': 'refusing to process 3', 'remote': True}
        # An exception the app does not handle (a CustomError): Starlette's plain 500.
        r = httpx.post(f'{s.url}/predict', json={'x': 'custom'}, timeout=WAIT)
        assert (r.status_code, r.text) == (500, 'Internal Server Error')
        # The service goes on.
        r = httpx.post(f'{s.url}/predict', json={'x': 5}, timeout=WAIT)
        assert (r.status_code, r.json()) == (200, {'y': 50})
    assert s.returned


def test_lifespan_failure_exits_with_startup_failure(backend):
    http = http_module(backend)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with backend.AsyncServer(backend.ProcessServlet(backend.w.InitFail)) as model:
            yield {'model': model}

    app = Starlette(lifespan=lifespan)
    with Serving(http, app) as s:
        s.join()
    assert isinstance(s.error, SystemExit) and s.error.code == 3, s.error


def test_serving_the_same_app_object_again(backend):
    """mpserver serves an app object again after its server stopped
    (mpservice 0.16.8 asserts that the app never had a ``worker_context``)."""
    http = http_module(backend)
    app, state = make_app(backend, http, backend.ThreadServlet(backend.w.FailOn))
    with Serving(http, app, worker_contexts=['first']) as s:
        s.wait_ready()
        assert state['context'] == 'first'
    assert s.returned
    with Serving(http, app, worker_contexts=['second']) as s:
        if backend.name == 'mpservice':
            s.join()
            assert isinstance(s.error, AssertionError)
        else:
            s.wait_ready()
            assert state['context'] == 'second'
    assert s.returned == (backend.name == 'mpserver')


# -- mpserver.http only ---------------------------------------------------------------------


def test_mpserver_does_not_import_the_http_stack():
    code = (
        'import sys, mpserver\n'
        'print(sorted(m for m in sys.modules if m.split(".")[0] in ("uvicorn", "starlette", "httpx")'
        ' or m == "mpserver.http"))\n'
    )
    proc = run_python('-c', code)
    assert (proc.returncode, proc.stdout) == (0, '[]\n'), proc.stderr


def test_missing_uvicorn_names_the_extra():
    code = 'import sys\nsys.modules["uvicorn"] = None\nimport mpserver.http\n'
    proc = run_python('-c', code)
    assert proc.returncode == 1
    assert 'ImportError: mpserver.http needs uvicorn' in proc.stderr
    assert "pip install 'mpserver[http]'" in proc.stderr


def test_argument_errors():
    from mpserver import http

    with pytest.raises(ValueError, match='log_config'):
        http.start_server('m:app', log_config={'version': 1})
    with pytest.raises(ValueError, match='workers'):
        http.start_server('m:app', workers=0)
    with pytest.raises(TypeError, match='import string'):
        http.start_server(Starlette(), workers=2)
    with pytest.raises(ValueError, match='worker_contexts'):
        http.start_server('m:app', workers=2, worker_contexts=[1])
    asyncio.run(http.stop_server('never-started'))  # nothing to stop: no error


def test_second_server_with_the_same_id_is_refused():
    import _backends
    from mpserver import http

    b = _backends.BACKENDS['mpserver']
    app, _ = make_app(b, http, b.ThreadServlet(b.w.FailOn))
    other, _ = make_app(b, http, b.ThreadServlet(b.w.FailOn))
    with Serving(http, app) as first:
        first.wait_ready()
        with Serving(http, other) as second:
            second.join()
        assert isinstance(second.error, RuntimeError) and "server_id '0'" in str(second.error)
        assert httpx.get(f'{first.url}/health', timeout=WAIT).status_code == 200
        with Serving(http, other, server_id='other') as third:
            third.wait_ready()
            asyncio.run(http.stop_server('other'))
            third.join()
        assert third.returned
        assert httpx.get(f'{first.url}/health', timeout=WAIT).status_code == 200
    assert first.returned


def test_make_server_and_run_app_of_mpservice_012():
    """mpservice <= 0.14's make_server (a uvicorn.Server, stopped by should_exit) and
    0.12's run_app (make_server(...).run())."""
    from mpserver import http

    assert {'make_server', 'run_app'} <= set(http.__all__)

    async def hello(request):
        return PlainTextResponse('hello')

    async def stop(request):
        server.should_exit = True
        return PlainTextResponse('stopping')

    app = Starlette(routes=[Route('/', hello), Route('/stop', stop, methods=['POST'])])
    for run in ('make_server', 'run_app'):
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            sock.listen(16)
            url = f'http://127.0.0.1:{sock.getsockname()[1]}'
            if run == 'make_server':
                server = http.make_server(app, fd=sock.fileno(), log_config=None)
                assert server.config.backlog == 128 and server.config.access_log is False
                thread = threading.Thread(target=server.run)
            else:  # uvicorn stops it after one request
                kwargs = dict(fd=sock.fileno(), log_config=None, limit_max_requests=1)
                thread = threading.Thread(target=http.run_app, args=(app,), kwargs=kwargs)
            thread.start()
            deadline = time.monotonic() + WAIT
            while True:
                try:
                    assert httpx.get(url, timeout=5).text == 'hello'
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            if run == 'make_server':
                assert httpx.post(f'{url}/stop', timeout=WAIT).text == 'stopping'
            thread.join(WAIT)
            assert not thread.is_alive(), f'{run} did not stop'


# -- subprocesses: the example, porting unchanged, workers > 1 -----------------------------------


def child_env():
    env = dict(os.environ)
    for name in ('MPSERVER_INSTALL', 'PYTHONSAFEPATH'):
        env.pop(name, None)
    env['PYTHONPATH'] = os.pathsep.join([HOME, *(p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p)])
    return env


def run_python(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=WAIT
    )


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def service(*args, cwd):
    """``sys.executable *args`` (a service on a free port, given as ``{port}``), until it exits."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, *(a.format(port=port) for a in args)],
        cwd=cwd,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f'http://127.0.0.1:{port}'
        try:
            wait_answering(url, proc)
        except AssertionError:
            proc.kill()
            out, err = proc.communicate(timeout=WAIT)
            raise AssertionError(f'the service did not come up\n--- stdout\n{out}--- stderr\n{err}') from None
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT)


def wait_answering(url, proc):
    """Until ``GET url/health`` gets any HTTP answer (the example answers it with a 404)."""
    deadline = time.monotonic() + WAIT
    while True:
        assert proc.poll() is None, 'the service exited'
        try:
            httpx.get(f'{url}/health', timeout=5)
            return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)


def finish(proc):
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    return out


def test_the_asgi_example_serves_a_request(tmp_path):
    with service(os.path.join(ROOT, 'examples', 'asgi_app.py'), '--port', '{port}', cwd=str(tmp_path)) as (url, proc):
        r = httpx.post(f'{url}/predict', json={'text': 'hello'}, timeout=WAIT)
        h = b'hello'
        for _ in range(1000):
            h = hashlib.sha256(h).digest()
        assert (r.status_code, r.json()) == (200, {'digest': h.hex()[:16]})
        r = httpx.post(f'{url}/predict', json={'text': ''}, timeout=WAIT)
        assert (r.status_code, r.json()) == (400, {'error': '"text" must be a non-empty string'})
        assert httpx.post(f'{url}/stop', timeout=WAIT).status_code == 200
        assert finish(proc) == 'stopped\n'


def exercise_http_service(url, proc):
    r = httpx.post(f'{url}/predict', json={'x': 2}, timeout=WAIT)
    assert r.status_code == 200, r.text
    answer = r.json()
    r = httpx.post(f'{url}/predict', json={'x': 3}, timeout=WAIT)
    assert (r.status_code, r.json()) == (500, {'error': 'refusing to process 3'})
    assert httpx.post(f'{url}/stop', timeout=WAIT).text == 'stopping'
    [last] = [json.loads(line) for line in finish(proc).splitlines()]
    return answer, last


def test_mpservice_http_script_runs_unchanged_on_mpserver():
    with service('-m', 'mpserver', 'http_service.py', '{port}', cwd=SCRIPTS) as (url, proc):
        answer, last = exercise_http_service(url, proc)
    assert answer['y'] == 20 and answer['context'] == {'index': 0}
    assert (answer['server'], answer['http']) == ('mpserver', 'mpserver.http')
    assert last == {'stopped': True, 'http': 'mpserver.http'}


def test_the_same_script_on_real_mpservice():
    """The reference: plain python runs the script on mpservice, with the same answers."""
    pytest.importorskip('mpservice')
    with service('http_service.py', '{port}', cwd=SCRIPTS) as (url, proc):
        answer, last = exercise_http_service(url, proc)
    assert answer['y'] == 20 and answer['context'] == {'index': 0}
    assert (answer['server'], answer['http']) == ('mpservice.mpserver', 'mpservice.http')
    assert last == {'stopped': True, 'http': 'mpservice.http'}


def test_several_uvicorn_processes_through_python_m_mpserver():
    """workers=2 (mpserver only: mpservice 0.16.8 subclasses uvicorn's supervisor,
    whose constructor recent uvicorn changed): both processes serve, each with
    its worker_context, on mpserver; one /stop stops both."""
    with service('-m', 'mpserver', 'http_service.py', '{port}', '2', cwd=SCRIPTS) as (url, proc):
        seen = {}
        deadline = time.monotonic() + WAIT
        while len(seen) < 2:
            # A fresh connection per request, so that the kernel spreads them over both processes.
            r = httpx.post(f'{url}/predict', json={'x': 2}, timeout=WAIT, headers={'Connection': 'close'})
            answer = r.json()
            assert answer['y'] == 20 and (answer['server'], answer['http']) == ('mpserver', 'mpserver.http')
            seen[answer['pid']] = answer['context']
            assert time.monotonic() < deadline, f'only one uvicorn process answered: {seen}'
        assert sorted(c['index'] for c in seen.values()) == [0, 1]
        _, last = exercise_http_service(url, proc)
    assert last == {'stopped': True, 'http': 'mpserver.http'}


@pytest.mark.parametrize('workers', [1, 2])
def test_worker_contexts_holding_multiprocessing_objects(backend, workers):
    """A spawn context's Queue, Event and Value in ``worker_contexts`` reach each
    uvicorn process and work there (mpservice hands contexts to its processes
    as process arguments; mpserver pickles them as multiprocessing does for a
    spawned process, fds included).  mpservice runs the script as it is;
    mpserver through ``python -m mpserver``."""
    runner = [] if backend.name == 'mpservice' else ['-m', 'mpserver']
    args = [*runner, 'http_queue_contexts.py', str(free_port()), str(workers)]
    proc = run_python(*args, cwd=SCRIPTS)
    if backend.name == 'mpservice' and workers > 1 and 'unexpected keyword argument' in proc.stderr:
        pytest.skip('mpservice 0.16.8 serves workers > 1 only with an older uvicorn (it subclasses its supervisor)')
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info == {
        'http': 'mpservice.http' if backend.name == 'mpservice' else 'mpserver.http',
        'indexes': list(range(workers)),
        'events': [True] * workers,
        'other_processes': 0 if workers == 1 else 2,
        'counter': workers,
    }
