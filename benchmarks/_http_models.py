"""The models ``benchmarks/serving.py`` serves over HTTP, for every peer.

Two models, each a function of the request body (``bytes``) that returns
``bytes``:

* ``trivial``: the body as it is (the serving machinery is all there is);
* ``cpu``: the ~1 ms item of every benchmark (``harness.burn`` for
  ``loops`` iterations; ``loops`` comes from the environment variable
  ``MPSERVER_BENCH_LOOPS``, ``harness.LOOPS_ENV``, calibrated once per run by
  ``serving.py`` with ``harness.burn_loops`` so that every peer does the same
  work); the response is the seconds the loop took in the worker
  (``b'0.001012345'``), which ``serving.py`` averages into the service time.

Every peer runs the model in worker processes: one for ``trivial``,
:data:`WORKERS_ENV` (default: the number of cores) for ``cpu``.  Worker
processes re-import their class by module and name, so the classes live at
module level under stable names; they are built on first access (a module
``__getattr__``), so that importing this module imports no backend, and a
worker process imports only its own:

* ``Trivial__mpserver``, ``Cpu__mpserver``, ``Trivial__mpservice``,
  ``Cpu__mpservice``: ``Worker`` subclasses of the two backends;
* ``Trivial__mosec``, ``Cpu__mosec``: ``mosec.Worker`` subclasses that pass
  the body through as ``bytes`` (no JSON);
* ``trivial``, ``cpu``: ``mpserver.ProcessServlet`` of the matching worker
  with its worker count, for ``python -m mpserver serve
  benchmarks._http_models:trivial``;
* :func:`servlet` builds the same for either backend (the ASGI apps).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from benchmarks.harness import LOOPS_ENV, burn

WORKERS_ENV = 'MPSERVER_HTTP_BENCH_WORKERS'
MODELS = ('trivial', 'cpu')
BACKENDS = ('mpserver', 'mpservice', 'mosec')


def workers(model: str) -> int:
    """How many worker processes serve ``model``."""
    if model == 'trivial':
        return 1
    return int(os.environ.get(WORKERS_ENV) or os.cpu_count() or 1)


def _loops() -> int:
    value = os.environ.get(LOOPS_ENV)
    if not value:
        raise RuntimeError(f'the cpu model needs {LOOPS_ENV} (set by benchmarks/serving.py)')
    return int(value)


def trivial_work(body: bytes) -> bytes:
    return body


class _Cpu:
    """The cpu model's state: the loop count, read once when the worker starts."""

    def __init__(self) -> None:
        self.loops = _loops()

    def __call__(self, body: bytes) -> bytes:
        start = time.perf_counter()
        burn(self.loops)
        return f'{time.perf_counter() - start:.9f}'.encode()


# --- the classes, one per backend, built on first access ----------------------


def _define(kind: str, backend: str) -> Any:
    if backend == 'mosec':
        import mosec

        class MosecWorker(mosec.Worker):
            resp_mime_type = 'application/octet-stream'

            def __init__(self) -> None:
                super().__init__()
                self.work = trivial_work if kind == 'Trivial' else _Cpu()

            def deserialize(self, data: bytes) -> bytes:
                return data

            def serialize(self, data: bytes) -> bytes:
                return data

            def forward(self, data: bytes) -> bytes:
                return self.work(data)

        return MosecWorker

    if backend == 'mpserver':
        import mpserver as module
    else:
        import mpservice.mpserver as module

    class ServerWorker(module.Worker):  # type: ignore[name-defined,misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.work = trivial_work if kind == 'Trivial' else _Cpu()

        def call(self, x: bytes) -> bytes:
            return self.work(x)

    return ServerWorker


def __getattr__(name: str) -> Any:
    kind, sep, backend = name.partition('__')
    if sep and kind in ('Trivial', 'Cpu') and backend in BACKENDS:
        cls = _define(kind, backend)
        cls.__name__ = cls.__qualname__ = name
        cls.__module__ = __name__
        globals()[name] = cls
        return cls
    if name in MODELS:
        value = servlet('mpserver', name)
        globals()[name] = value
        return value
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def worker_class(backend: str, model: str) -> Any:
    """The worker class of ``model`` for ``backend`` (``'mpserver'``, ``'mpservice'`` or ``'mosec'``)."""
    return getattr(sys.modules[__name__], f'{model.capitalize()}__{backend}')


def servlet(backend: str, model: str) -> Any:
    """A ``ProcessServlet`` of ``model``'s worker on ``backend`` (``'mpserver'`` or ``'mpservice'``)."""
    if backend == 'mpserver':
        import mpserver as module
    else:
        import mpservice.mpserver as module
    return module.ProcessServlet(worker_class(backend, model), cpus=workers(model))
