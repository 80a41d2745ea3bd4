"""The HTTP servers ``benchmarks/serving.py`` starts, other than mpserver's own front.

::

    python -m benchmarks._http_apps mpserver  MODEL --host H --port P   # uvicorn + Starlette + mpserver.AsyncServer
    python -m benchmarks._http_apps mpservice MODEL --host H --port P   # uvicorn + Starlette + mpservice's AsyncServer
    python -m benchmarks._http_apps mosec     MODEL --host H --port P   # mosec: its Rust front, Python workers

run from the repository root (``benchmarks._http_models`` must be importable);
MODEL is ``trivial`` or ``cpu`` (see ``_http_models.py``).

The two ASGI servers are one app with the backend swapped: the pattern of
``mpservice.http``'s documentation, an ``AsyncServer`` entered in the
Starlette lifespan and handed to the endpoint through ``request.state``;
``POST /`` awaits ``server.call(body)`` and returns the ``bytes`` it gives.
Both run under ``uvicorn.run`` with the same settings: one process, no
access log, uvloop and httptools when installed, backlog 2048.
(``mpservice.http.start_server`` is a thin wrapper of the same
``uvicorn.Config``/``Server``, with backlog 128 by default; calling uvicorn
directly gives both backends the same front.)  Both ``AsyncServer`` have
capacity 1024, as the native front is given.

mosec serves ``POST /inference``; its worker passes the body through as
``bytes`` (no JSON).  mosec reads its settings from ``sys.argv``, so the
options are handed to it there.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
from collections.abc import AsyncIterator
from typing import Any

from benchmarks import _http_models as models

CAPACITY = 1024


def asgi_app(backend: str, model: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    if backend == 'mpserver':
        from mpserver import AsyncServer
    else:
        from mpservice.mpserver import AsyncServer

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with AsyncServer(models.servlet(backend, model), capacity=CAPACITY) as server:
            yield {'model': server}

    async def handle(request: Request) -> Response:
        result = await request.state.model.call(await request.body())
        return Response(result, media_type='application/octet-stream')

    return Starlette(lifespan=lifespan, routes=[Route('/', handle, methods=['POST'])])


def run_asgi(backend: str, model: str, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        asgi_app(backend, model),
        host=host,
        port=port,
        access_log=False,
        log_level='warning',
        loop='uvloop' if importlib.util.find_spec('uvloop') else 'auto',
        http='httptools' if importlib.util.find_spec('httptools') else 'auto',
        backlog=2048,
    )


def run_mosec(model: str, host: str, port: int) -> None:
    # mosec parses sys.argv itself (unknown options are ignored).
    sys.argv = [sys.argv[0], '--address', host, '--port', str(port), '--capacity', str(CAPACITY)]
    sys.argv += ['--log-level', 'warning']
    from mosec import Server

    server = Server()
    server.append_worker(models.worker_class('mosec', model), num=models.workers(model))
    server.run()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('backend', choices=models.BACKENDS)
    p.add_argument('model', choices=models.MODELS)
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, required=True)
    args = p.parse_args()
    if args.backend == 'mosec':
        run_mosec(args.model, args.host, args.port)
    else:
        run_asgi(args.backend, args.model, args.host, args.port)


if __name__ == '__main__':
    main()
