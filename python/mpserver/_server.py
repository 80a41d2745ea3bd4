"""Server: the main-process face of a servlet graph.

``call`` and ``stream`` encode inputs (pickle for process workers, object
references for thread workers), hand them to the C++ engine, which takes a
slot in its request book (the capacity bound), pushes the request into the
entry ring, and blocks with the GIL released until the collector thread
delivers the result into that slot.  The asyncio front (``_async``) submits
through the same request path.
"""

from __future__ import annotations

import collections
import itertools
import logging
import multiprocessing
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from time import perf_counter
from typing import IO, TYPE_CHECKING, Any, TypeAlias, cast, final

from . import _core, _process
from ._chunking import ChunkSizer, encode_run
from ._config import check_seconds, normalize_cpus
from ._errors import ConfigError, TimeoutError, check_timeout
from ._launch import Launch
from ._logs import LogPump, log_started
from ._requests import BACKLOG_FULL, OK, RESULT_TIMEOUT, RequestPath, failure, result
from ._servlet import Servlet
from ._wire import FLAG_ERROR, Codec, ObjectCodec, PickleCodec, decode

if TYPE_CHECKING:
    from . import _stats
    from ._async_port import Ports
    from ._front import HttpService
    from ._watch import Watch

    #: An input in a stream's window: ``(x, its local error or None)``; a fed
    #: stream queues a list, whose error its feeder may set after queueing it.
    _InWindow: TypeAlias = tuple[Any, BaseException | None] | list[Any]

__all__ = ['Server']

#: Seconds a busy worker gets to finish its item when the server is
#: interrupted (Ctrl-C) before it is killed.
STOP_GRACE = 2.0

#: The default ``stop_grace`` of a Server (see its docstring).
DEFAULT_STOP_GRACE = 30.0

_log = logging.getLogger('mpserver')

#: Meter records of a server (cpp/meter.hpp): one for the request book, one
#: per worker and per ensemble.  A sparse memfd: unused records cost nothing.
METER_RECORDS = 4096

_READY = int(_core.Outcome.READY)
_LOCAL = int(_core.Outcome.LOCAL)
_VALUES = _core.OUTCOME_VALUES

# A stream sends inputs in runs of up to _CHUNK (one ring push, one wake-up)
# and takes up to _DRAIN_MAX ready results per crossing into the core.
_CHUNK = 64
_DRAIN_MAX = 256


def _popleft_n(xs: collections.deque[Any], n: int) -> None:
    """Drops the first ``n`` entries of ``xs``, the loop run in C (a zero-length
    deque consumes the calls), not once per item in Python."""
    collections.deque(itertools.starmap(xs.popleft, itertools.repeat((), n)), maxlen=0)


#: Inputs that can be iterated without ever blocking: a stream over one of
#: these feeds and drains in the caller's thread; anything else (generators,
#: queues, sockets, ...) is pulled by a feeder thread, because pulling the
#: next input may block while results are ready to be yielded.
_NON_BLOCKING_INPUTS = (list, tuple, range, str, bytes, bytearray, dict, set, frozenset)


