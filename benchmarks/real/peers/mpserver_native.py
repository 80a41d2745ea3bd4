"""mpserver's native front: ``python -m mpserver serve benchmarks.real.peers.mpserver_native:WORKLOAD``.

* ``ocr``: ``SequentialServlet(ProcessServlet(Detect), ProcessServlet(Recognise))``,
  each stage with :func:`~benchmarks.real.peers.settings.workers` processes (one per
  core); no batching.  The crops travel from stage to stage pickled.
* ``digits`` / ``digits_onnx``: ``ProcessServlet(Digits)`` with one process per core,
  ``batch_size=32``, ``batch_wait_time=0.005``; ``preprocess`` parses each body, so a
  bad body fails alone, not its batch.

Served at ``POST /``; ready when ``GET /readyz`` answers 200.  The same servlets
serve the uvicorn peer (``mpserver_asgi.py``).
"""

from __future__ import annotations

import time

from mpserver import ProcessServlet, SequentialServlet, Worker

from benchmarks.real import work
from benchmarks.real.peers.settings import workers

PATH = '/'
HEALTH = '/readyz'


class Detect(Worker):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stage = work.OcrDetect()

    def call(self, png):
        return self.stage(png)


class Recognise(Worker):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stage = work.OcrRecognise()

    def call(self, crops):
        return self.stage(crops)


class Digits(Worker):
    onnx = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.model = work.Digits(onnx=self.onnx)

    def preprocess(self, body):
        return work.parse_row(body)

    def call(self, items):
        sleep = max(s for _, s in items)
        if sleep:
            time.sleep(sleep)
        return [{'label': label} for label in self.model.labels([row for row, _ in items])]


class DigitsOnnx(Digits):
    onnx = True


def ocr():
    return SequentialServlet(ProcessServlet(Detect, cpus=workers()), ProcessServlet(Recognise, cpus=workers()))


def _digits(cls):
    return ProcessServlet(cls, cpus=workers(), batch_size=work.BATCH_SIZE, batch_wait_time=work.BATCH_WAIT)


def digits():
    return _digits(Digits)


def digits_onnx():
    return _digits(DigitsOnnx)


SERVLETS = {'ocr': ocr, 'digits': digits, 'digits-onnx': digits_onnx}
