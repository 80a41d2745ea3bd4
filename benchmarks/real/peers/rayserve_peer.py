"""Ray Serve: ``python benchmarks/real/peers/rayserve_peer.py WORKLOAD --port P``.

A local Ray cluster of ``workers()`` CPUs (no dashboard), Serve's HTTP proxy
on the port, each model a deployment of ``workers()`` replicas with
``num_cpus=1`` each.

* ``ocr``: Serve's model composition: a ``Detect`` and a ``Recognise``
  deployment (``workers()`` replicas each, ``num_cpus=0.5``: the two stages
  share the cores), called through their
  ``DeploymentHandle`` by an ingress deployment (one replica, ``num_cpus=0``)
  that reads the raw PNG body and answers with the text; no batching.
* ``digits`` / ``digits-onnx``: one deployment whose ``__call__`` reads the body
  and awaits a ``@serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)``
  method.

``POST /``; ``GET /-/healthz`` is the proxy's health check (200 before the
app may answer: the runner's first correct answer is the cold start's end).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))

import ray  # noqa: E402
from ray import serve  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse  # noqa: E402

from benchmarks.real import work  # noqa: E402
from benchmarks.real.peers import settings  # noqa: E402

PATH = '/'
HEALTH = '/-/healthz'
N = settings.workers()
ONE_CPU = {'num_cpus': 1}
# The two OCR stages share the cores, as mpserver's and mosec's two stages of one process per core do
# (with a whole CPU each, the second stage's replicas would never be scheduled).
HALF_CPU = {'num_cpus': 0.5}


@serve.deployment(num_replicas=N, ray_actor_options=HALF_CPU)
class Detect:
    def __init__(self):
        self.stage = work.OcrDetect()

    def __call__(self, png: bytes):
        return self.stage(png)


@serve.deployment(num_replicas=N, ray_actor_options=HALF_CPU)
class Recognise:
    def __init__(self):
        self.stage = work.OcrRecognise()

    def __call__(self, crops) -> str:
        return self.stage(crops)


@serve.deployment(num_replicas=1, ray_actor_options={'num_cpus': 0})
class OcrFront:
    def __init__(self, detect, recognise):
        self.detect, self.recognise = detect, recognise

    async def __call__(self, request: Request):
        try:
            crops = await self.detect.remote(await request.body())
        except work.NotAnImage as e:  # Ray's error for a task is also an instance of its cause's class
            return JSONResponse({'error': 'NotAnImage', 'message': str(e)}, status_code=400)
        return PlainTextResponse(await self.recognise.remote(crops))


@serve.deployment(num_replicas=N, ray_actor_options=ONE_CPU)
class Digits:
    onnx = False

    def __init__(self):
        self.model = work.Digits(onnx=self.onnx)

    async def __call__(self, request: Request):
        try:
            item = work.parse_row(await request.body())
        except work.BadRequest as e:
            return JSONResponse({'error': 'BadRequest', 'message': str(e)}, status_code=400)
        return JSONResponse(await self.score(item))

    @serve.batch(max_batch_size=work.BATCH_SIZE, batch_wait_timeout_s=work.BATCH_WAIT)
    async def score(self, items):
        # The model is synchronous: a stuck request holds its replica.
        return [{'label': label} for label in self.model.labels_of(items)]


@serve.deployment(num_replicas=N, ray_actor_options=ONE_CPU)
class DigitsOnnx(Digits.func_or_class):
    onnx = True


def main() -> None:
    args = settings.parse(__doc__.split('\n\n')[0])
    # address='local': a cluster of its own, even when another one runs on this machine.
    ray.init(address='local', num_cpus=N, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={'host': args.host, 'port': args.port})
    if args.workload == 'ocr':
        app = OcrFront.bind(Detect.bind(), Recognise.bind())
    else:
        app = (DigitsOnnx if args.workload == 'digits-onnx' else Digits).bind()
    serve.run(app, route_prefix='/')
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == '__main__':
    main()
