"""The offline half of ``real_models.py``: the workloads over many inputs in one program.

``Server.stream`` (mpserver: the servlets of ``peers/mpserver_native.py``) next
to ``ProcessPoolExecutor.map``, ``multiprocessing.Pool.imap``, joblib and mpire,
each with ``workers()`` processes that load the model once (an initializer), and
each with the chunk sizes of :data:`CHUNKS` (the best is reported).  The pools
run the whole model per item (the OCR pipeline in one process); mpserver runs
the same servlets as it serves (two stages for OCR, batches of 32 for digits).
Every result is checked against the expected answer.

A run with :func:`busy_host` running meanwhile: two other processes that keep
a core each busy, so every peer meets the same competition.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.real import work
from benchmarks.real.peers.settings import workers

#: Chunk sizes tried per peer (the best counts); mpserver takes none (it streams item by item, batching W2 by 32).
CHUNKS = {'ocr': (1, 4), 'digits': (1, 16, 64), 'digits-onnx': (1, 16, 64)}
PEERS = ('mpserver', 'ProcessPoolExecutor.map', 'Pool.imap', 'joblib', 'mpire')

_model: Any = None


def _load(workload: str) -> None:
    global _model
    for k, v in work.THREAD_ENV.items():
        os.environ[k] = v
    _model = work.make(workload)


def _predict(body: bytes) -> Any:
    if isinstance(_model, work.Digits):
        return _model.one(body)['label']
    return _model(body)


def _predict_loading(workload: str, body: bytes) -> Any:
    """joblib has no initializer: the first item a loky process gets loads its model."""
    if _model is None:
        _load(workload)
    return _predict(body)


def _mpire_init(workload: str, worker_state: dict) -> None:
    for k, v in work.THREAD_ENV.items():
        os.environ[k] = v
    worker_state['model'] = work.make(workload)


def _mpire_predict(worker_state: dict, body: bytes) -> Any:
    model = worker_state['model']
    return model.one(body)['label'] if isinstance(model, work.Digits) else model(body)


def _spin(_: int) -> None:
    while True:
        pass


@contextlib.contextmanager
def busy_host(n: int = 2) -> Iterator[None]:
    """``n`` processes that each keep a core busy, for the duration of the block."""
    context = multiprocessing.get_context('spawn')
    procs = [context.Process(target=_spin, args=(i,), daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
            p.join()


def _mpserver(workload: str, bodies: list[bytes], chunk: int) -> list[Any]:
    from mpserver import Server

    from benchmarks.real.peers import mpserver_native

    with Server(mpserver_native.SERVLETS[workload]()) as server:
        out = list(server.stream(bodies))
    return [r['label'] if isinstance(r, dict) else r for r in out]


def _executor(workload: str, bodies: list[bytes], chunk: int) -> list[Any]:
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context('spawn')
    with ProcessPoolExecutor(workers(), mp_context=context, initializer=_load, initargs=(workload,)) as pool:
        return list(pool.map(_predict, bodies, chunksize=chunk))


def _pool(workload: str, bodies: list[bytes], chunk: int) -> list[Any]:
    context = multiprocessing.get_context('spawn')
    with context.Pool(workers(), initializer=_load, initargs=(workload,)) as pool:
        return list(pool.imap(_predict, bodies, chunksize=chunk))


def _joblib(workload: str, bodies: list[bytes], chunk: int) -> list[Any]:
    from joblib import Parallel, delayed

    with Parallel(n_jobs=workers(), batch_size=chunk, backend='loky') as parallel:
        return parallel(delayed(_predict_loading)(workload, b) for b in bodies)


def _mpire(workload: str, bodies: list[bytes], chunk: int) -> list[Any]:
    from mpire import WorkerPool

    with WorkerPool(workers(), use_worker_state=True, start_method='spawn') as pool:
        return pool.map(_mpire_predict, bodies, chunk_size=chunk, worker_init=functools.partial(_mpire_init, workload))


RUNNERS: dict[str, Callable[[str, list[bytes], int], list[Any]]] = {
    'mpserver': _mpserver,
    'ProcessPoolExecutor.map': _executor,
    'Pool.imap': _pool,
    'joblib': _joblib,
    'mpire': _mpire,
}


def measure(peer: str, workload: str, bodies: list[bytes], check: Callable[[int, Any], bool]) -> dict[str, float]:
    """Items/s of the best chunk size (start-up included: every peer starts its processes and loads its models).

    Returns ``{'items_per_s', 'chunk', 'wrong'}``; a chunk size whose run
    returned a wrong answer does not count.
    """
    best: dict[str, float] = {}
    for chunk in (1,) if peer == 'mpserver' else CHUNKS[workload]:
        start = time.perf_counter()
        out = RUNNERS[peer](workload, bodies, chunk)
        seconds = time.perf_counter() - start
        wrong = sum(not check(i, r) for i, r in enumerate(out)) + abs(len(out) - len(bodies))
        rate = len(bodies) / seconds
        if not wrong and rate > best.get('items_per_s', 0.0):
            best = {'items_per_s': rate, 'chunk': float(chunk), 'wrong': 0.0}
        elif not best:
            best = {'items_per_s': float('nan'), 'chunk': float(chunk), 'wrong': float(wrong)}
    return best
