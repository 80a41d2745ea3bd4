"""Server: the main-process face of a servlet graph.

``call`` and ``stream`` encode inputs (pickle for process workers, object
references for thread workers), hand them to the C++ engine, which takes a
slot in its ledger (the capacity bound), pushes the request into the entry
ring, and blocks with the GIL released until the collector thread delivers
the result into that slot.
"""

from __future__ import annotations

import collections
import multiprocessing
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from time import perf_counter
from typing import final

from . import _core
from ._codec import PickleCodec, ObjectCodec, decode, FLAG_ERROR
from ._errors import ConfigError, ServerBacklogFull, TimeoutError
from ._servlet import Servlet, _Launch

__all__ = ['Server']

#: Data bytes of the ring that carries every result back to the main process.
OUTPUT_RING_BYTES = 8 << 20
CONTROL_RING_BYTES = 256 << 10

_OK = _core.OK
_BACKLOG_FULL = _core.BACKLOG_FULL
_BACKLOG_TIMEOUT = _core.BACKLOG_TIMEOUT
_RESULT_TIMEOUT = _core.RESULT_TIMEOUT
_CLOSED = _core.CLOSED
_PUSH_TIMEOUT = _core.PUSH_TIMEOUT


class _Sized:
    """Inputs that can be iterated without ever blocking."""

    types = (list, tuple, range, str, bytes, bytearray, dict, set, frozenset)