#: Servers running in this process; a forked child marks each as foreign.
_RUNNING: weakref.WeakSet[Server] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A server belongs to the process that entered it.  A forked child has
    a copy of the parent's servers but none of their threads, and their
    rings are the parent's shared memory: every use in the child raises at
    once (``_require_running``), and leaving a ``with`` block there touches
    nothing of the parent's (the C++ objects are leaked in the child, see
    cpp/process_local.hpp)."""
    for server in list(_RUNNING):
        server._state = 'forked'
    _RUNNING.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _main_cpus(main_cpu: object) -> list[int] | None:
    """The CPUs of the older ``main_cpu`` keyword: None, an int or a list of ints."""
    if main_cpu is None:
        return None
    try:
        cpus = normalize_cpus([main_cpu])[0]
    except ConfigError as e:
        raise ConfigError(f'main_cpu must be a CPU number or a list of them, got {main_cpu!r} ({e})') from None
    return [cpus] if isinstance(cpus, int) else cpus


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
    main_cpu
        Older mpservice API (<= 0.12): an int or a list of ints pins the main
        process to those CPUs when the server is built (worker processes
        without ``cpus`` of their own inherit them).  ``None`` (the default)
        pins nothing.
    backlog
        Older mpservice name of ``capacity`` (deprecated: a
        ``DeprecationWarning``); the ``backlog`` property is the 0.16.8 one.
    sys_info_log_cadence
        Older mpservice API, deprecated there since 0.12.1: accepted with a
        ``DeprecationWarning``; it has no effect.
    stop_grace
        Seconds (default 30) that leaving the ``with`` block gives a stuck
        worker.  Leaving finishes the work in flight, but a worker process
        still processing one item ``stop_grace`` seconds after the stop began
        (or after it took that item, if later), or still alive
        ``stop_grace`` seconds after its work was done (a non-daemon thread
        of yours can keep it alive), is killed; the items it held fail with
        :class:`WorkerCrashedError` saying so, requests still queued behind
        it fail with ``RuntimeError('the server stopped before this request
        finished')``, and a warning goes to the ``mpserver`` logger.  A
        worker thread cannot be killed: it is left running (a daemon thread)
        and the requests it held fail the same way.  ``None`` waits as long
        as it takes (mpservice's behaviour).
    """

    @final
    @classmethod
    def get_mp_context(cls) -> multiprocessing.context.SpawnContext:
        """A multiprocessing *spawn* context, for queues, locks etc. that workers share.

        mpserver does not use multiprocessing to run workers; this is for
        user code that needs such objects (pass them through worker kwargs).
        """
        return multiprocessing.get_context('spawn')

    def __init__(
        self,
        servlet: Servlet,
        *,
        capacity: int = 256,
        main_cpu: int | list[int] | None = None,
        backlog: int | None = None,
        sys_info_log_cadence: int | None = None,
        stop_grace: float | None = DEFAULT_STOP_GRACE,
    ) -> None:
        if not isinstance(servlet, Servlet):
            raise ConfigError(f'servlet must be a Servlet, got {type(servlet).__name__}')
        if backlog is not None:
            warnings.warn(
                'the parameter `backlog` is deprecated (mpservice 0.12.7): use `capacity` instead',
                DeprecationWarning,
                stacklevel=2,
            )
            capacity = backlog
        if sys_info_log_cadence is not None:
            warnings.warn(
                'the parameter `sys_info_log_cadence` is deprecated (mpservice 0.12.1) and has no effect',
                DeprecationWarning,
                stacklevel=2,
            )
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            raise ConfigError(f'capacity must be an int > 0, got {capacity!r}')
        self._stop_grace = check_seconds('stop_grace', stop_grace)
        cpus = _main_cpus(main_cpu)
        if cpus is not None:
            os.sched_setaffinity(0, cpus)  # as mpservice did: the whole main process, from here on
        self.servlet = servlet
        self._capacity = capacity
        self._main_cpus = cpus
        self._engine: Any = None
        self._entry: Any = None
        self._codec: Codec = PickleCodec
        self._path: RequestPath | None = None
        self._guardian: Any = None
        self._supervisor: Any = None
        self._board: Any = None  # requests whose callers gave up (cpp/cancel_board.hpp)
        self._meter: Any = None  # the core's live counters (cpp/meter.hpp)
        self._layout: _stats.Layout | None = None  # which counters belong to which servlet
        self._top: str | None = None  # the file announcing this server to `python -m mpserver top`
        self._watches: list[Watch] = []  # live views (_watch.py), stopped first thing at exit
        self._dropped = 0  # items workers skipped for callers who had gone (of the last run)
        self._output: Any = None
        self._control: Any = None
        self._logs: LogPump | None = None  # hands on what the control ring carries (_logs.py)
        self._state = 'new'
        self._pid = 0  # the process that entered the server
        self._ports: Ports | None = None  # the asyncio side, made on first use (_async_port.py)
        self._ports_lock = threading.Lock()
        self._fronts: set[HttpService] = set()  # native HTTP fronts serving it (_front.py), drained first at exit
        self._http_stop: threading.Event | None = None  # set by stop_http() to end serve_http()
        self._chunk_workers = 0  # workers reading the entry ring, if it takes chunks (_chunking)

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(f"cannot pickle '{type(self).__name__}' object")

    @property
    def capacity(self) -> int:
        """The ``capacity`` given to the constructor."""
        return self._capacity

    @property
    def backlog(self) -> int:
        """Requests now in the server (accepted, result not yet taken or dropped)."""
        if self._state == 'forked':
            self._require_running()
        eng = self._engine
        return eng.backlog if eng is not None else 0

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> Server:
        if self._state == 'running':
            raise RuntimeError('this Server is already running')
        if self._state == 'forked':
            self._require_running()
        if _process.bootstrapping():
            raise RuntimeError(
                'a Server was started while a worker process was importing your main module: '
                "start servers under `if __name__ == '__main__':` in the main script, "
                'otherwise every worker process would start the server again'
            )
        _process.keep_heap()
        started_at = perf_counter()
        self._output = _core.Ring.create(_core.OUTPUT_RING_BYTES, 'mpserver-out')
        self._control = _core.Ring.create(_core.CONTROL_RING_BYTES, 'mpserver-ctl')
        self._supervisor = _core.Supervisor()
        self._board = _core.CancelBoard.create(self._capacity)
        self._meter = _core.MeterBoard.create(METER_RECORDS)
        launch = Launch(self._supervisor, self._control, self._board, self._meter)
        launch.output = self._output
        engine = _core.Engine(self._output, self._capacity, self._board, self._meter)
        try:
            entry, local = self.servlet._start(launch, self._output, True)
            self._chunk_workers = self.servlet._chunk_readers()
            launch.spawn_all()
            # Main-process only, and imported while the workers start: every
            # worker imports this package, and never needs these.
            from . import _stats, _top  # noqa: F401 - _stats: for the servlets' _layout()

            launch.wait_ready()
        except BaseException:
            self.servlet._kill()
            self._output = self._control = self._supervisor = self._board = self._meter = None
            raise
        self._layout = self.servlet._layout('0')
        from . import _top

        self._top = _top.announce(self._meter, self._layout, self._capacity)
        self._entry = entry
        self._codec = ObjectCodec if local else PickleCodec
        # From now on a worker that dies is noticed and replaced.
        self._guardian = _core.Guardian(self._supervisor)
        self.servlet._guard(self._guardian)
        # The guardian's events and the workers' log records (also those of
        # restarted workers) go to logging from now on.
        self._guardian.set_events(self._control)
        self._logs = LogPump(self._control, launch.names)
        self._logs.start()
        self._guardian.start()
        msg = "the server's output ring was found corrupt; this request was lost"
        engine.set_failure(*PickleCodec.encode_error(RuntimeError(msg), f'RuntimeError: {msg}\n'))
        engine.start()
        self._engine = engine
        self._path = RequestPath(engine, entry, self._codec, self._capacity)
        self._pid = os.getpid()
        self._state = 'running'
        _RUNNING.add(self)
        log_started(len(launch.names), launch.thread_count, self.servlet._label(), perf_counter() - started_at)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self._state != 'running':
            return  # also in a forked child: the parent's server is not ours to stop
        for front in list(self._fronts):
            front.stop(0.0)  # nothing new comes in; requests still waiting get 503
        for view in self._watches:
            view.stop()  # a last frame with the final numbers, before anything stops
        self._state = 'stopping'
        _RUNNING.discard(self)
        _log.info('stopping the server of %s%s', self.servlet._label(), f' ({exc_type.__name__})' if exc_type else '')
        guardian = self._guardian
        if guardian is not None:
            # Deaths from now on are failed, not repaired; workers stuck for
            # longer than the grace are killed.
            guardian.stop(self._stop_grace)
        try:
            if exc_type is not None and not issubclass(exc_type, Exception):
                # KeyboardInterrupt, SystemExit: stop now, drop queued items,
                # give busy workers a moment to finish, then kill them.
                self.servlet._kill(STOP_GRACE)
            else:
                # Workers finish the items they hold, then exit; then the
                # collector drains the last results and stops.
                try:
                    self.servlet._stop()
                except BaseException:
                    self.servlet._kill(STOP_GRACE)
                    raise
        finally:
            engine = self._engine
            engine.stop()
            engine.close()
            msg = 'the server stopped before this request finished'
            engine.fail_pending(*PickleCodec.encode_error(RuntimeError(msg), f'RuntimeError: {msg}\n'))
            del engine
            with self._ports_lock:
                ports, self._ports = self._ports, None
            if ports is not None:
                ports.close()
            self._state = 'stopped'
            # Drop the rings, the engine and the supervisor thread now (a
            # stream window still open keeps the engine alive on its own).
            self._engine = self._entry = self._output = self._control = self._path = None
            self._guardian = guardian = None  # before the supervisor it watches
            self._supervisor = None
            logs, self._logs = self._logs, None
            if logs is not None and not logs.close():  # every worker is gone: what is left, then None
                _log.warning('the log records left on the control ring were not all handled within 10 s')
            self._dropped = self._board.dropped
            self._board = None
            self._meter = self._layout = None
            if self._top is not None:
                from . import _top

                _top.withdraw(self._top)
            self._top = None

    def _async_ports(self) -> Ports:
        """The asyncio side of this running server (made on first use)."""
        self._require_running()
        with self._ports_lock:
            if self._ports is None:
                from ._async_port import Ports

                assert self._path is not None
                self._ports = Ports(self._path)
            return self._ports

    def _require_running(self) -> None:
        if self._state != 'running':
            if self._state == 'new':
                raise RuntimeError('the Server is not started: use it in a `with` block')
            if self._state == 'forked':
                raise RuntimeError(
                    f'this Server runs in process {self._pid}; a forked child process (pid {os.getpid()}) '
                    'cannot use it: start a new Server in the child, or start child processes with the '
                    "'spawn' or 'forkserver' method"
                )
            raise RuntimeError('the Server has been stopped')

    # ------------------------------------------------------------ call

    def call(self, x: Any, /, *, timeout: int | float = 60, backpressure: bool = True) -> Any:
        """Serve one input and return its result (or raise the worker's exception).

        Parameters
        ----------
        timeout
            Seconds for the whole request, waiting for capacity included.
            Raises :class:`TimeoutError` when the result is not back in time
            (the request keeps its place in the backlog until it completes;
            if no worker has started it yet, it is skipped).  This is the
            caller's deadline and never stops a worker: for a limit on the
            work itself, see ``ProcessServlet(item_timeout=...)``.
        backpressure
            If the server already holds ``capacity`` requests: ``True`` raises
            :class:`ServerBacklogFull` at once; ``False`` waits for a place, up
            to ``timeout``, then raises :class:`ServerBacklogFull`.
        """
        engine, entry = self._engine, self._entry
        if engine is None or self._state != 'running':
            self._require_running()
        if timeout.__class__ is not int and timeout.__class__ is not float or timeout <= 0:
            check_timeout(timeout)
        t0 = perf_counter()
        flags, payload = self._codec.encode(x)
        status, rflags, out = engine.call(entry, payload, flags, timeout, backpressure)
        if status == OK:
            return result(rflags, out)
        raise failure(status, self._capacity, t0, out if status == RESULT_TIMEOUT else None)

    async def async_call(self, x: Any, /, *, timeout: int | float = 60, backpressure: bool = True) -> Any:
        """``await server.async_call(x)``: :meth:`call` for asyncio code (older mpservice API).

        The calling coroutine awaits the result without blocking its event
        loop; cancellation behaves as in :meth:`AsyncServer.call`.
        """
        check_timeout(timeout)
        return await self._async_ports().call(x, timeout, backpressure)

    # ------------------------------------------------------------ stream

    def stream(
        self,
        data_stream: Iterable[Any],
        /,
        *,
        return_x: bool = False,
        return_exceptions: bool = False,
        timeout: int | float = 3600,
        preprocessor: Callable[[Any], Any] | None = None,
        chunk_size: int | None = None,
    ) -> Iterator[Any]:
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
        chunk_size
            (mpserver only.)  How many small inputs may travel together as
            one message to the workers and back.  ``None`` (the default):
            adaptive — when the servlet is a :class:`ProcessServlet` without
            batching, items whose work is short travel in chunks of up to 64,
            sized from how fast results come back, and slow items travel
            singly; ``1``: always singly; ``k > 1``: chunks of ``k`` whenever
            ``k`` inputs are at hand.  Order, errors, timeouts and
            ``capacity`` count per item whatever the transport; a worker held
            up on one item hands the items of its chunk that it has not
            started back to its siblings.  See docs/semantics.md.
        """
        self._require_running()
        check_timeout(timeout)
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f'chunk_size must be None or an int >= 1, got {chunk_size!r}')
        if isinstance(data_stream, _NON_BLOCKING_INPUTS):
            return self._stream_inline(data_stream, timeout, preprocessor, return_x, return_exceptions, chunk_size)
        return self._stream_fed(data_stream, timeout, preprocessor, return_x, return_exceptions)

    def _window(self, timeout: float) -> Any:
        engine, entry = self._engine, self._entry
        if engine is None:
            self._require_running()
        return _core.StreamWindow(engine, entry, timeout)

    def _encode_for_stream(self, x: Any, preprocessor: Callable[[Any], Any] | None) -> tuple[Any, Exception | None]:
        """((flags, payload), None) or (None, exception) for one input."""
        try:
            if preprocessor is not None:
                x = preprocessor(x)
            return self._codec.encode(x), None
        except Exception as e:  # noqa: BLE001 - a preprocess or encode failure is this item's result
            return None, e

    def _outcomes(
        self,
        win: Any,
        xs: collections.deque[_InWindow],
        timeout: float,
        return_x: bool,
        return_exceptions: bool,
        wait: bool = True,
    ) -> Iterator[Any]:
        """Yields what the stream's consumer sees for the window's ready prefix
        (waiting for its head, unless ``wait`` is false)."""
        pop = xs.popleft
        for outcome, flags, payload in win.drain(_DRAIN_MAX, wait):
            if outcome == _VALUES:  # a run of results from chunks: plain values
                if return_x:
                    for y in payload:
                        yield pop()[0], y
                else:
                    _popleft_n(xs, len(payload))
                    yield from payload
                continue
            x, err = pop()
            if outcome == _READY:
                try:
                    y = decode(flags, payload)
                except Exception as e:  # noqa: BLE001 - an undecodable result is this item's error
                    y, flags = e, FLAG_ERROR
                if flags & FLAG_ERROR and not return_exceptions:
                    raise y
            elif outcome == _LOCAL:
                y = err
                if not return_exceptions:
                    raise cast(BaseException, y)  # an entry the window counts as local has its error set
            else:  # timed out
                y = TimeoutError(f'item not done within its timeout of {timeout} seconds')
                if not return_exceptions:
                    raise y
            yield (x, y) if return_x else y

    def _stream_inline(
        self,
        data: Iterable[Any],
        timeout: float,
        preprocessor: Callable[[Any], Any] | None,
        return_x: bool,
        return_exceptions: bool,
        chunk_size: int | None = None,
    ) -> Iterator[Any]:
        """Feeds and drains in the caller's thread: for inputs that never block."""
        win = self._window(timeout)
        cap = self._capacity
        xs: collections.deque[_InWindow] = collections.deque()  # inputs in the window: (x, local error)
        # pulled and encoded, not yet sent: (x, (flags, payload), None) or (x, None, local error)
        todo: collections.deque[tuple[Any, Any, Exception | None]] = collections.deque()
        it = iter(data)
        exhausted = False
        encode = self._encode_for_stream
        sizer = self._chunk_sizer(chunk_size) if preprocessor is None else None
        try:
            while True:
                chunk = sizer.size() if sizer is not None else 1
                if chunk > 1 and not exhausted and not todo:
                    # Small items, deep backlog: the next run goes as one chunk
                    # (_chunking) once the capacity has room for all of it.
                    if cap - len(xs) >= chunk:
                        exhausted = self._send_chunk(win, it, chunk, xs, todo, timeout)
                    want = 0
                else:
                    want = min(_CHUNK, cap - len(xs)) - len(todo)
                if not exhausted and want > 0:
                    pulled = 0
                    for x in itertools.islice(it, want):
                        todo.append((x, *encode(x, preprocessor)))
                        pulled += 1
                    exhausted = pulled < want
                stalled = False  # other callers hold the capacity
                while todo:
                    x, payload, err = todo[0]
                    if err is not None:
                        todo.popleft()
                        xs.append((x, err))
                        win.add_local()
                        continue
                    run: list[tuple[int, Any]] = []  # (flags, payload) of each input
                    for item in todo:
                        if item[2] is not None:
                            break
                        run.append(item[1])
                    k, status = win.submit(run, not xs, timeout)
                    for _ in range(k):
                        xs.append((todo.popleft()[0], None))
                    if k < len(run):
                        if status == BACKLOG_FULL and xs:
                            stalled = True
                            break  # other callers hold the capacity: drain ours first
                        x = todo.popleft()[0]
                        xs.append((x, failure(status, cap, perf_counter())))
                        win.add_local()
                if not xs:
                    if exhausted and not todo:
                        return
                    continue
                # Wait for the head only when nothing more can be sent now;
                # otherwise take what is ready and keep feeding: a worker
                # gathering a batch may be waiting for exactly those inputs.
                can_send = not stalled and len(xs) + chunk <= cap and not (exhausted and not todo)
                before = len(xs)
                yield from self._outcomes(win, xs, timeout, return_x, return_exceptions, not can_send)
                if sizer is not None:
                    sizer.observe(before - len(xs))
        finally:
            win.close()

    def _chunk_sizer(self, chunk_size: int | None) -> ChunkSizer | None:
        """The stream's chunk sizer, or None when its items travel singly."""
        if chunk_size == 1 or not self._chunk_workers:
            return None
        return ChunkSizer(self._chunk_workers, self._capacity, chunk_size)

    def _send_chunk(
        self,
        win: Any,
        it: Iterator[Any],
        size: int,
        xs: collections.deque[_InWindow],
        todo: collections.deque[tuple[Any, Any, Exception | None]],
        timeout: float,
    ) -> bool:
        """Pulls up to ``size`` inputs and sends them as one chunk, or queues
        them in ``todo`` to go singly (values a chunk cannot carry, or no room
        in the capacity right now).  Returns whether ``it`` is exhausted."""
        run = list(itertools.islice(it, size))
        if len(run) > 1:
            blob = encode_run(run)
            if blob is not None and win.submit_chunk(len(run), blob, timeout)[0]:
                xs.extend(zip(run, itertools.repeat(None)))
                return len(run) < size
        encode = self._encode_for_stream
        for x in run:
            todo.append((x, *encode(x, None)))
        return len(run) < size

    def _stream_fed(
        self,
        data: Iterable[Any],
        timeout: float,
        preprocessor: Callable[[Any], Any] | None,
        return_x: bool,
        return_exceptions: bool,
    ) -> Iterator[Any]:
        """A feeder thread pulls from the iterable (which may block); this thread drains."""
        win = self._window(timeout)
        xs: collections.deque[_InWindow] = collections.deque()
        stop = threading.Event()
        feed_error: list[BaseException] = []

        def feed() -> None:
            try:
                for x in data:
                    if stop.is_set():
                        break
                    encoded, err = self._encode_for_stream(x, preprocessor)
                    if err is not None:
                        xs.append((x, err))
                        win.add_local()
                        continue
                    entry = [x, None]
                    xs.append(entry)
                    k, status = win.submit([encoded], True, timeout)
                    if k == 0:
                        if stop.is_set():
                            break
                        entry[1] = failure(status, self._capacity, perf_counter())
                        win.add_local()
            except BaseException as e:  # noqa: BLE001 - the iterable failed: end the stream with it
                feed_error.append(e)
            finally:
                win.finish()

        feeder = threading.Thread(target=feed, name='mpserver.Server.stream.feeder', daemon=True)
        feeder.start()
        try:
            while True:
                n = 0
                for out in self._outcomes(win, xs, timeout, return_x, return_exceptions):
                    n += 1
                    yield out
                if n == 0:
                    break
            if feed_error:
                raise feed_error[0]
        finally:
            stop.set()
            win.close()

    # ------------------------------------------------------------ introspection

    def start_http(
        self,
        host: str = '127.0.0.1',
        port: int = 8000,
        *,
        routes: dict[str, Any] | None = None,
        request: bool = False,
        timeout: float = 60.0,
        max_body: int = 16 << 20,
        max_header: int = 16 << 10,
        read_timeout: float = 30.0,
        idle_timeout: float = 75.0,
        max_connections: int = 10000,
        threads: int = 1,
        retry_after: int = 1,
        access_log: bool = False,
        metrics_prefix: str = 'mpserver',
    ) -> HttpService:
        """Serves this server over HTTP/1.1 with the native front (C++
        threads of this process; no Python runs here per request) and
        returns at once with the running :class:`HttpService` (``.url``,
        ``.port``, ``.stop()``).  See ``docs/http.md``.

        A server that has not started is started (after the front listens,
        so that ``/readyz`` answers 503 while its workers start) and is
        stopped with the service; a running one keeps running.

        ``routes`` maps paths to :class:`HttpRoute`\\ s (or directly to the
        servlet they feed: ``None`` for this server's servlet, a member index
        or member of a top ``SwitchServlet``); without it the servlet answers
        ``POST /``.  ``request=True``: workers receive an
        :class:`HttpRequest` instead of the body.  ``timeout``: seconds a
        request may take (504 after).  ``max_body`` (413 beyond),
        ``max_header`` (431 beyond): bytes.  ``read_timeout``: seconds to
        read one request once its first byte came; ``idle_timeout``: seconds
        a keep-alive connection may sit idle.  ``port=0`` takes a free port.
        ``access_log``: one INFO record per response on the
        ``mpserver.access`` logger.  Raises ``OSError`` if it cannot listen.
        """
        from ._front import start_http

        return start_http(
            self,
            host,
            port,
            routes=routes,
            request=request,
            timeout=timeout,
            max_body=max_body,
            max_header=max_header,
            read_timeout=read_timeout,
            idle_timeout=idle_timeout,
            max_connections=max_connections,
            threads=threads,
            retry_after=retry_after,
            access_log=access_log,
            metrics_prefix=metrics_prefix,
        )

    def serve_http(
        self,
        host: str = '127.0.0.1',
        port: int = 8000,
        *,
        routes: dict[str, Any] | None = None,
        drain_timeout: float = 30.0,
        debug: bool = False,
        **options: Any,
    ) -> None:
        """Serves over HTTP (as :meth:`start_http`, same options) until
        SIGINT or SIGTERM arrives (when called on the main thread) or
        :meth:`stop_http` is called; then drains — no new connections,
        ``/readyz`` 503, requests in flight answered for up to
        ``drain_timeout`` seconds — and returns.  ``debug=True``: error
        responses carry the worker's traceback (workers started by this call
        see ``MPSERVER_HTTP_TRACEBACKS=1``)."""
        from ._front import serve_http

        serve_http(self, host, port, routes=routes, drain_timeout=drain_timeout, debug=debug, **options)

    def stop_http(self) -> None:
        """Ends :meth:`serve_http` (from another thread, or a signal
        handler); it drains and returns.  Does nothing if it is not serving."""
        stop = self._http_stop
        if stop is not None:
            stop.set()

    def stats(self) -> _stats.ServerStats:
        """A snapshot of the core's live counters: the server's requests and
        every servlet and worker of its tree (see :class:`ServerStats`).

        Cheap enough to call often (a few hundred µs for a large tree); rates
        come from two snapshots (:func:`mpserver.stats.rates`).  Raises
        ``RuntimeError`` when the server is not running.
        """
        self._require_running()
        meter, layout = self._meter, self._layout  # once: another thread may be stopping the server
        if meter is None or layout is None:
            raise RuntimeError('the Server has been stopped')
        from . import _stats

        return _stats.snapshot(meter, layout)

    def watch(self, interval: float = 1.0, *, file: IO[str] | None = None) -> Watch:
        """Draw a live table of every servlet and worker (queue depth, rates,
        in flight, batch sizes, service-time quantiles, errors, crashes) and
        of the server's requests, redrawn every ``interval`` seconds by a
        daemon thread, on ``file`` (default ``sys.stderr``).

        Returns the :class:`~mpserver._watch.Watch`: ``.stop()`` it, or use it
        as a context manager; it also ends, after a last frame, when the server
        stops.  Needs ``rich`` (``pip install 'mpserver[view]'``;
        ``ImportError`` otherwise).  See docs/monitoring.md.
        """
        from ._watch import Watch

        self._require_running()
        self._watches = [w for w in self._watches if w.running]
        self._watches.append(Watch(self.stats, interval, file=file, title=f'mpserver · pid {os.getpid()}'))
        return self._watches[-1]

    def debug_info(self) -> dict[str, Any]:
        """A JSON-friendly snapshot: backlog entries, workers, their liveness."""
        import dataclasses  # here: worker processes import this module too, and never need it

        if self._state == 'forked':
            self._require_running()
        eng = self._engine
        backlog: list[dict[str, Any]] = []
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
            'dropped': self._board.dropped if self._board is not None else self._dropped,
            'active_threads': [str(t) for t in threading.enumerate()],
            'backlog': backlog,
            'stats': dataclasses.asdict(self.stats()) if self._state == 'running' else None,
        }
