"""The baseline: FastAPI + uvicorn + ``ProcessPoolExecutor``.

``python benchmarks/real/peers/fastapi_pool.py WORKLOAD --port P``.

What one writes without a serving framework: a ``ProcessPoolExecutor`` of
``workers()`` processes, each loading the whole model once (its
``initializer``), and an async endpoint that awaits
``loop.run_in_executor(pool, predict, body)``.  One request is one task: the
OCR pipeline runs both stages in one worker, and nothing batches (the pool has
no batching knob, so W2's max batch 32 / max wait 5 ms do not apply here).

``POST /predict``; ``GET /readyz`` is 200 once every pool process has loaded
its model (the lifespan waits for them before uvicorn accepts requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))

import uvicorn  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, PlainTextResponse, Response  # noqa: E402

from benchmarks.real import work  # noqa: E402
from benchmarks.real.peers import settings  # noqa: E402

PATH = '/predict'
HEALTH = '/readyz'

_model = None


def _load(workload: str) -> None:
    global _model
    _model = work.make(workload)


def _predict(body: bytes):
    if isinstance(_model, work.Digits):
        return _model.one(body)
    return _model(body)


def _loaded_pid() -> int:
    # Held a moment, so that the lifespan's calls spread over every process.
    time.sleep(0.05)
    assert _model is not None
    return os.getpid()


def app(workload: str) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        n = settings.workers()
        context = multiprocessing.get_context('spawn')
        with ProcessPoolExecutor(n, mp_context=context, initializer=_load, initargs=(workload,)) as pool:
            loop = asyncio.get_running_loop()
            # Ready once every process has loaded its model (an initializer runs before a process's first task).
            pids: set[int] = set()
            while len(pids) < n:
                pids.update(await asyncio.gather(*(loop.run_in_executor(pool, _loaded_pid) for _ in range(2 * n))))
            app.state.pool = pool
            yield

    api = FastAPI(lifespan=lifespan)

    @api.post(PATH)
    async def predict(request: Request) -> Response:
        body = await request.body()
        try:
            result = await asyncio.get_running_loop().run_in_executor(request.app.state.pool, _predict, body)
        except (work.NotAnImage, work.BadRequest) as e:
            return JSONResponse({'error': type(e).__name__, 'message': str(e)}, status_code=400)
        if isinstance(result, str):
            return PlainTextResponse(result)
        return JSONResponse(result)

    @api.get(HEALTH)
    async def ready() -> Response:
        return PlainTextResponse('ready')

    return api


def main() -> None:
    args = settings.parse(__doc__.split('\n\n')[0])
    uvicorn.run(app(args.workload), host=args.host, port=args.port, access_log=False, log_level='warning', backlog=2048)


if __name__ == '__main__':
    main()