class Server:
    """Runs a servlet and serves requests to it from the main process.

    Use it as a context manager: entering starts every worker (all at once)
    and returns when all are ready; leaving stops them after they finish the
    items they already hold.  ``call`` serves one input; ``stream`` serves an
    iterable, yielding results in input order.  Both are thread-safe and may
    run concurrently.

    Parameters
    ----------
    servlet
        The servlet (graph) to run.
    capacity
        Most requests in progress at once, across all callers and streams.
        A request holds its place until its result comes out of the servlet,
        even if its caller stopped waiting for it.
    """

    @final
    @classmethod
    def get_mp_context(cls):
        """A multiprocessing *spawn* context, for queues, locks etc. that workers share.

        mpserver does not use multiprocessing to run workers; this is for
        user code that needs such objects (pass them through worker kwargs).
        """
        return multiprocessing.get_context('spawn')

    def __init__(self, servlet: Servlet, *, capacity: int = 256):
        if not isinstance(servlet, Servlet):
            raise ConfigError(f'servlet must be a Servlet, got {type(servlet).__name__}')
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            raise ConfigError(f'capacity must be an int > 0, got {capacity!r}')
        self.servlet = servlet
        self._capacity = capacity
        self._engine = None
        self._entry = None
        self._state = 'new'

    def __getstate__(self):
        raise TypeError(f"cannot pickle '{type(self).__name__}' object")

    @property
    def capacity(self) -> int:
        """The ``capacity`` given to the constructor."""
        return self._capacity

    @property
    def backlog(self) -> int:
        """Requests now in the server (accepted, result not yet taken or dropped)."""
        eng = self._engine
        return eng.backlog if eng is not None else 0

    # ------------------------------------------------------------ lifecycle

    def __enter__(self):
        if self._state == 'running':
            raise RuntimeError('this Server is already running')
        self._output = _core.Ring.create(OUTPUT_RING_BYTES, 'mpserver-out')
        self._control = _core.Ring.create(CONTROL_RING_BYTES, 'mpserver-ctl')
        self._supervisor = _core.Supervisor()
        launch = _Launch(self._supervisor, self._control)
        engine = _core.Engine(self._output, self._capacity)
        try:
            entry, local = self.servlet._start(launch, self._output, True)
            launch.spawn_all()
            launch.wait_ready()
        except BaseException:
            self.servlet._kill()
            self._output.close()
            self._supervisor = None
            raise
        self._entry = entry
        self._codec = ObjectCodec if local else PickleCodec
        engine.start()
        self._engine = engine
        self._state = 'running'
        return self

    def __exit__(self, *exc):
        if self._state != 'running':
            return
        self._state = 'stopping'
        try:
            # Workers finish the items they hold, then exit; then the
            # collector drains the last results and stops.
            self.servlet._stop()
        finally:
            engine = self._engine
            engine.stop()
            engine.close()
            err = RuntimeError('the server stopped before this request finished')
            flags, payload = PickleCodec.encode_error(_raised(err))
            engine.fail_pending(flags, payload)
            self._state = 'stopped'
            self._supervisor = None

    def _require_running(self):
        if self._state != 'running':
            if self._state == 'new':
                raise RuntimeError('the Server is not started: use it in a `with` block')
            raise RuntimeError('the Server has been stopped')

    # ------------------------------------------------------------ call

    def call(self, x, /, *, timeout: int | float = 60, backpressure: bool = True):
        """Serve one input and return its result (or raise the worker's exception).

        Parameters
        ----------
        timeout
            Seconds for the whole request, waiting for capacity included.
            Raises :class:`TimeoutError` when the result is not back in time
            (the request keeps its place in the backlog until it completes).
        backpressure
            If the server already holds ``capacity`` requests: ``True`` raises
            :class:`ServerBacklogFull` at once; ``False`` waits for a place, up
            to ``timeout``, then raises :class:`ServerBacklogFull`.
        """
        if self._state != 'running':
            self._require_running()
        t0 = perf_counter()
        flags, payload = self._codec.encode(x)
        status, rflags, result = self._engine.call(self._entry, payload, flags, timeout, backpressure)
        if status == _OK:
            y = decode(rflags, result)
            if rflags & FLAG_ERROR:
                raise y
            return y
        raise self._failure(status, t0)

    def _failure(self, status, t0, t1=None) -> BaseException:
        now = perf_counter()
        if status == _BACKLOG_FULL:
            return ServerBacklogFull(self._capacity)
        if status == _BACKLOG_TIMEOUT:
            return ServerBacklogFull(self._capacity, now - t0)
        if status in (_RESULT_TIMEOUT, _PUSH_TIMEOUT):
            enq = (t1 if t1 is not None else t0) - t0
            return TimeoutError(f'{enq:.3f} seconds enqueue, {now - t0:.3f} seconds total')
        if status == _CLOSED:
            return RuntimeError('the Server has been stopped')
        return RuntimeError(f'unexpected engine status {status}')

    # ------------------------------------------------------------ stream

    def stream(
        self,
        data_stream: Iterable,
        /,
        *,
        return_x: bool = False,
        return_exceptions: bool = False,
        timeout: int | float = 3600,
        preprocessor: Callable | None = None,
    ) -> Iterator:
        """Serve every input of ``data_stream``; yield results in input order.

        Inputs are fed ahead of the results (up to ``capacity`` in flight) so
        all workers stay busy.  ``data_stream`` may be endless; leaving the
        loop early (``break``) is fine: unfinished items are dropped when
        their results arrive.

        Parameters
        ----------
        return_x
            Yield ``(x, y)`` pairs instead of ``y``.
        return_exceptions
            Yield an item's exception in place of its result instead of
            raising it (which ends the stream).
        timeout
            Seconds allowed for each item, from the moment it was fed.
        preprocessor
            A function applied to each input in this thread before it is
            sent; if it raises, that exception is the item's result.  With
            ``return_x``, the original input is returned.
        """
        self._require_running()
        if isinstance(data_stream, _Sized.types):
            gen = self._stream_inline(data_stream, timeout, preprocessor)
        else:
            gen = self._stream_fed(data_stream, timeout, preprocessor)
        return _deliver(gen, return_x, return_exceptions)

    def _submit(self, x, preprocessor, wait, timeout):
        """Encode and submit one input: returns (slot, t0) or an exception."""
        try:
            if preprocessor is not None:
                x = preprocessor(x)
            flags, payload = self._codec.encode(x)
        except Exception as e:
            return e
        t0 = perf_counter()
        r = self._engine.submit(self._entry, payload, flags, wait, timeout)
        if r >= 0:
            return r, t0
        return -r

    def _stream_inline(self, data, timeout, preprocessor):
        """Feeds and drains in the caller's thread (inputs that never block)."""
        engine = self._engine
        window: collections.deque = collections.deque()  # (x, slot|None, t0, error|None)
        it = iter(data)
        carry = _NOTHING
        exhausted = False
        cap = self._capacity
        try:
            while True:
                while not exhausted and len(window) < cap:
                    if carry is not _NOTHING:
                        x, carry = carry, _NOTHING
                    else:
                        try:
                            x = next(it)
                        except StopIteration:
                            exhausted = True
                            break
                    r = self._submit(x, preprocessor, not window, timeout)
                    if isinstance(r, tuple):
                        window.append((x, r[0], r[1], None))
                    elif isinstance(r, BaseException):
                        window.append((x, None, 0.0, r))
                    elif r == _BACKLOG_FULL:
                        carry = x  # other callers hold the capacity: drain ours first
                        break
                    else:
                        window.append((x, None, 0.0, self._failure(r, perf_counter())))
                if not window:
                    return
                x, slot, t0, err = window.popleft()
                yield x, self._collect(engine, slot, t0, timeout, err)
        finally:
            for _, slot, _, _ in window:
                if slot is not None:
                    engine.abandon(slot)

    def _stream_fed(self, data, timeout, preprocessor):
        """A feeder thread pulls from the iterable (which may block), this thread drains."""
        engine = self._engine
        pipe: queue.Queue = queue.Queue(self._capacity)
        stop = threading.Event()

        def drain():
            while True:
                try:
                    item = pipe.get_nowait()
                except queue.Empty:
                    return
                if isinstance(item, tuple) and item[1] is not None:
                    engine.abandon(item[1])

        def feed():
            try:
                for x in data:
                    if stop.is_set():
                        break
                    r = self._submit(x, preprocessor, True, timeout)
                    if isinstance(r, tuple):
                        pipe.put((x, r[0], r[1], None))
                    elif isinstance(r, BaseException):
                        pipe.put((x, None, 0.0, r))
                    else:
                        pipe.put((x, None, 0.0, self._failure(r, perf_counter())))
                    if stop.is_set():
                        break
            except BaseException as e:  # noqa: BLE001 - the iterable failed: end the stream with it
                pipe.put(_Raise(e))
            else:
                pipe.put(_END)
            if stop.is_set():
                drain()

        feeder = threading.Thread(target=feed, name='mpserver.Server.stream.feeder', daemon=True)
        feeder.start()
        try:
            while True:
                item = pipe.get()
                if item is _END:
                    return
                if isinstance(item, _Raise):
                    raise item.exc
                x, slot, t0, err = item
                yield x, self._collect(engine, slot, t0, timeout, err)
        finally:
            stop.set()
            drain()

    def _collect(self, engine, slot, t0, timeout, err):
        """The outcome of one streamed item: (True, value) or (False, exception)."""
        if err is not None:
            return False, err
        left = t0 + timeout - perf_counter()
        if not engine.done(slot) and not engine.wait(slot, left if left > 0 else 0.0):
            engine.abandon(slot)
            return False, TimeoutError(f'0.000 seconds enqueue, {perf_counter() - t0:.3f} seconds total')
        flags, payload = engine.take(slot)
        try:
            y = decode(flags, payload)
        except Exception as e:
            return False, e
        if flags & FLAG_ERROR:
            return False, y
        return True, y

    # ------------------------------------------------------------ introspection

    def debug_info(self) -> dict:
        """A JSON-friendly snapshot: backlog entries, workers, their liveness."""
        eng = self._engine
        backlog = []
        if eng is not None:
            backlog = [{'slot': s, 'state': st, 'age': age} for s, st, age in eng.snapshot()]
        return {
            'type': type(self).__name__,
            'datetime': str(datetime.now(timezone.utc)),
            'perf_counter': perf_counter(),
            'state': self._state,
            'capacity': self._capacity,
            'servlet': self.servlet._debug_info(),
            'collector': 'is_alive' if eng is not None and eng.collector_running else 'done',
            'delivered': eng.delivered if eng is not None else 0,
            'active_threads': [str(t) for t in threading.enumerate()],
            'backlog': backlog,
        }


_NOTHING = object()
_END = object()


class _Raise:
    __slots__ = ('exc',)

    def __init__(self, exc):
        self.exc = exc


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as e:
        return e


def _deliver(gen, return_x, return_exceptions):
    for x, (ok, y) in gen:
        if not ok and not return_exceptions:
            gen.close()
            raise y
        if return_x:
            yield x, y
        else:
            yield y
