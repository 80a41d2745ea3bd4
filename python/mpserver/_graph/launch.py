"""The control plane of one Server start: spawning worker processes and
waiting until every worker (process or thread) is ready.

Servlets register their workers while they start (``Launch.add_process``,
``Launch.add_thread``); the Server then spawns every process at once
(``spawn_all``: one supervisor call, so start-up runs in parallel) and waits
for each worker's report on the control ring (``wait_ready``), raising the
first ``__init__`` failure or early exit.

A worker process is ``python -m mpserver._worker.child PPID INDEX KEY SPIN YIELDS``
with the fds of ``_core.ChildFd``; its spawn spec (``_core.SpawnSpec``) is
kept by its servlet, so that the guardian restarts it exactly as it started.
"""

from __future__ import annotations

import os
import pickle
import site
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any, Protocol

from mpserver import _core
from mpserver._observe.logs import dispatch, worker_level
from mpserver._wire.codec import FLAG_CONTROL, decode
from mpserver._wire.errors import ConfigError, WorkerStartupError, describe_wait_status, startup_failure

if TYPE_CHECKING:
    from mpserver._graph.checks import Cpus

#: This package's directory (``.../mpserver``).
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

__all__ = ['Launch', 'ThreadStart', 'boot_fd']

_READY = int(_core.Control.READY)
_INIT_FAILED = int(_core.Control.INIT_FAILED)

#: Pause rounds before an idle worker yields, when it has a core to itself;
#: then sched_yield rounds before it sleeps (see worker_spin).
WORKER_SPIN = 2000
WORKER_YIELDS = 200


