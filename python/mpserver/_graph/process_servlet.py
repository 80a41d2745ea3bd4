"""ProcessServlet: a Worker class run by worker processes the core spawns."""

from __future__ import annotations

import logging
import multiprocessing.spawn
import os
import sys
from typing import Any

from mpserver import _core
from mpserver._graph.checks import Cpus, check_seconds, normalize_cpus
from mpserver._graph.launch import Launch, boot_fd
from mpserver._graph.servlet import _Simple
from mpserver._wire.handover import dumps_for_child
from mpserver._worker.api import Worker

__all__ = ['ProcessServlet']

_FD = _core.ChildFd
#: Where the fds of multiprocessing objects in a worker's kwargs go in the
#: worker process: past the fds of ``ChildFd``.
_FIRST_HANDED_FD = max(int(fd) for fd in _FD) + 1
_log = logging.getLogger('mpserver')


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
        Passed to ``worker_cls.__init__``.  They are pickled as
        multiprocessing pickles a spawned process's arguments, so they may hold
        queues, locks, events, pipes and shared values made from a spawn
        context (:meth:`Server.get_mp_context`).
    """

    _KIND = 'process'

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
        # stream.  (Every loop opens a chunk correctly, see ``_worker.loops``, so a
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
        body, handed = self._pickle_body()
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
        fds: list[tuple[int, int]] = [
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
        fds += handed  # the kwargs' own fds (they stay open in their objects here, for restarts too)
        for i, cpu in enumerate(self._cpus):
            cpus = [] if cpu is None else list(cpu) if isinstance(cpu, list) else [cpu]
            launch.add_process(self, i, [(fd, int(child)) for fd, child in fds], cpus)
        self._started = True
        return self._input, False

    def _pickle_body(self) -> tuple[bytes, list[tuple[int, int]]]:
        """The worker class and its kwargs as the worker processes unpickle them,
        and the fds they hand over (see ``_wire.handover``)."""
        cls = self._worker_cls
        by_value = _by_value_pickler(cls)
        if by_value is not None:
            return by_value.dumps((cls, self._init_kwargs), protocol=5), []
        main = sys.modules.get('__main__')
        if cls.__module__ == '__main__' and not getattr(main, '__file__', None):
            raise TypeError(
                f'{cls.__qualname__} is defined in an interactive session or a '
                "'python -c' program, which worker processes cannot import: define it in a module "
                "or a script file (workers import your main script, like multiprocessing's spawn)"
            )
        try:
            # As multiprocessing hands a spawned process its arguments: kwargs
            # may hold queues, locks, events, pipes; their fds go along.
            return dumps_for_child((cls, self._init_kwargs), _FIRST_HANDED_FD)
        except Exception as e:
            raise TypeError(
                f'{cls.__qualname__} and its kwargs must be picklable to run in a worker '
                f'process (define the class at module level; classes from make_worker() only work '
                f'in a ThreadServlet): {e}'
            ) from e

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


def _by_value_pickler(cls: type) -> Any:
    """The cloudpickle module to pickle ``cls`` with, by value, when it came by
    value from another process's ``__main__``; else ``None``.

    Ray (and other cloudpickle users: Dask, joblib's loky) ship a class defined
    in the driver's script by value: in a Ray actor or task, such a class says
    it lives in ``__main__``, but this process's ``__main__`` (Ray's worker
    script) does not hold it, so worker processes cannot import it by name.
    Such a class goes to them by value too, with a cloudpickle already loaded
    in this process (the one that brought it; the worker processes, in the
    same environment, import it to unpickle).  A class of this process's own
    ``__main__``, or one defined in a function, is still pickled by name.
    """
    if cls.__module__ != '__main__' or '<locals>' in cls.__qualname__:
        return None
    held: Any = sys.modules.get('__main__')
    for part in cls.__qualname__.split('.'):
        held = getattr(held, part, None)
    if held is cls:
        return None
    return sys.modules.get('cloudpickle') or sys.modules.get('ray.cloudpickle')
