"""LitServe: ``python benchmarks/real/peers/litserve_peer.py WORKLOAD --port P``.

A ``LitAPI`` served by ``LitServer`` on the CPU (``accelerator='cpu'``, one
device, ``workers_per_device=workers()`` inference processes), one API server
process.  LitServe runs one ``predict`` per request (or per batch); it has no
pipeline of stages, so W1 runs detect and recognise in one worker.

* ``ocr``: LitServe reads a request body as JSON or as a form; a file goes as
  a multipart upload (its documented way), so the PNG arrives as the form's
  ``content`` file; no batching.  The text comes back as ``{"text": ...}``.
* ``digits`` / ``digits-onnx``: the JSON body ``{"row": [...]}``;
  ``max_batch_size=32``, ``batch_timeout=0.005``; ``{"label": int}`` back.

``POST /predict``; ``GET /health`` is 200 once every worker has run ``setup``.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))

import litserve as ls  # noqa: E402
from fastapi import HTTPException  # noqa: E402

from benchmarks.real import work  # noqa: E402
from benchmarks.real.peers import settings  # noqa: E402

PATH = '/predict'
HEALTH = '/health'


class OcrAPI(ls.LitAPI):
    def setup(self, device):
        self.model = work.Ocr()

    def decode_request(self, request):
        upload = request['content']
        data = upload.file.read() if hasattr(upload, 'file') else upload
        return data

    def predict(self, png):
        try:
            return self.model(png)
        except work.NotAnImage as e:
            raise HTTPException(400, str(e)) from None

    def encode_response(self, text):
        return {'text': text}


class DigitsAPI(ls.LitAPI):
    onnx = False

    def setup(self, device):
        self.model = work.Digits(onnx=self.onnx)

    def decode_request(self, request):
        try:
            return work.parse_row(request)
        except work.BadRequest as e:
            raise HTTPException(400, str(e)) from None

    def batch(self, inputs):
        return inputs

    def predict(self, items):
        return self.model.labels_of(items)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, label):
        return {'label': label}


class DigitsOnnxAPI(DigitsAPI):
    onnx = True


def main() -> None:
    args = settings.parse(__doc__.split('\n\n')[0])
    if args.workload == 'ocr':
        api = OcrAPI()
    else:
        cls = DigitsOnnxAPI if args.workload == 'digits-onnx' else DigitsAPI
        api = cls(max_batch_size=work.BATCH_SIZE, batch_timeout=work.BATCH_WAIT)
    server = ls.LitServer(api, accelerator='cpu', devices=1, workers_per_device=settings.workers(), timeout=60)
    server.run(host=args.host, port=args.port, log_level='warning', generate_client_file=False)


if __name__ == '__main__':
    main()
