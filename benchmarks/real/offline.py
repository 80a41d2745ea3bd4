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
CHUNKS = {'ocr': (1, 4), 'digits': (1, 4, 16), 'digits-onnx': (1, 4, 16)}  # W2: in batches of 32 rows
PEERS = ('mpserver', 'ProcessPoolExecutor.map', 'Pool.imap', 'joblib', 'mpire')

_model: Any = None
_loaded: str = ''  # which workload _model is (loky reuses its processes from one Parallel to the next)


def _load(workload: str) -> None:
    global _model, _loaded
    for k, v in work.THREAD_ENV.items():
        os.environ[k] = v
    _model = work.make(workload)
    _loaded = workload


def _answer(model: Any, item: bytes | list[bytes]) -> Any:
    """One body's answer, or for a list of bodies (a batch of W2 rows) the list of answers, scored at once."""
    if isinstance(model, work.Digits):
        if isinstance(item, list):
            return [a['label'] for a in model.score(item)]
        return model.one(item)['label']
    return model(item)


def _predict(item: bytes | list[bytes]) -> Any:
    return _answer(_model, item)


def _predict_loading(workload: str, body: bytes) -> Any:
    """joblib has no initializer: the first item a loky process gets loads its model."""
    if _loaded != workload:
        _load(workload)
    return _predict(body)


def _mpire_init(workload: str, worker_state: dict) -> None:
    for k, v in work.THREAD_ENV.items():
        os.environ[k] = v
    worker_state['model'] = work.make(workload)


def _mpire_predict(worker_state: dict, body: bytes) -> Any:
    return _answer(worker_state['model'], body)


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


def _timed(run: Callable[[list[bytes]], list[Any]], bodies: list[bytes], chunk: int = 1) -> tuple[list[Any], float]:
    """``run`` over a warm-up of a few chunks per worker (every process started, its model loaded), then over
    ``bodies``, timed."""
    run(bodies[: min(len(bodies) // 2, max(4, 2 * chunk) * workers())])
    start = time.perf_counter()
    out = run(bodies)
    return out, time.perf_counter() - start


def _mpserver(workload: str, bodies: list[bytes], chunk: int) -> tuple[list[Any], float]:
    from mpserver import Server

    from benchmarks.real.peers import mpserver_native

    with Server(mpserver_native.SERVLETS[workload]()) as server:
        out, seconds = _timed(lambda xs: list(server.stream(xs)), bodies)
    return [r['label'] if isinstance(r, dict) else r for r in out], seconds


def _executor(workload: str, bodies: list[bytes], chunk: int) -> list[Any]:
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context('spawn')
    with ProcessPoolExecutor(workers(), mp_context=context, initializer=_load, initargs=(workload,)) as pool:
        return _timed(lambda xs: list(pool.map(_predict, xs, chunksize=chunk)), bodies, chunk)


def _pool(workload: str, bodies: list[bytes], chunk: int) -> list[Any]:
    context = multiprocessing.get_context('spawn')
    with context.Pool(workers(), initializer=_load, initargs=(workload,)) as pool:
        return _timed(lambda xs: list(pool.imap(_predict, xs, chunksize=chunk)), bodies, chunk)


def _joblib(workload: str, bodies: list[bytes], chunk: int) -> list[Any]:
    from joblib import Parallel, delayed

    with Parallel(n_jobs=workers(), batch_size=chunk, backend='loky') as parallel:
        return _timed(lambda xs: parallel(delayed(_predict_loading)(workload, b) for b in xs), bodies, chunk)


def _mpire(workload: str, bodies: list[bytes], chunk: int) -> list[Any]:
    from mpire import WorkerPool

    init = functools.partial(_mpire_init, workload)
    with WorkerPool(workers(), use_worker_state=True, start_method='spawn', keep_alive=True) as pool:
        # mpire unpacks a list or tuple item into arguments: each item goes in a 1-tuple.
        args = [(x,) for x in bodies]
        return _timed(lambda xs: pool.map(_mpire_predict, xs, chunk_size=chunk, worker_init=init), args, chunk)


RUNNERS: dict[str, Callable[[str, list[bytes], int], tuple[list[Any], float]]] = {
    'mpserver': _mpserver,
    'ProcessPoolExecutor.map': _executor,
    'Pool.imap': _pool,
    'joblib': _joblib,
    'mpire': _mpire,
}


def measure(peer: str, workload: str, bodies: list[bytes], check: Callable[[int, Any], bool]) -> dict[str, float]:
    """Items/s of the best chunk size, after a warm-up (start-up and model loading are not timed).

    Returns ``{'items_per_s', 'chunk', 'wrong'}``; a chunk size whose run
    returned a wrong answer does not count.
    """
    best: dict[str, float] = {}
    # The pools get W2's rows in batches of BATCH_SIZE (what a user of a pool would do), as mpserver's servlet
    # batches them; their chunk size is then in batches.
    batches = peer != 'mpserver' and work.batched(workload)
    items: list[Any] = [bodies[i : i + work.BATCH_SIZE] for i in range(0, len(bodies), work.BATCH_SIZE)]
    for chunk in (1,) if peer == 'mpserver' else CHUNKS[workload]:
        out, seconds = RUNNERS[peer](workload, items if batches else bodies, chunk)
        if batches:
            out = [label for batch in out for label in batch]
        wrong = sum(not check(i, r) for i, r in enumerate(out)) + abs(len(out) - len(bodies))
        rate = len(bodies) / seconds
        if not wrong and rate > best.get('items_per_s', 0.0):
            best = {'items_per_s': rate, 'chunk': float(chunk), 'wrong': 0.0}
        elif not best:
            best = {'items_per_s': float('nan'), 'chunk': float(chunk), 'wrong': float(wrong)}
    return best
