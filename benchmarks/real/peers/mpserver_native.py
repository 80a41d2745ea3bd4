"""mpserver's native front: ``python -m mpserver serve benchmarks.real.peers.mpserver_native:WORKLOAD``.

The servlets are the examples' (``examples/ocr_service.py``,
``examples/digits_service.py``), so the benchmark serves what a user reads:

* ``ocr``: ``SequentialServlet(ProcessServlet(Detect), ProcessServlet(Recognise))``,
  each stage with :func:`~benchmarks.real.peers.settings.workers` processes (one per
  core); no batching.  The crops travel from stage to stage pickled.
* ``digits`` / ``digits_onnx``: ``ProcessServlet(Digits)`` with one process per core,
  ``batch_size=32``, ``batch_wait_time=0.005``; ``preprocess`` parses each body, so a
  bad body fails alone, not its batch.

Served at ``POST /``; ready when ``GET /readyz`` answers 200.  The same servlets
serve the uvicorn peer (``mpserver_asgi.py``) and the offline runs.  Worker
processes re-import the examples' classes by module name, so ``examples/`` must
be on ``PYTHONPATH`` (``real_models.py`` puts it there).
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
EXAMPLES = os.path.join(ROOT, 'examples')
if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)

import digits_service  # noqa: E402
import ocr_service  # noqa: E402

from benchmarks.real.peers.settings import workers  # noqa: E402

PATH = '/'
HEALTH = '/readyz'


def ocr():
    return ocr_service.servlet(workers())


def digits():
    return digits_service.servlet(onnx=False, workers=workers())


def digits_onnx():
    return digits_service.servlet(onnx=True, workers=workers())


SERVLETS = {'ocr': ocr, 'digits': digits, 'digits-onnx': digits_onnx}
