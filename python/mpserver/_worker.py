"""Worker: the user's code for one item or one batch, and the loop that feeds it.

The loop (``_serve``) takes work from the worker's input ring through the C++
batcher (the GIL is released while it waits), runs ``preprocess`` and
``call`` (or the user's ``stream``), and pushes each item's result or error
to the output ring.  It is the only Python on a worker's hot path.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Callable

from ._codec import FLAG_ERROR, decode, pass_error
from ._errors import ConfigError

__all__ = ['Worker', 'make_worker', 'PassThrough', 'ProcessWorker', 'ThreadWorker', 'make_threadworker']

# Name of the current worker process, set by mpserver._child; in the main
# process it stays None and multiprocessing's process name is used.
_process_name: str | None = None
# True while a worker process imports the user's main module (see _child).
_bootstrapping = False


def _current_process_name() -> str:
    if _process_name is not None:
        return _process_name
    import multiprocessing

    return multiprocessing.current_process().name


def _normalize_batching(batch_size, batch_wait_time):
    if batch_size is None:
        batch_size = 0
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ConfigError(f'batch_size must be None or an int >= 0, got {batch_size!r}')
    if batch_wait_time is not None:
        if isinstance(batch_wait_time, bool) or not isinstance(batch_wait_time, (int, float)):
            raise ConfigError(f'batch_wait_time must be None or a number, got {batch_wait_time!r}')
        if not batch_wait_time >= 0:
            raise ConfigError(f'batch_wait_time must be >= 0, got {batch_wait_time!r}')
    if batch_size <= 1:
        if batch_wait_time is None:
            batch_wait_time = 0
        elif batch_wait_time != 0:
            raise ConfigError(
                f'batch_wait_time={batch_wait_time!r} has no meaning with batch_size={batch_size}: '
                'leave it unset (or 0), or use batch_size > 1'
            )
    elif batch_wait_time is None:
        batch_wait_time = 0.01
    return batch_size, batch_wait_time


def _normalize_cpu_affinity(cpu_affinity):
    if cpu_affinity is None:
        return None
    if isinstance(cpu_affinity, int) and not isinstance(cpu_affinity, bool):
        return [cpu_affinity]
    return sorted(set(cpu_affinity))


class Worker:
    """The unit of work of a servlet: subclass it and implement :meth:`call`.

    One instance runs in each worker process of a :class:`ProcessServlet`
    (or each thread of a :class:`ThreadServlet`) and processes the items
    that reach it, one at a time or in batches.

    Parameters
    ----------
    worker_index
        Position of this worker within its servlet, from 0.  Supplied by the
        servlet; available as ``self.worker_index``.
    batch_size
        ``None`` or 0: :meth:`call` receives one item.  ``n >= 1``: :meth:`call`
        receives a list of up to ``n`` items and returns a sequence of as many
        results (``1`` gives batches of one).
    batch_wait_time
        Seconds to keep gathering a batch after its first item arrived.  Only
        meaningful with ``batch_size > 1``, where it defaults to 0.01; with 0
        a batch takes just what is already queued.  Any non-zero value with
        ``batch_size`` 0 or 1 is an error.
    cpu_affinity
        CPUs this worker's process is pinned to (an int or a list of ints), or
        ``None``.  Supplied by :class:`ProcessServlet` from its ``cpus``.
    """

    def __init__(
        self,
        *,
        worker_index: int,
        batch_size: int | None = None,
        batch_wait_time: float | None = None,
        cpu_affinity: int | list[int] | None = None,
    ):
        batch_size, batch_wait_time = _normalize_batching(batch_size, batch_wait_time)
        self.worker_index = worker_index
        self.batch_size = batch_size
        self.batch_wait_time = batch_wait_time
        #: Kept for compatibility with mpservice; mpserver does not log batch statistics.
        self.batch_size_log_cadence = 1_000_000
        self.name = f'{_current_process_name()}-{threading.current_thread().name}'
        cpu_affinity = _normalize_cpu_affinity(cpu_affinity)
        if cpu_affinity is not None:
            os.sched_setaffinity(0, cpu_affinity)
        self.cpu_affinity = cpu_affinity
        #: With a value > 0, the default :meth:`stream` runs :meth:`call` on
        #: this many threads at once (for I/O-bound calls), keeping order.
        self.num_stream_threads: int = 0
        # A subclass may define ``preprocess(x)`` (a method or a function
        # attribute): it runs on each single item before ``call``; if it
        # raises, that exception becomes the item's result and ``call`` never
        # sees the item.

    def call(self, x):
        """Process one item (``batch_size`` 0) or a list of items (``batch_size >= 1``).

        With batching, return a sequence with one result per input, in order.
        Raise exceptions freely: an exception becomes the result of the item,
        or of every item of the batch, and is re-raised in the caller with
        this worker's traceback attached.  ``x`` (or an element of it) is
        never an exception object.
        """
        raise NotImplementedError

    def stream(self, xx: Iterable) -> Iterator:
        """Yield the result of :meth:`call` for each input of ``xx``, in order.

        An exception raised by :meth:`call` is yielded in place of the result.
        ``xx`` yields what :meth:`call` takes (batches when batching).  With
        ``num_stream_threads > 0`` the calls run concurrently on that many
        threads.  Override this only for special needs; the default serving
        loop calls :meth:`call` directly when neither is customised.
        """
        if self.num_stream_threads < 1:
            call = self.call
            for x in xx:
                try:
                    y = call(x)
                except Exception as e:
                    y = e
                yield y
        else:
            yield from _threaded_ordered_map(self.call, xx, self.num_stream_threads,
                                             f'{type(self).__name__}.stream')

    def cleanup(self, exc=None):
        """Called once when the worker stops; ``exc`` is the exception that stopped it, if any."""
        pass


def _threaded_ordered_map(func, xx, n, name) -> Iterator:
    """``func`` over ``xx`` on ``n`` threads; results (or exceptions) in input order.

    A feeder thread pulls from ``xx`` so that a result is yielded as soon as
    it is ready even while ``xx`` is waiting for its next input.
    """
    futures: queue.Queue = queue.Queue(maxsize=2 * n)
    stop = threading.Event()

    def feed(pool):
        try:
            for x in xx:
                if stop.is_set():
                    break
                futures.put(pool.submit(func, x))
        except BaseException as e:  # noqa: BLE001 - delivered to the consumer
            futures.put(e)
        finally:
            futures.put(None)

    with concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix=name) as pool:
        feeder = threading.Thread(target=feed, args=(pool,), name=f'{name}.feeder', daemon=True)
        feeder.start()
        try:
            while True:
                f = futures.get()
                if f is None:
                    break
                if isinstance(f, BaseException):
                    raise f
                try:
                    yield f.result()
                except Exception as e:
                    yield e
        finally:
            stop.set()
            while feeder.is_alive():
                try:
                    futures.get(timeout=0.05)
                except queue.Empty:
                    pass
            feeder.join()


def make_worker(func: Callable[[Any], Any]) -> type[Worker]:
    """A :class:`Worker` subclass whose ``call`` is ``func`` — for quick steps in a ThreadServlet.

    The class is created on the fly, so a process worker cannot import it by
    name; use it in a :class:`ThreadServlet`, or define a module-level
    subclass for a :class:`ProcessServlet`.
    """

    return _func_worker(func, Worker)


def _func_worker(func, base: type) -> type:
    """A subclass of ``base`` whose ``call`` is ``func``, named after both."""

    class FuncWorker(base):
        def call(self, x):
            return func(x)

    FuncWorker.__name__ = f'{base.__name__}-{getattr(func, "__name__", "func")}'
    FuncWorker.__qualname__ = FuncWorker.__name__
    return FuncWorker


class ProcessWorker(Worker):
    """Older mpservice name for a :class:`Worker` meant for a :class:`ProcessServlet`.

    Identical to :class:`Worker`; kept so that code written for older mpservice
    versions runs unchanged.
    """


class ThreadWorker(Worker):
    """Older mpservice name for a :class:`Worker` meant for a :class:`ThreadServlet`.

    Identical to :class:`Worker`; kept so that code written for older mpservice
    versions runs unchanged.
    """


def make_threadworker(func: Callable[[Any], Any]) -> type[ThreadWorker]:
    """Older mpservice name of :func:`make_worker`; the class is a :class:`ThreadWorker`."""
    return _func_worker(func, ThreadWorker)


class PassThrough(Worker):
    """Returns its input unchanged; handy as an ensemble member that carries the input along."""

    def call(self, x):
        return x


# --------------------------------------------------------------------- serving


def _serve(worker: Worker, inp, out, codec, sole: bool = False) -> None:
    """Run ``worker`` on items from ring ``inp`` until it is closed and drained.

    ``codec`` encodes results for ``out`` (pickles across processes, object
    references inside the main process).  ``sole``: this is the only worker
    reading ``inp``, so it may take every queued item in one crossing (each
    result is still pushed as soon as it is ready).
    """
    customised = type(worker).stream is not Worker.stream or worker.num_stream_threads > 0
    if customised:
        _serve_via_stream(worker, inp, out, codec)
    elif worker.batch_size > 1:
        _serve_batches(worker, inp, out, codec)
    else:
        _serve_items(worker, inp, out, codec, 64 if sole else 1)


def _serve_items(worker, inp, out, codec, take=1):
    # The hot loop for one-at-a-time workers: it inlines what _admit() does
    # for batches, to keep per-item Python work to the minimum.
    preprocess = getattr(worker, 'preprocess', None)
    call = worker.call
    wrap = worker.batch_size == 1  # batches of one: call takes [x]
    gather = inp.gather
    push = out.push
    encode_result = codec.encode_result
    encode_error = codec.encode_error
    while True:
        items = gather(take, 0.0, None)
        if items is None:
            return
        for mid, flags, aux, payload in items:
            if flags & FLAG_ERROR:  # an upstream error: pass it through
                push(mid, *pass_error(flags, payload, codec), aux)
                continue
            try:
                x = decode(flags, payload)
                if preprocess is not None:
                    x = preprocess(x)
                y = call([x])[0] if wrap else call(x)
            except Exception as e:
                f, p = encode_error(e)
            else:
                f, p = encode_result(y)
            push(mid, f, p, aux)


def _admit(items, preprocess, codec, reject):
    """Decode (and preprocess) a gathered batch of messages.

    Returns ``(ids, xs)`` of the items that go on to ``call``; every other
    item is handed to ``reject(id, flags, payload, aux)`` at once: upstream
    errors as they came (see _codec.pass_error), decode and ``preprocess``
    failures as that item's error.
    """
    ids, xs = [], []
    for mid, flags, aux, payload in items:
        if flags & FLAG_ERROR:
            reject(mid, *pass_error(flags, payload, codec), aux)
            continue
        try:
            x = decode(flags, payload)
            if preprocess is not None:
                x = preprocess(x)
        except Exception as e:
            reject(mid, *codec.encode_error(e), aux)
            continue
        ids.append(mid)
        xs.append(x)
    return ids, xs


def _batch_outcome(worker, ids, xs, ys, codec) -> list:
    """The (id, flags, payload) messages for a batch's results, or its error.

    ``ys`` is what ``call`` returned for ``xs``, or the exception it raised.
    """
    tb = None
    if not isinstance(ys, Exception) and len(ys) != len(xs):
        msg = f'{type(worker).__name__}.call returned {len(ys)} results for a batch of {len(xs)} items'
        ys, tb = ValueError(msg), f'ValueError: {msg}\n'
    if isinstance(ys, Exception):
        err = codec.encode_error(ys, tb)
        return [(mid, *err) for mid in ids]
    encode_result = codec.encode_result
    return [(mid, *encode_result(y)) for mid, y in zip(ids, ys)]


def _serve_batches(worker, inp, out, codec):
    preprocess = getattr(worker, 'preprocess', None)
    call = worker.call
    size, wait = worker.batch_size, float(worker.batch_wait_time)
    gather = inp.gather
    push_many = out.push_many
    while True:
        items = gather(size, wait, None)
        if items is None:
            return
        rejected = []
        ids, xs = _admit(items, preprocess, codec, lambda *m: rejected.append(m[:3]))
        results = rejected
        if xs:
            try:
                ys = call(xs)
            except Exception as e:
                ys = e
            results += _batch_outcome(worker, ids, xs, ys, codec)
        push_many(results, 0)


def _serve_via_stream(worker, inp, out, codec):
    """The general loop, for workers that customise ``stream`` or use stream threads.

    Items go into ``worker.stream`` as a generator; results come out in the
    same order, and are paired with their ids through a FIFO.
    """
    preprocess = getattr(worker, 'preprocess', None)
    size, wait = worker.batch_size, float(worker.batch_wait_time)
    batched = size > 1
    wrap = size == 1
    pending: collections.deque = collections.deque()  # ids, or (ids, xs) per batch
    push = out.push

    def inputs():
        while True:
            items = inp.gather(size if batched else 1, wait if batched else 0.0, None)
            if items is None:
                return
            ids, xs = _admit(items, preprocess, codec, push)
            if batched:
                if xs:
                    pending.append((ids, xs))
                    yield xs
            else:
                for mid, x in zip(ids, xs):
                    pending.append(mid)
                    yield [x] if wrap else x

    for y in worker.stream(inputs()):
        if batched:
            ids, xs = pending.popleft()
            out.push_many(_batch_outcome(worker, ids, xs, y, codec), 0)
        else:
            mid = pending.popleft()
            if isinstance(y, Exception):
                push(mid, *codec.encode_error(y), 0)
            else:
                push(mid, *codec.encode_result(y[0] if wrap else y), 0)
