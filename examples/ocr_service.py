"""OCR over HTTP on every core: text detection and recognition as two process stages.

Run:  python examples/ocr_service.py [--port 8000]     (needs: pip install 'mpserver[real]')
Then: curl --data-binary @page.png localhost:8000/     (answers the text, one line per text line)
      curl localhost:8000/readyz                       (200 once every stage has a live worker)

The model is rapidocr's: ONNX detection and recognition models that ship in
its wheel, run by ONNX Runtime with one thread per process.  ``Detect`` turns
the PNG into the crops of its text lines, ``Recognise`` reads each crop; a
``SequentialServlet`` runs them as two stages of one worker process per core
each, so while one image is being read the next is being detected.  A body
that is not an image fails in ``Detect`` with ``NotAnImage``: a 500 with that
name in its JSON.

The work itself (the engine's settings, the crops, the test images) is
``benchmarks/real/work.py``, shared with the benchmark that serves this very
servlet next to other servers (``benchmarks/real_models.py``).
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mpserver import ProcessServlet, SequentialServlet, Server, Worker  # noqa: E402

from benchmarks.real import work  # noqa: E402

# One compute thread per process (numpy/OpenMP read it when they load, in each worker).
os.environ.update(work.THREAD_ENV)


class Detect(Worker):
    """Stage 1: the PNG bytes in, the text lines' crops out (top to bottom)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stage = work.OcrDetect()

    def call(self, png):
        return self.stage(png)


class Recognise(Worker):
    """Stage 2: the crops in, the text out (str: the front answers text/plain)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stage = work.OcrRecognise()

    def call(self, crops):
        return self.stage(crops)


def servlet(workers=None):
    n = workers or os.cpu_count() or 1
    return SequentialServlet(ProcessServlet(Detect, cpus=n), ProcessServlet(Recognise, cpus=n))


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8000)
    args = parser.parse_args()
    Server(servlet()).serve_http(host=args.host, port=args.port)
