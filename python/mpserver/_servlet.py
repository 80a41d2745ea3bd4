"""Simple servlets: how many workers run a Worker class, and where —
processes (:class:`ProcessServlet`) or threads of the main process
(:class:`ThreadServlet`) — plus the :class:`Servlet` base every servlet,
simple or compound (``_compose``), derives from.

A servlet is a specification until a Server starts it.  Starting creates the
servlet's input ring in shared memory and registers its workers with the
start's ``Launch``; workers take items from that ring (whichever is free
takes the next) and write results to the ring they were given as output.
Once every worker is ready the Server hands the servlet to its guardian
(``_guard``), which heals it when a worker dies (cpp/guardian.hpp).
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from . import _core
from ._config import Cpus, check_count, check_restarts, check_seconds, check_worker_cls, normalize_cpus
from ._launch import Launch, ThreadStart, boot_fd
from ._serve import serve
from ._wire import Codec, ObjectCodec, PickleCodec, pass_error
from ._worker import Worker

if TYPE_CHECKING:  # imported where used: worker processes import this module too, and never need it
    from ._stats import Layout

__all__ = ['Servlet', 'ProcessServlet', 'ThreadServlet']

_FD = _core.ChildFd
_log = logging.getLogger('mpserver')


class Servlet(ABC):
    """A part of the serving graph: a simple servlet runs one Worker class on
    several processes or threads; compound servlets combine servlets."""

    @abstractmethod
    def _start(self, launch: Launch, output: Any, output_local: bool) -> tuple[Any, bool]:
        """Create rings and register workers; return ``(input_ring, input_local)``.

        ``output_local`` is true when whoever consumes ``output`` lives in the
        main process (so thread workers may send object references).
        ``input_local`` tells producers whether they may send references.
        """

    def _chunk_readers(self) -> int:
        """How many workers read this servlet's input if it takes chunks of
        items (_chunking), else 0."""
        return 0

    @abstractmethod
    def _stop(self) -> None:
        """Close the input; wait for the workers to finish what they hold and exit.

        The server's stop grace (``Guardian.stop``) bounds how long a worker
        may stay stuck: worker processes are then killed by the guardian; a
        worker thread, which cannot be killed, is left behind (it is a
        daemon) and a warning is logged."""

    @abstractmethod
    def _kill(self, grace: float = 0.0) -> None:
        """Stop now, dropping queued items; busy workers get ``grace`` seconds.
        Must be safe on a servlet that was never (or only partly) started."""

    def _guard(self, guardian: Any) -> None:  # noqa: B027 - servlets without workers of their own
        """Registers the servlet's workers with the server's guardian (after start-up)."""

    @property
    @abstractmethod
    def workers(self) -> list[Any]:
        """The running workers (process ids or thread handles)."""

    @property
    def children(self) -> list[Any] | tuple[Servlet, ...]:
        return self.workers

    def _debug_info(self) -> dict[str, Any]:
        return {'type': type(self).__name__, 'children': []}

    @abstractmethod
    def _layout(self, path: str) -> Layout:
        """Where this running servlet's live counters are (``_stats.py``);
        ``path`` names it in the tree."""

    def _label(self) -> str:
        """How errors name this servlet, e.g. ``ProcessServlet(Model)``."""
        return type(self).__name__


class _Simple(Servlet):
    """What Process and Thread servlets share: a worker class, its kwargs, a restart budget."""

    def __init__(
        self,
        worker_cls: type[Worker],
        worker_name: str | None,
        max_restarts: int,
        restart_window: float,
        kwargs: dict[str, Any],
    ) -> None:
        check_worker_cls(worker_cls)
        self._max_restarts, self._restart_window = check_restarts(max_restarts, restart_window)
        self._worker_cls = worker_cls
        self._worker_name = worker_name
        self._init_kwargs = kwargs
        self._guardian: Any = None
        self._guard_id = 0
        self._input: Any = None
        self._started = False
        self._meter: Any = None  # the server's meter board
        self._records: list[int] = []  # each worker's record on it

    def _label(self) -> str:
        return f'{type(self).__name__}({self._worker_cls.__qualname__})'

    def _take_records(self, launch: Launch, n: int) -> None:
        self._meter = launch.meter
        self._records = [launch.meter_record() for _ in range(n)] if launch.meter is not None else []

    @abstractmethod
    def _worker_names(self) -> list[str]: ...

    def _layout(self, path: str) -> Layout:
        from ._stats import Layout, WorkerLayout

        kind = 'process' if isinstance(self, ProcessServlet) else 'thread'
        workers = [WorkerLayout(n, kind, r) for n, r in zip(self._worker_names(), self._records, strict=True)]
        return Layout(path, type(self).__name__, self._label(), self._input, workers=workers)

    def _health(self) -> dict[str, Any]:
        """Restart counters kept by the guardian (empty before it took over)."""
        if self._guardian is None:
            return {}
        g = self._guardian.info(self._guard_id)
        return {
            'restarts': g['restarts'],
            'crashes': g['crashes'],
            'failed': g['failed'],
            'max_restarts': self._max_restarts,
            'restart_window': self._restart_window,
            'item_timeout_kills': g['overdue_kills'],
        }


class ProcessServlet(_Simple):
    """Runs ``worker_cls`` in worker processes — for CPU-bound work.

    Parameters
    ----------
    worker_cls
        A :class:`Worker` subclass that a fresh interpreter can import by name
        (defined at module level, including in your ``__main__`` script).
    cpus
        ``None``: one unpinned process.  An int ``n``: ``n`` unpinned
        processes.  A list: one process per entry, pinned to that entry's
        CPUs (an int, a list of ints, or ``None`` for no pinning), e.g.
        ``[[0, 1], 2, None]``.
    worker_name
        Prefix of the worker processes' names (default ``<class name>-process``).
    max_restarts, restart_window
        When a worker process dies while serving (killed, segfault,
        ``os._exit``, out of memory), the items it held fail with
        :class:`WorkerCrashedError` and the process is started again, at most
        ``max_restarts`` times (default 5) within any ``restart_window``
        seconds (default 60).  ``max_restarts=0`` never restarts.  A servlet
        left without a live worker answers every item with
        :class:`WorkerCrashedError` at once instead of queueing it.
    item_timeout
        Seconds a worker process may hold one item (or one batch) — counted
        from when it took the item off its queue — before mpserver decides it
        is stuck, kills it (SIGKILL) and starts a fresh one (within
        ``max_restarts``).  The items it held fail with
        :class:`WorkerCrashedError` saying they exceeded ``item_timeout``;
        all other items keep flowing.  ``None`` (the default): no limit.
        This is the servlet's limit on the *work*; a caller's ``timeout``
        (``Server.call``/``stream``) is its own deadline for the *answer* and
        never stops a worker.
    **kwargs
        Passed to ``worker_cls.__init__`` (they are pickled).
    """

    def __init__(
        self,
        worker_cls: type[Worker],
        *,
        cpus: Any = None,
        worker_name: str | None = None,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        item_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(worker_cls, worker_name, max_restarts, restart_window, kwargs)
        self._cpus: list[Cpus] = normalize_cpus(cpus)
        self._item_timeout = check_seconds('item_timeout', item_timeout)
        self._pids: list[int | None] = []
        self._specs: list[Any] = []
        self._supervisor: Any = None
        self._output: Any = None
        self._control: Any = None
        self._claims: Any = None
        self._boot_fd: int | None = None

    def _chunk_readers(self) -> int:
        # Chunks go to workers of the plain item loop: no batching, no custom
        # stream.  (Every loop opens a chunk correctly, see _serve, so a
        # worker that sets batch_size in its own __init__ is still served.)
        cls = self._worker_cls
        if cls.stream is not Worker.stream or (self._init_kwargs.get('batch_size') or 0) > 1:
            return 0
        return len(self._cpus)

    def _process_name(self, index: int) -> str:
        base = self._worker_name or f'{self._worker_cls.__name__}-process'
        return f'{base}-{index}'

    def _start(self, launch: Launch, output: Any, output_local: bool) -> tuple[Any, bool]:
        if self._started:
            raise RuntimeError('this servlet is already running in a server')
        main = sys.modules.get('__main__')
        if self._worker_cls.__module__ == '__main__' and not getattr(main, '__file__', None):
            raise TypeError(
                f'{self._worker_cls.__qualname__} is defined in an interactive session or a '
                "'python -c' program, which worker processes cannot import: define it in a module "
                "or a script file (workers import your main script, like multiprocessing's spawn)"
            )
        try:
            body = pickle.dumps((self._worker_cls, self._init_kwargs), 5)
        except Exception as e:
            raise TypeError(
                f'{self._worker_cls.__qualname__} and its kwargs must be picklable to run in a worker '
                f'process (define the class at module level; classes from make_worker() only work '
                f'in a ThreadServlet): {e}'
            ) from e
        import multiprocessing.spawn

        prep = multiprocessing.spawn.get_preparation_data('mpserver-worker')
        prep.pop('authkey', None)
        n = len(self._cpus)
        board = launch.board if launch.carries_tokens else None
        self._take_records(launch, n)
        self._boot_fd = boot_fd(
            prep,
            body,
            self._cpus,
            [self._process_name(i) for i in range(n)],
            board is not None,
            self._records,
            output is launch.output,
        )
        self._input = _core.Ring.create(_core.INPUT_RING_BYTES, 'mpserver-in')
        self._output = output
        self._control = launch.control
        self._claims = _core.ClaimTable.create(n, _core.CLAIM_SLOTS)
        self._supervisor = launch.supervisor
        self._pids = [None] * n
        self._specs = [None] * n
        fds = [
            (self._boot_fd, _FD.BOOT),
            (launch.control.fd, _FD.CONTROL),
            (self._input.fd, _FD.INPUT),
            (output.fd, _FD.OUTPUT),
            (self._claims.fd, _FD.CLAIMS),
        ]
        if board is not None:
            fds.append((board.fd, _FD.BOARD))
        if self._meter is not None:
            fds.append((self._meter.fd, _FD.METER))
        for i, cpu in enumerate(self._cpus):
            cpus = [] if cpu is None else list(cpu) if isinstance(cpu, list) else [cpu]
            launch.add_process(self, i, [(fd, int(child)) for fd, child in fds], cpus)
        self._started = True
        return self._input, False

    def _spawned(self, index: int, spec: Any, pid: int) -> None:
        """Called by the Launch: worker ``index`` runs as ``pid``, started from ``spec``."""
        self._specs[index] = spec
        self._pids[index] = pid

    def _guard(self, guardian: Any) -> None:
        names = [self._process_name(i) for i in range(len(self._cpus))]
        self._guard_id = guardian.add_processes(
            self._label(),
            names,
            self._max_restarts,
            self._restart_window,
            self._input,
            self._output,
            self._control,
            self._claims,
            self._specs,
            [p or 0 for p in self._pids],
            self._item_timeout or 0.0,
            self._meter,
            self._records,
        )
        self._guardian = guardian

    def _worker_names(self) -> list[str]:
        return [self._process_name(i) for i in range(len(self._cpus))]

    def _current_pids(self) -> list[int | None]:
        if self._guardian is not None:
            return [p or None for p in self._guardian.info(self._guard_id)['pids']]
        return list(self._pids)

    def _stop(self) -> None:
        if not self._started:
            return
        self._input.close()
        # Wait for the workers of the moment (restarted ones included) to
        # exit; the guardian's watchdog kills those stuck beyond the grace.
        while True:
            pids = [p for p in self._current_pids() if p is not None]
            if all(self._supervisor.wait_exit(pid, 0.1) is not None for pid in pids):
                if pids == [p for p in self._current_pids() if p is not None]:
                    break
        if self._guardian is not None:
            # Crash reports of the workers that died on the way out (killed
            # by the stop grace, say) are in the output before it is closed.
            self._guardian.wait_idle(10.0)
        self._release()

    def _release(self) -> None:
        if self._boot_fd is not None:
            os.close(self._boot_fd)
            self._boot_fd = None
        self._input = self._output = self._control = self._claims = self._meter = None
        self._supervisor = self._guardian = None
        self._pids = []
        self._specs = []
        self._started = False

    def _kill(self, grace: float = 0.0) -> None:
        """Stop now: queued items are dropped; a worker still busy after
        ``grace`` seconds is killed.  Used when start-up failed and on Ctrl-C."""
        if self._input is not None:
            self._input.abort()
        for pid in self._current_pids():
            if pid is None:
                continue
            if grace > 0 and self._supervisor.wait_exit(pid, grace) is not None:
                continue
            self._supervisor.kill(pid, 9)
            self._supervisor.wait_exit(pid, 5.0)
        self._release()

    @property
    def workers(self) -> list[int]:
        return [p for p in self._current_pids() if p is not None] if self._started else []

    def _debug_info(self) -> dict[str, Any]:
        out: list[dict[str, Any]] = []
        for i, pid in enumerate(self._current_pids() if self._started else []):
            status = self._supervisor.exit_status(pid) if pid is not None else None
            out.append(
                {
                    'type': 'process',
                    'name': self._process_name(i),
                    'pid': pid,
                    'cpus': self._cpus[i],
                    'is_alive': pid is not None and status is None,
                }
            )
        info: dict[str, Any] = {'type': type(self).__name__, 'worker': self._worker_cls.__qualname__, 'children': out}
        info.update(self._health())
        return info


class ThreadServlet(_Simple):
    """Runs ``worker_cls`` on threads of the main process — for I/O-bound or light steps.

    Items reach the threads by reference (no pickling), so anything works as
    input and output.

    Parameters
    ----------
    worker_cls
        A :class:`Worker` subclass (classes from :func:`make_worker` work too).
    num_threads
        Number of worker threads (default 1).
    worker_name
        Prefix of the threads' names (default ``<class name>-thread``).
    max_restarts, restart_window
        A worker thread stopped by a ``BaseException`` from user code (e.g.
        ``SystemExit``) fails the items it held with :class:`WorkerCrashedError`
        and starts over with a fresh worker, at most ``max_restarts`` times
        (default 5) within any ``restart_window`` seconds (default 60) — the
        same budget, kept by the same guardian, as for worker processes.
    **kwargs
        Passed to ``worker_cls.__init__``.
    """

    def __init__(
        self,
        worker_cls: type[Worker],
        *,
        num_threads: int | None = None,
        worker_name: str | None = None,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(worker_cls, worker_name, max_restarts, restart_window, kwargs)
        self._num_threads = check_count('num_threads', num_threads, 1)
        self._threads: list[threading.Thread] = []
        self._output: Any = None
        self._claims: Any = None
        self._board: Any = None  # the server's cancel board, if this servlet's input carries request tokens
        self._codec: Codec = ObjectCodec
        self._terminal = False

    def _start(self, launch: Launch, output: Any, output_local: bool) -> tuple[Any, bool]:
        if self._started:
            raise RuntimeError('this servlet is already running in a server')
        self._input = _core.Ring.create(_core.INPUT_RING_BYTES, 'mpserver-thread-in')
        self._claims = _core.ClaimTable.create(self._num_threads, _core.CLAIM_SLOTS)
        self._board = launch.board if launch.carries_tokens else None
        self._take_records(launch, self._num_threads)
        self._output = output
        self._codec = ObjectCodec if output_local else PickleCodec
        self._terminal = output is launch.output
        base = self._worker_name or f'{self._worker_cls.__name__}-thread'
        self._threads = []
        for i in range(self._num_threads):
            t = threading.Thread(target=self._run, args=(i, launch.add_thread()), name=f'{base}-{i}', daemon=True)
            self._threads.append(t)
            t.start()
        self._started = True
        return self._input, True

    def _guard(self, guardian: Any) -> None:
        codec = self._codec

        def relay(flags: int, payload: Any) -> tuple[int, Any]:
            return pass_error(flags, payload, codec)

        self._guard_id = guardian.add_threads(
            self._label(),
            [t.name for t in self._threads],
            self._max_restarts,
            self._restart_window,
            self._input,
            self._output,
            self._claims,
            relay,
            self._meter,
            self._records,
        )
        self._guardian = guardian

    def _run(self, index: int, start: ThreadStart) -> None:
        try:
            worker = self._worker_cls(worker_index=index, **self._init_kwargs)
        except BaseException as e:  # noqa: BLE001 - reported by the Launch
            start.error = e
            start.ready.set()
            return
        start.ready.set()
        # Locals: a thread left behind by a stop grace outlives the servlet's
        # references (the claim table must stay mapped while it is bound).
        inp, output, codec, claims, board = self._input, self._output, self._codec, self._claims, self._board
        terminal = self._terminal
        meter = self._meter
        _core.bind_claims(claims, index)
        _core.bind_board(board)
        _core.bind_meter(meter, self._records[index] if meter is not None else 0)
        try:
            while True:
                try:
                    serve(worker, inp, output, codec, terminal)
                except BaseException as e:  # noqa: BLE001 - the guardian decides what happens next
                    _cleanup_quietly(worker, e)
                    guardian = self._guardian
                    if guardian is None or not guardian.thread_stopped(self._guard_id, index, repr(e)):
                        return
                    try:
                        worker = self._worker_cls(worker_index=index, **self._init_kwargs)
                    except BaseException:  # noqa: BLE001 - the restart failed: this worker is gone
                        guardian.thread_lost(self._guard_id, index)
                        return
                else:
                    worker.cleanup()
                    return
        finally:
            _core.bind_claims(None)
            _core.bind_board(None)
            _core.bind_meter(None)

    def _stop(self) -> None:
        if not self._started:
            return
        self._input.close()
        guardian = self._guardian
        for i, t in enumerate(self._threads):
            while t.is_alive():
                t.join(0.1)
                # Stuck by the guardian's rules (its stop grace); a thread
                # cannot be killed, so stop waiting for it.
                why = guardian.thread_stuck(self._guard_id, i) if guardian is not None and t.is_alive() else ''
                if why:
                    _log.warning(
                        'worker thread %s of %s %s; it is left running as a daemon thread '
                        'and the requests it held fail',
                        t.name,
                        self._label(),
                        why,
                    )
                    break
        self._release()

    def _kill(self, grace: float = 0.0) -> None:
        """Stop now: queued items are dropped; threads finish their current item."""
        if not self._started:
            return
        self._input.abort()
        for t in self._threads:
            t.join(grace)
        self._release()

    def _release(self) -> None:
        self._input = self._output = self._claims = self._board = self._guardian = self._meter = None
        self._started = False

    def _worker_names(self) -> list[str]:
        return [t.name for t in self._threads]

    @property
    def workers(self) -> list[threading.Thread]:
        return list(self._threads) if self._started else []

    def _debug_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            'type': type(self).__name__,
            'worker': self._worker_cls.__qualname__,
            'children': [{'type': 'thread', 'name': t.name, 'is_alive': t.is_alive()} for t in self.workers],
            'restarts': 0,
            'crashes': 0,
        }
        info.update(self._health())
        return info


def _cleanup_quietly(worker: Worker, exc: BaseException) -> None:
    try:
        worker.cleanup(exc)
    except BaseException:  # noqa: BLE001 - the worker is being replaced anyway
        pass
