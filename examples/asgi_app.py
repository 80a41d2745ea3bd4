"""A Starlette app that serves ``POST /predict`` from an mpserver AsyncServer.

Run:  python examples/asgi_app.py [--port 8000]     (needs: pip install 'mpserver[http]')
Then: curl -X POST localhost:8000/predict -d '{"text": "hello"}'
      curl -X POST localhost:8000/stop

The AsyncServer (two worker processes) lives in the app's lifespan: it
starts before uvicorn accepts the first request and stops after the last
one.  Endpoints reach it as ``request.state.model`` and ``await`` it, so the
event loop keeps accepting requests while the workers compute.  A worker's
exception comes back to the endpoint as itself: here a ``ValueError`` becomes
a 400 response, anything else Starlette's 500.
"""

import argparse
import contextlib
import hashlib

from mpserver import AsyncServer, ProcessServlet, Worker
from mpserver.http import start_server, stop_server
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


class Digest(Worker):
    """The CPU-heavy part: hash a text many times (runs in a worker process)."""

    def call(self, text):
        if not isinstance(text, str) or not text:
            raise ValueError('"text" must be a non-empty string')
        h = text.encode()
        for _ in range(1000):
            h = hashlib.sha256(h).digest()
        return h.hex()[:16]


async def predict(request):
    body = await request.json()
    try:
        digest = await request.state.model.call(body.get('text'))
    except ValueError as e:
        return JSONResponse({'error': str(e)}, status_code=400)
    return JSONResponse({'digest': digest})


async def stop(request):
    await stop_server()  # uvicorn finishes this response, runs the lifespan's exit, and start_server returns
    return PlainTextResponse('stopping\n')


@contextlib.asynccontextmanager
async def lifespan(app):
    async with AsyncServer(ProcessServlet(Digest, cpus=2)) as model:
        yield {'model': model}


app = Starlette(
    lifespan=lifespan,
    routes=[Route('/predict', predict, methods=['POST']), Route('/stop', stop, methods=['POST'])],
)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8000)
    args = parser.parse_args()
    start_server(app, host=args.host, port=args.port)
    print('stopped')
