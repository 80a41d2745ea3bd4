"""Server: the main-process face of a servlet graph.

``call`` and ``stream`` encode inputs (pickle for process workers, object
references for thread workers) and hand them to the C++ request book, which
takes a slot (the capacity bound), pushes the request into the entry ring,
and blocks with the GIL released until the collector thread delivers the
result into that slot.  What a running server holds is one
record (``running.Running``); a stream's state is a ``stream.StreamRun``;
the asyncio face (``async_server``) submits through the same request path.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from time import perf_counter
from typing import IO, TYPE_CHECKING, Any, final

from mpserver._graph.checks import check_seconds
from mpserver._graph.servlet import Servlet
from mpserver._serving.older_keywords import capacity_of, main_cpus
from mpserver._serving.requests import OK, RESULT_TIMEOUT, failure, result
from mpserver._serving.stream import NON_BLOCKING_INPUTS, StreamRun
from mpserver._wire import process as _process
from mpserver._wire.errors import ConfigError, check_timeout

# What a running server needs (the running record with its counters and
# announcement, the HTTP front, the live view) is imported when a server
# first starts or the feature is first used, not here: a user's script
# imports Server, and every worker process imports the user's script (as
# multiprocessing's spawn does), so what this module imports at the top, each
# worker process imports too.  tests/test_layers.py still checks the
# direction of those imports.
if TYPE_CHECKING:
    from mpserver._http_front.front import HttpService
    from mpserver._observe.stats import ServerStats
    from mpserver._observe.watch import Watch
    from mpserver._serving.async_ports import Ports
    from mpserver._serving.running import Running

__all__ = ['Server']

#: The default ``stop_grace`` of a Server (see its docstring).
DEFAULT_STOP_GRACE = 30.0

_log = logging.getLogger('mpserver')


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
        capacity = capacity_of(capacity, backlog, sys_info_log_cadence)
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            raise ConfigError(f'capacity must be an int > 0, got {capacity!r}')
        self._stop_grace = check_seconds('stop_grace', stop_grace)
        cpus = main_cpus(main_cpu)
        if cpus is not None:
            os.sched_setaffinity(0, cpus)  # as mpservice did: the whole main process, from here on
        self.servlet = servlet
        self._capacity = capacity
        self._main_cpus = cpus
        self._phase = 'new'  # then 'running', 'stopping', 'stopped'
        self._run: Running | None = None  # what the server holds while it runs (running.py)
        self._pid = 0  # the process that entered the server
        self._dropped = 0  # items workers skipped for callers who had gone (of the last run)

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
        run = self._run
        book = run.book if run is not None else None
        return book.backlog if book is not None else 0

    def full(self) -> bool:
        """Whether the server holds ``capacity`` requests now (older mpservice API:
        the next call with ``backpressure=True`` would be refused)."""
        return self.backlog >= self._capacity

    @property
    def _state(self) -> str:
        """'new', 'running', 'stopping', 'stopped', or 'forked' (a copy of a
        running server in a forked child process)."""
        run = self._run
        return 'forked' if run is not None and run.forked else self._phase

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
        from mpserver._serving.running import Running  # (see the note at the top)

        self._run = Running.open(self.servlet, self._capacity)
        self._pid = os.getpid()
        self._phase = 'running'
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        run = self._run
        if self._state != 'running' or run is None:
            return  # also in a forked child: the parent's server is not ours to stop
        self._phase = 'stopping'
        _log.info('stopping the server of %s%s', self.servlet._label(), f' ({exc_type.__name__})' if exc_type else '')
        # KeyboardInterrupt, SystemExit: stop now, drop queued items, give
        # busy workers a moment to finish, then kill them.
        interrupted = exc_type is not None and not issubclass(exc_type, Exception)
        try:
            self._dropped = run.close(interrupted, self._stop_grace)
        finally:
            self._phase = 'stopped'
            self._run = None

    def _running(self) -> Running:
        """The record of this running server; raises the ``RuntimeError`` that
        says why if it is not running (not started, stopped, or a copy in a
        forked child)."""
        run = self._run
        if run is None or self._state != 'running':
            self._require_running()
        assert run is not None
        return run

    def _async_ports(self) -> Ports:
        """The asyncio side of this running server (made on first use)."""
        return self._running().ports()

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
        run = self._run
        if run is None or run.forked or self._phase != 'running':
            run = self._running()  # raises why it is not running
        path = run.path
        if path is None:  # stopped by another thread just now
            raise RuntimeError('the Server has been stopped')
        if timeout.__class__ is not int and timeout.__class__ is not float or timeout <= 0:
            check_timeout(timeout)
        t0 = perf_counter()
        flags, payload = path.codec.encode(x)
        status, rflags, out = path.book.call(path.entry, payload, flags, timeout, backpressure)
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
        stream = StreamRun(self._running, timeout, preprocessor, return_x, return_exceptions)
        if isinstance(data_stream, NON_BLOCKING_INPUTS):
            return stream.inline(data_stream, chunk_size)
        return stream.fed(data_stream)

    # ------------------------------------------------------------ HTTP

    def start_http(self, host: str = '127.0.0.1', port: int = 8000, **options: Any) -> HttpService:
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
        from mpserver._http_front import front  # (see the note at the top)

        return front.start_http(self, host, port, **options)

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
        from mpserver._http_front import front  # (see the note at the top)

        front.serve_http(self, host, port, routes=routes, drain_timeout=drain_timeout, debug=debug, **options)

    def stop_http(self) -> None:
        """Ends :meth:`serve_http` (from another thread, or a signal
        handler); it drains and returns.  Does nothing if it is not serving."""
        run = self._run
        stop = run.http_stop if run is not None else None
        if stop is not None:
            stop.set()

    # ------------------------------------------------------------ introspection

    def stats(self) -> ServerStats:
        """A snapshot of the core's live counters: the server's requests and
        every servlet and worker of its tree (see :class:`ServerStats`).

        Cheap enough to call often (a few hundred µs for a large tree); rates
        come from two snapshots (:func:`mpserver.stats.rates`).  Raises
        ``RuntimeError`` when the server is not running.
        """
        return self._running().stats()

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
        # (See the note at the top; the view also needs rich, the view extra.)
        from mpserver._observe.watch import Watch

        run = self._running()
        run.watches[:] = [w for w in run.watches if w.running]
        run.watches.append(Watch(self.stats, interval, file=file, title=f'mpserver · pid {os.getpid()}'))
        return run.watches[-1]

    def debug_info(self) -> dict[str, Any]:
        """A JSON-friendly snapshot: backlog entries, workers, their liveness."""
        if self._state == 'forked':
            self._require_running()
        run = self._run
        book = run.book if run is not None else None
        backlog: list[dict[str, Any]] = []
        if book is not None:
            backlog = [{'slot': s, 'state': st, 'age': age} for s, st, age in book.snapshot()]
        board = run.board if run is not None else None
        return {
            'type': type(self).__name__,
            'datetime': str(datetime.now(timezone.utc)),
            'perf_counter': perf_counter(),
            'state': self._state,
            'capacity': self._capacity,
            'servlet': self.servlet._debug_info(),
            'collector': 'is_alive' if book is not None and book.collector_running else 'done',
            'delivered': book.delivered if book is not None else 0,
            'dropped': board.dropped if board is not None else self._dropped,
            'active_threads': [str(t) for t in threading.enumerate()],
            'backlog': backlog,
            'stats': run.stats_dict() if run is not None and self._state == 'running' else None,
        }
