"""A scikit-learn model over HTTP on every core, with batching: one JSON row in, a label out.

Run:  python examples/digits_service.py [--port 8000] [--onnx]   (needs: pip install 'mpserver[real]')
Then: curl localhost:8000/ -d '{"row": [0, 0, 5, 13, 9, 1, 0, 0, ...64 numbers]}'   ->  {"label": 0}

Each worker process trains the model when it starts (a
HistGradientBoostingClassifier on scikit-learn's bundled 8x8 digits, a few
seconds, the same model every time), or with ``--onnx`` converts it with
skl2onnx and runs it in ONNX Runtime.  Requests that arrive together are scored
together: ``batch_size=32`` and ``batch_wait_time=0.005`` make a batch of up
to 32 rows, waiting at most 5 ms for it to fill.  ``preprocess`` parses each
body on its own, so a bad body fails alone (a 500 naming ``BadRequest``), not
the batch it would have joined.  A body may carry ``"sleep": S`` (the
benchmark's stuck request): its batch waits S seconds.

The work itself is ``benchmarks/real/work.py``, shared with the benchmark
(``benchmarks/real_models.py``) that serves these servlets next to other servers.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mpserver import ProcessServlet, Server, Worker  # noqa: E402

from benchmarks.real import work  # noqa: E402

os.environ.update(work.THREAD_ENV)


class Digits(Worker):
    onnx = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.model = work.Digits(onnx=self.onnx)

    def preprocess(self, body):
        return work.parse_row(body)  # (row, seconds to sleep); raises BadRequest

    def call(self, items):
        return [{'label': label} for label in self.model.labels_of(items)]


class DigitsOnnx(Digits):
    onnx = True


def servlet(onnx=False, workers=None):
    return ProcessServlet(
        DigitsOnnx if onnx else Digits,
        cpus=workers or os.cpu_count() or 1,
        batch_size=work.BATCH_SIZE,
        batch_wait_time=work.BATCH_WAIT,
    )


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8000)
    parser.add_argument('--onnx', action='store_true', help='run the model converted to ONNX, in ONNX Runtime')
    args = parser.parse_args()
    Server(servlet(onnx=args.onnx)).serve_http(host=args.host, port=args.port)
