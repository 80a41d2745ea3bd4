"""An unchanged mpservice HTTP service: Starlette, an AsyncServer in the lifespan,
``mpservice.http.start_server``/``stop_server``.

Usage: python http_service.py PORT [WORKERS]

``POST /predict {"x": n}`` answers ``{"y": 10 * n, ...}`` and names the modules
it runs on; n == 3 makes the worker raise ``ValueError``, answered with a 500;
``POST /stop`` stops the service, which then prints one JSON line.
"""

import contextlib
import json
import os
import sys

import mpservice.http
import mpservice.mpserver
from mpservice.http import start_server, stop_server
from mpservice.mpserver import AsyncServer, ProcessServlet, Worker
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


class TimesTen(Worker):
    def call(self, x):
        if x == 3:
            raise ValueError(f'refusing to process {x}')
        return x * 10


async def predict(request):
    x = (await request.json())['x']
    try:
        y = await request.state.model.call(x)
    except ValueError as e:
        return JSONResponse({'error': str(e)}, status_code=500)
    return JSONResponse(
        {
            'y': y,
            'server': mpservice.mpserver.__name__,
            'http': mpservice.http.__name__,
            'context': request.app.worker_context,
            'pid': os.getpid(),
        }
    )


async def health(request):
    return PlainTextResponse('ok')


async def stop(request):
    await stop_server()
    return PlainTextResponse('stopping')


@contextlib.asynccontextmanager
async def lifespan(app):
    async with AsyncServer(ProcessServlet(TimesTen)) as model:
        yield {'model': model}


app = Starlette(
    lifespan=lifespan,
    routes=[
        Route('/predict', predict, methods=['POST']),
        Route('/health', health),
        Route('/stop', stop, methods=['POST']),
    ],
)


if __name__ == '__main__':
    port = int(sys.argv[1])
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    start_server(
        'http_service:app' if workers > 1 else app,
        host='127.0.0.1',
        port=port,
        workers=workers,
        worker_contexts=[{'index': i} for i in range(workers)],
    )
    print(json.dumps({'stopped': True, 'http': mpservice.http.__name__}))