class ThreadStart:
    """A thread worker's start-up report: ``ready`` once built; ``error`` if
    its ``__init__`` raised.

    The worker thread sets ``error`` itself, which records its name
    (``thread_name``) for the report."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self._error: BaseException | None = None
        self.thread_name = ''

    @property
    def error(self) -> BaseException | None:
        return self._error

    @error.setter
    def error(self, exc: BaseException | None) -> None:
        self._error = exc
        self.thread_name = threading.current_thread().name


class ProcessOwner(Protocol):
    """A servlet whose workers are processes (ProcessServlet)."""

    def _process_name(self, index: int) -> str: ...

    def _spawned(self, index: int, spec: Any, pid: int) -> None: ...


class _Pending:
    """A worker process registered with a Launch, until it is spawned."""

    def __init__(
        self, servlet: ProcessOwner, index: int, key: int, fds: list[tuple[int, int]], cpus: list[int], env: list[str]
    ):
        self.servlet, self.index, self.key = servlet, index, key
        self.fds, self.cpus, self.env = fds, cpus, env


class Launch:
    """Everything one Server start needs: the supervisor, the control ring,
    and the workers still to be spawned and waited for."""

    def __init__(self, supervisor: Any, control: Any, board: Any = None, meter: Any = None):
        self.supervisor = supervisor
        self.control = control
        #: The server's meter board (cpp/meter.hpp): workers and routers
        #: count into the records meter_record() hands out; record 0 is the
        #: server's own.
        self.meter = meter
        self._records = 1
        #: The server's cancel board (requests whose callers gave up); workers
        #: whose input carries request tokens skip what is on it.
        self.board = board
        #: False while an ensemble starts its members: their inputs carry the
        #: router's tickets, not request tokens (cpp/cancel_board.hpp).
        self.carries_tokens = True
        #: The server's output ring: a servlet writing into it makes final
        #: results (it encodes those of HTTP-front requests as responses,
        #: see ``_worker.loops``).
        self.output: Any = None
        self._pending: list[_Pending] = []
        self._expect: dict[int, tuple[ProcessOwner, int, int]] = {}  # key -> (servlet, index, pid)
        self._threads: list[ThreadStart] = []
        self._env: list[str] | None = None
        #: Each worker process's name by the key its reports carry (for ``_observe.logs``).
        self.names: dict[int, str] = {}

    @property
    def thread_count(self) -> int:
        """Worker threads registered so far."""
        return len(self._threads)

    def meter_record(self) -> int:
        """A fresh record of the meter board, for one worker or router."""
        if self.meter is None:
            raise RuntimeError('this start has no meter board')
        if self._records >= self.meter.records:
            raise ConfigError(f'a server can count at most {self.meter.records - 1} workers and ensembles')
        self._records += 1
        return self._records - 1

    def add_process(self, servlet: ProcessOwner, index: int, fds: list[tuple[int, int]], cpus: list[int]) -> None:
        """Registers worker ``index`` of ``servlet``; ``fds`` maps this
        process's fds to the child's (``_core.ChildFd``)."""
        if self._env is None:
            self._env = child_env()
        key = len(self._pending) << 16 | index  # the id its reports carry on the control ring
        self._pending.append(_Pending(servlet, index, key, fds, cpus, self._env))

    def add_thread(self) -> ThreadStart:
        start = ThreadStart()
        self._threads.append(start)
        return start

    def spawn_all(self) -> None:
        """Spawns every registered process at once; each servlet gets the
        spec and pid of each of its workers."""
        if not self._pending:
            return
        spin, yields = worker_spin(len(self._pending))
        specs = [
            _core.SpawnSpec(
                [
                    sys.executable,
                    *subprocess._args_from_interpreter_flags(),  # type: ignore[attr-defined]
                    '-m',
                    'mpserver._worker.child',
                    str(os.getpid()),
                    str(p.index),
                    str(p.key),
                    str(spin),
                    str(yields),
                ],
                p.fds,
                p.cpus,
                p.env,
            )
            for p in self._pending
        ]
        pids = self.supervisor.spawn(specs)
        for p, spec, pid in zip(self._pending, specs, pids, strict=True):
            p.servlet._spawned(p.index, spec, pid)
            self._expect[p.key] = (p.servlet, p.index, pid)
            self.names[p.key] = p.servlet._process_name(p.index)
        self._pending.clear()

    def _take_reports(self, idle_timeout: float) -> BaseException | None:
        """Reads control messages (what is there, after waiting at most
        ``idle_timeout`` for the first); returns the first init failure
        reported, if any.  Log records and events go to logging (``_observe.logs``)."""
        failure = None
        batch = self.control.gather(256, 0.0, idle_timeout)
        rounds = 16  # bounded: a worker logging without end must not starve the exit checks
        while batch:
            for mid, flags, aux, payload in batch:
                if dispatch(mid, flags, aux, payload, self.names, started=False):
                    continue
                expected = self._expect.pop(mid, None)
                if expected is not None and aux == _INIT_FAILED and failure is None:
                    failure = startup_failure(_process_label(*expected), decode(flags & ~FLAG_CONTROL, payload))
            rounds -= 1
            batch = self.control.gather(256, 0.0, 0.0) if rounds else None
        return failure

    def wait_ready(self) -> None:
        """Waits until every worker reported ready; raises the first failure."""
        failure = None
        while self._expect and failure is None:
            failure = self._take_reports(0.05)
            if failure is not None:
                break
            exited = [k for k, (_, _, pid) in self._expect.items() if self.supervisor.exit_status(pid) is not None]
            if exited:
                # A worker reports before it exits: read what it said first,
                # so its own exception wins over "it exited".
                failure = self._take_reports(0.0)
                for key in exited:
                    if failure is None and key in self._expect:
                        how, _, _ = describe_wait_status(self.supervisor.exit_status(self._expect[key][2]))
                        failure = WorkerStartupError(
                            f'{_process_label(*self._expect[key])} {how} before it was ready; see its output above'
                        )
        for start in self._threads:
            start.ready.wait()
            if start.error is not None and failure is None:
                failure = startup_failure(f'worker thread {start.thread_name}', start.error)
        if failure is not None:
            self._take_reports(0.0)  # what the other workers logged so far
            raise failure


def _process_label(servlet: ProcessOwner, index: int, pid: int) -> str:
    return f'worker process {servlet._process_name(index)} (pid {pid})'


def boot_fd(
    prep: dict[str, Any],
    body: bytes,
    cpus: list[Cpus],
    names: list[str],
    board: bool,
    meter: list[int],
    final: bool = False,
) -> int:
    """A memfd with what every worker process of a servlet reads at start-up
    (fd ``ChildFd.BOOT``): multiprocessing's preparation data (to import the
    user's main module), the pickled worker class and kwargs, CPUs, names,
    whether to skip the requests on the cancel board (``ChildFd.BOARD``), and
    each worker's record on the meter board (``ChildFd.METER``), and whether
    its results are final (``final``, see ``_worker.loops``)."""
    boot = {'prep': prep, 'body': body, 'cpus': cpus, 'names': names, 'board': board, 'meter': meter}
    boot['final'] = final
    boot['log_level'] = worker_level()  # the root level of its logging (``_worker.log_forward``)
    return _core.memfd_from_bytes('mpserver-boot', pickle.dumps(boot, 5))


def worker_spin(processes: int) -> tuple[int, int]:
    """How idle workers wait before sleeping on the ring's futex: (pause
    rounds, sched_yield rounds).

    Waiting a little saves the sleep and the producer's wake-up call when the
    next item comes soon.  A worker first spins on ``pause`` — but only when
    the workers and the main process fit on the usable cores: otherwise a
    spinning worker takes CPU from the processes with work — and then yields
    its core a number of times (the core goes to whoever has work).
    ``MPSERVER_WORKER_SPIN`` in the environment overrides the pause rounds.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    spin = WORKER_SPIN if processes + 1 <= usable else 0
    return spin, WORKER_YIELDS


def child_env() -> list[str]:
    """The environment for worker processes: ours, plus, when this mpserver
    was imported from a directory that a fresh interpreter would not search
    (a source tree put on ``sys.path`` at run time), that directory on
    PYTHONPATH, so that ``python -m mpserver._worker.child`` finds the same package.
    Returns [] when the inherited environment already works."""
    home = os.path.dirname(_PACKAGE)  # the directory that holds the package
    pythonpath = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    known = {os.path.abspath(p) for p in (*site.getsitepackages(), site.getusersitepackages(), *pythonpath)}
    if home in known:
        return []
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([home, *pythonpath])
    return [f'{k}={v}' for k, v in env.items()]
