"""An mpservice program that starts processes of its own with multiprocessing.

Usage: python spawned_children.py PORT

Every child imports this script again (as ``__mp_main__``), whose first
lines import ``mpservice.http`` and ``mpservice.mpserver``: without mpservice
installed that fails unless the child has mpserver's import hook; with
mpservice installed, the child would silently run the real one.  It prints
one JSON line per child:

- a ``spawn`` and a ``forkserver`` child, each reporting the modules it got,
  and a grandchild that the spawn child starts in turn;
- the children of a ``ProcessPoolExecutor`` (spawn);
- an HTTP service that a ``spawn`` child serves with ``mpservice.http.start_server``
  (an AsyncServer with a worker process of its own in the app's lifespan,
  so mpserver's workers are grandchildren), which this process queries and stops:
  what mpservice's own HTTP test does.
"""

import concurrent.futures
import contextlib
import json
import multiprocessing
import sys
import time
import urllib.error
import urllib.request

import mpservice.http
import mpservice.mpserver
from mpservice.http import start_server, stop_server
from mpservice.mpserver import AsyncServer, ProcessServlet, Worker
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


def modules():
    """What this process got for the mpservice names."""
    import mpserver

    return {
        'server': mpservice.mpserver.__name__,
        'http': mpservice.http.__name__,
        'same_objects': mpservice.mpserver.Server is mpserver.Server,
        'main': sys.modules['__main__'].__name__,
    }


def receive(queue, process):
    """The child's report; fails at once if the child died without one."""
    import queue as queues

    deadline = time.monotonic() + 120
    while True:
        try:
            return queue.get(timeout=0.1)
        except queues.Empty:
            if not process.is_alive() and queue.empty():
                raise RuntimeError(f'the child exited with {process.exitcode} without a report') from None
            if time.monotonic() > deadline:
                raise


def report(queue, grandchild):
    info = modules()
    if grandchild:
        ctx = multiprocessing.get_context('spawn')
        inner = ctx.Queue()
        p = ctx.Process(target=report, args=(inner, False))
        p.start()
        info['grandchild'] = receive(inner, p)
        p.join()
    queue.put(info)


def pool_report(_):
    return modules()


class Triple(Worker):
    def call(self, x):
        return {'y': 3 * x, **modules()}


async def predict(request):
    x = (await request.json())['x']
    return JSONResponse({'worker': await request.state.model.call(x), 'child': modules()})


async def stop(request):
    await stop_server()
    return PlainTextResponse('stopping')


@contextlib.asynccontextmanager
async def lifespan(app):
    async with AsyncServer(ProcessServlet(Triple)) as model:
        yield {'model': model}


app = Starlette(
    lifespan=lifespan, routes=[Route('/predict', predict, methods=['POST']), Route('/stop', stop, methods=['POST'])]
)


def serve(port):
    start_server(app, host='127.0.0.1', port=port)


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read().decode()


if __name__ == '__main__':
    port = int(sys.argv[1])
    for method in ('spawn', 'forkserver'):
        ctx = multiprocessing.get_context(method)
        queue = ctx.Queue()
        p = ctx.Process(target=report, args=(queue, method == 'spawn'))
        p.start()
        print(json.dumps({'kind': method, **receive(queue, p)}), flush=True)
        p.join()
        assert p.exitcode == 0, p.exitcode

    spawn = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=spawn) as pool:
        print(json.dumps({'kind': 'pool', 'results': list(pool.map(pool_report, range(2)))}), flush=True)

    server = spawn.Process(target=serve, args=(port,))
    server.start()
    url = f'http://127.0.0.1:{port}'
    deadline = time.monotonic() + 120
    while True:
        try:
            answer = json.loads(post(f'{url}/predict', {'x': 2}))
            break
        except (urllib.error.URLError, ConnectionError):
            assert server.is_alive(), f'the HTTP child exited with {server.exitcode}'
            assert time.monotonic() < deadline, 'the HTTP child did not answer'
            time.sleep(0.1)
    post(f'{url}/stop', {})
    server.join(120)
    print(json.dumps({'kind': 'http', 'exitcode': server.exitcode, **answer}), flush=True)
    print(json.dumps({'kind': 'main', **modules()}))
