"""mosec: ``python benchmarks/real/peers/mosec_peer.py WORKLOAD --port P``.

mosec's own composition: a pipeline is one ``append_worker`` per stage, each
stage with its own worker processes, its Rust front passing the data between
them (pickled, mosec's default IPC).

* ``ocr``: ``Detect`` then ``Recognise``, ``num=workers()`` each (as mpserver's
  two stages); the body is taken as raw bytes (``deserialize``), the text
  returned as UTF-8; no batching.
* ``digits`` / ``digits-onnx``: one stage of ``workers()`` processes,
  ``max_batch_size=32``, ``max_wait_time=5`` (ms).  The body is parsed in
  ``deserialize`` (per request: a bad one gets 400 alone).

Served at ``POST /inference``; mosec answers ``GET /`` with 200 once it listens.
mosec reads its options from ``sys.argv``, so they are handed to it there.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))

from mosec import Server, Worker  # noqa: E402
from mosec.errors import DecodingError  # noqa: E402

from benchmarks.real import work  # noqa: E402
from benchmarks.real.peers import settings  # noqa: E402

PATH = '/inference'
HEALTH = '/'
CAPACITY = 1024


class Detect(Worker):
    # (Not ``self.stage``: mosec's Worker has a ``stage`` property, the stage's name.)
    def __init__(self):
        super().__init__()
        self.step = work.OcrDetect()

    def deserialize(self, data: bytes) -> bytes:
        return data

    def forward(self, png: bytes):
        try:
            return self.step(png)
        except work.NotAnImage as e:
            raise DecodingError(str(e)) from None


class Recognise(Worker):
    resp_mime_type = 'text/plain; charset=utf-8'

    def __init__(self):
        super().__init__()
        self.step = work.OcrRecognise()

    def forward(self, crops):
        return self.step(crops)

    def serialize(self, data: str) -> bytes:
        return data.encode()


class Digits(Worker):
    onnx = False

    def __init__(self):
        super().__init__()
        self.model = work.Digits(onnx=self.onnx)

    def deserialize(self, data: bytes):
        try:
            return work.parse_row(data)
        except work.BadRequest as e:
            raise DecodingError(str(e)) from None

    def forward(self, items: list):
        return [{'label': label} for label in self.model.labels_of(items)]


class DigitsOnnx(Digits):
    onnx = True


def main() -> None:
    args = settings.parse(__doc__.split('\n\n')[0])
    sys.argv = [sys.argv[0], '--address', args.host, '--port', str(args.port), '--capacity', str(CAPACITY)]
    sys.argv += ['--log-level', 'warning']
    server = Server()
    n = settings.workers()
    if args.workload == 'ocr':
        server.append_worker(Detect, num=n)
        server.append_worker(Recognise, num=n)
    else:
        cls = DigitsOnnx if args.workload == 'digits-onnx' else Digits
        server.append_worker(cls, num=n, max_batch_size=work.BATCH_SIZE, max_wait_time=round(work.BATCH_WAIT * 1000))
    server.run()


if __name__ == '__main__':
    main()
