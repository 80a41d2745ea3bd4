"""A service written for mpservice 0.12 (it does not run on mpservice 0.16.8):
``Sequential``, ``Ensemble``, ``PipelineFull``, ``ProcessWorker``/``ThreadWorker``,
``batch_size_log_cadence``, ``Server(backlog=...)``, ``Server.async_call`` and
``Server.full``, served over HTTP by ``mpservice.http.make_server`` and stopped
through ``server.should_exit``, as mpservice 0.12's documentation showed.

It drives itself: a client thread waits until uvicorn listens (on a port the
system picks), sends requests, then asks the service to stop.  Prints one
JSON line with what it saw.
"""

import asyncio
import json
import threading
import urllib.request
from types import SimpleNamespace

import mpservice.http
import mpservice.mpserver
from mpservice.http import make_server
from mpservice.mpserver import (
    Ensemble,
    PipelineFull,
    ProcessServlet,
    ProcessWorker,
    Sequential,
    Server,
    ThreadServlet,
    ThreadWorker,
    make_threadworker,
)
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


class Square(ProcessWorker):
    def __init__(self, **kwargs):
        super().__init__(batch_size=8, batch_wait_time=0.005, batch_size_log_cadence=1000, **kwargs)

    def call(self, xs):
        return [x * x for x in xs]


class Negate(ThreadWorker):
    def call(self, x):
        return -x


context = SimpleNamespace()


async def predict(request):
    x = (await request.json())['x']
    y = await context.model.async_call(x)
    return JSONResponse({'y': y})


async def stop(request):
    context.server.should_exit = True
    return PlainTextResponse('server shutdown as requested')


def post(path, body=None):
    data = json.dumps(body).encode() if body is not None else b''
    with urllib.request.urlopen(f'{context.url}{path}', data=data, timeout=60) as r:
        return r.read().decode()


def client():
    """Waits until uvicorn listens, then uses the service and stops it."""
    server = context.server
    while not server.started:
        if server.should_exit:
            return
        threading.Event().wait(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    context.url = f'http://127.0.0.1:{port}'
    context.answers = [json.loads(post('/predict', {'x': x})) for x in (2, 3)]
    context.stopped = post('/stop')


async def flood(model):
    """More requests at once than the server's capacity: some are refused."""
    results = await asyncio.gather(*(model.async_call(i) for i in range(64)), return_exceptions=True)
    return sum(isinstance(r, PipelineFull) for r in results)


async def main():
    app = Starlette(routes=[Route('/predict', predict, methods=['POST']), Route('/stop', stop, methods=['POST'])])
    server = make_server(app, host='127.0.0.1', port=0, log_config=None)
    context.server = server
    servlet = Sequential(
        ProcessServlet(Square),
        Ensemble(ThreadServlet(Negate), ThreadServlet(make_threadworker(lambda x: x + 1))),
    )
    with Server(servlet, backlog=4) as model:
        context.model = model
        refused = await flood(model)
        full = model.full()
        thread = threading.Thread(target=client)
        thread.start()
        await server.serve()
        thread.join()
    print(
        json.dumps(
            {
                'server': mpservice.mpserver.__name__,
                'http': mpservice.http.__name__,
                'answers': context.answers,
                'stopped': context.stopped,
                'refused_some': refused > 0,
                'full_when_idle': full,
            }
        )
    )


if __name__ == '__main__':
    asyncio.run(main())
