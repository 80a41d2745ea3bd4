"""mpserver behind uvicorn: ``python benchmarks/real/peers/mpserver_asgi.py WORKLOAD --port P``.

The servlets of ``mpserver_native.py`` in an ``mpserver.AsyncServer`` entered in
a Starlette app's lifespan, served by ``mpserver.http.start_server`` (uvicorn,
one process, no access log).  ``POST /`` awaits ``server.call(body)``; a body
that is not an image / not ``{"row": [...]}`` gets 400, any other worker
exception 500.  ``GET /readyz`` is 200 once the lifespan has entered the server
(uvicorn answers nothing before that).
"""

from __future__ import annotations

import contextlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))

from mpserver import AsyncServer  # noqa: E402
from mpserver.http import start_server  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from benchmarks.real import work  # noqa: E402
from benchmarks.real.peers import mpserver_native, settings  # noqa: E402

PATH = '/'
HEALTH = '/readyz'
CAPACITY = 1024


def app(workload: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with AsyncServer(mpserver_native.SERVLETS[workload](), capacity=CAPACITY) as server:
            yield {'model': server}

    async def predict(request) -> Response:
        try:
            result = await request.state.model.call(await request.body())
        except (work.NotAnImage, work.BadRequest) as e:
            return JSONResponse({'error': type(e).__name__, 'message': str(e)}, status_code=400)
        if isinstance(result, str):
            return PlainTextResponse(result)
        return JSONResponse(result)

    async def ready(request) -> Response:
        return PlainTextResponse('ready')

    return Starlette(
        lifespan=lifespan, routes=[Route(PATH, predict, methods=['POST']), Route(HEALTH, ready, methods=['GET'])]
    )


def main() -> None:
    args = settings.parse(__doc__.split('\n\n')[0])
    start_server(app(args.workload), host=args.host, port=args.port, backlog=2048)


if __name__ == '__main__':
    main()
