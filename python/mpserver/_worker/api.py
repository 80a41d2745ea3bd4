"""Worker: the user's code for one item or one batch (the API users subclass).

The loops that feed a worker from its rings are in ``loops``.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, cast

from mpserver._wire import process as _process
from mpserver._wire.errors import ConfigError

__all__ = ['Worker', 'make_worker', 'PassThrough', 'ProcessWorker', 'ThreadWorker', 'make_threadworker']

_W = TypeVar('_W', bound='Worker')


def _normalize_batching(batch_size: int | None, batch_wait_time: float | None) -> tuple[int, float]:
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


def _normalize_cpu_affinity(cpu_affinity: int | Iterable[int] | None) -> list[int] | None:
    if cpu_affinity is None:
        return None
    if isinstance(cpu_affinity, int) and not isinstance(cpu_affinity, bool):
        return [cpu_affinity]
    # A bool is no CPU number (nor iterable): set() rejects it with a TypeError.
    return sorted(set(cast('Iterable[int]', cpu_affinity)))


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
    batch_size_log_cadence
        Accepted for programs written for mpservice <= 0.12, where it set how
        often batch sizes were logged; kept as ``self.batch_size_log_cadence``
        (mpserver logs no batch statistics; its counters are in :meth:`Server.stats`).
    """

    def __init__(
        self,
        *,
        worker_index: int,
        batch_size: int | None = None,
        batch_wait_time: float | None = None,
        cpu_affinity: int | list[int] | None = None,
        batch_size_log_cadence: int | None = 1_000_000,
    ) -> None:
        batch_size, batch_wait_time = _normalize_batching(batch_size, batch_wait_time)
        self.worker_index = worker_index
        self.batch_size = batch_size
        self.batch_wait_time = batch_wait_time
        #: Kept for compatibility with mpservice; mpserver does not log batch statistics.
        self.batch_size_log_cadence = batch_size_log_cadence
        self.name = f'{_process.name()}-{threading.current_thread().name}'
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

    def call(self, x: Any) -> Any:
        """Process one item (``batch_size`` 0) or a list of items (``batch_size >= 1``).

        With batching, return a sequence with one result per input, in order.
        Raise exceptions freely: an exception becomes the result of the item,
        or of every item of the batch, and is re-raised in the caller with
        this worker's traceback attached.  ``x`` (or an element of it) is
        never an exception object.
        """
        raise NotImplementedError

    def stream(self, xx: Iterable[Any]) -> Iterator[Any]:
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
                except Exception as e:  # noqa: BLE001 - the exception is yielded in place of the result
                    y = e
                yield y
        else:
            yield from _threaded_ordered_map(self.call, xx, self.num_stream_threads, f'{type(self).__name__}.stream')

    def cleanup(self, exc: BaseException | None = None) -> None:
        """Called once when the worker stops; ``exc`` is the exception that stopped it, if any."""
        pass


def _threaded_ordered_map(func: Callable[[Any], Any], xx: Iterable[Any], n: int, name: str) -> Iterator[Any]:
    """``func`` over ``xx`` on ``n`` threads; results (or exceptions) in input order.

    A feeder thread pulls from ``xx`` so that a result is yielded as soon as
    it is ready even while ``xx`` is waiting for its next input.
    """
    # Futures in input order; then the feeder's own exception, if any; then None.
    futures: queue.Queue[concurrent.futures.Future[Any] | BaseException | None] = queue.Queue(maxsize=2 * n)
    stop = threading.Event()

    def feed(pool: concurrent.futures.ThreadPoolExecutor) -> None:
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
                except Exception as e:  # noqa: BLE001 - the exception is yielded in place of the result
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


def _func_worker(func: Callable[[Any], Any], base: type[_W]) -> type[_W]:
    """A subclass of ``base`` whose ``call`` is ``func``, named after both."""

    class FuncWorker(base):  # type: ignore[valid-type,misc]  # mypy cannot check a base chosen at run time
        def call(self, x: Any) -> Any:
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

    def call(self, x: Any) -> Any:
        return x
