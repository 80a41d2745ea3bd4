"""BentoML: ``python benchmarks/real/peers/bentoml_peer.py WORKLOAD --port P``.

Runs ``bentoml serve`` on one of the services below, each with
``workers=workers()`` worker processes.  BentoML maps a JSON body's fields to
the API's parameters, and a multipart upload to a ``Path`` parameter.

* ``ocr``: ``OcrService.predict(content: Path) -> str``: the PNG goes as a
  multipart upload (field ``content``); one worker runs both stages; no batching.
* ``digits`` / ``digits-onnx``: ``predict(row, sleep=0) -> {"label": int}`` from
  the JSON body ``{"row": [...]}``.  Not batched: BentoML's adaptive batching
  (``batchable=True``) takes a batch dimension in every request, which would
  change the request body that every other peer gets.

``POST /predict``; ``GET /readyz`` is BentoML's readiness probe.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))

import bentoml  # noqa: E402

from benchmarks.real import work  # noqa: E402
from benchmarks.real.peers import settings  # noqa: E402

PATH = '/predict'
HEALTH = '/readyz'
N = settings.workers()


@bentoml.service(workers=N, traffic={'timeout': 60})
class OcrService:
    def __init__(self) -> None:
        self.model = work.Ocr()

    @bentoml.api
    def predict(self, content: Path) -> str:
        return self.model(content.read_bytes())


@bentoml.service(workers=N, traffic={'timeout': 60})
class DigitsService:
    onnx = False

    def __init__(self) -> None:
        self.model = work.Digits(onnx=self.onnx)

    @bentoml.api
    def predict(self, row: list[float], sleep: float = 0.0) -> dict:
        if sleep:
            time.sleep(sleep)
        return self.model.one({'row': row})


@bentoml.service(workers=N, traffic={'timeout': 60})
class DigitsOnnxService(DigitsService.inner):
    onnx = True


SERVICES = {'ocr': 'OcrService', 'digits': 'DigitsService', 'digits-onnx': 'DigitsOnnxService'}


def main() -> None:
    args = settings.parse(__doc__.split('\n\n')[0])
    target = f'benchmarks.real.peers.bentoml_peer:{SERVICES[args.workload]}'
    argv = [sys.executable, '-m', 'bentoml', 'serve', target, '--host', args.host, '--port', str(args.port)]
    os.execv(sys.executable, argv)


if __name__ == '__main__':
    main()
