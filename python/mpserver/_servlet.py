"""Servlets: how many workers run a Worker class, and where (processes or
threads); and how servlets compose into a graph.

A servlet is a specification until a Server starts it.  Starting creates the
servlet's input ring in shared memory and its workers: processes spawned by
the C++ supervisor, or threads of the main process.  Workers take items from
that ring (whichever is free takes the next) and write results to the ring
they were given as output.

Compound servlets wire rings together: a SequentialServlet hands each stage
the next stage's input ring as its output (stages feed each other directly,
process to process); an EnsembleServlet's fan-out and fan-in run in a C++
router; a SwitchServlet routes on a thread of the main process, because its
``switch`` method is Python.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence

from . import _core
from ._codec import FLAG_CONTROL, FLAG_ERROR, FLAG_OBJECT, ObjectCodec, PickleCodec, codec_for, decode, pass_error
from ._errors import ConfigError, WorkerStartupError
from ._worker import Worker, _serve

__all__ = ['Servlet', 'ProcessServlet', 'ThreadServlet', 'SequentialServlet', 'EnsembleServlet',
           'SwitchServlet', 'CpuAffinity']

#: Data bytes of a servlet's input ring (messages larger than a quarter of it
#: are streamed through in pieces).
INPUT_RING_BYTES = 8 << 20

#: Items one worker can hold at once with its death still noticed (claims.hpp);
#: the claim table is a sparse memfd, so unused slots cost no memory.
CLAIM_SLOTS = 65536

# Control messages (aux field) on the Server's control ring.
CTL_READY = 1
CTL_INIT_FAILED = 2


class _Launch:
    """Everything one Server start needs: the supervisor, the control ring, and
    the workers still to be spawned and waited for."""

    def __init__(self, supervisor, control):
        self.supervisor = supervisor
        self.control = control
        self._specs = []  # (servlet, worker index, spawn spec, key)
        self._expect = {}  # key -> (servlet, worker index, pid), until it reports
        self._threads = []  # _ThreadHolder of each thread worker

    def key_for(self, servlet, index) -> int:
        """The id a worker uses on the control ring."""
        return len(self._specs) << 16 | index

    def add_process(self, servlet, index, spec, key):
        self._specs.append((servlet, index, spec, key))

    def add_thread(self, holder):
        self._threads.append(holder)

    def spawn_all(self):
        if not self._specs:
            return
        spin, yields = _worker_spin(len(self._specs))
        for _, _, (argv, _, _, _), _ in self._specs:  # the same argv a restart uses
            argv += [str(spin), str(yields)]
        pids = self.supervisor.spawn([s[2] for s in self._specs])
        for (servlet, index, _, key), pid in zip(self._specs, pids):
            servlet._pids[index] = pid
            self._expect[key] = (servlet, index, pid)

    def _take_reports(self, idle_timeout):
        """Reads control messages; returns the first init failure reported, if any."""
        failure = None
        for mid, flags, aux, payload in self.control.gather(64, 0.0, idle_timeout) or ():
            if self._expect.pop(mid, None) is not None and aux == CTL_INIT_FAILED and failure is None:
                failure = decode(flags & ~FLAG_CONTROL, payload)
        return failure

    def wait_ready(self):
        """Waits until every worker reported ready; raises the first failure."""
        failure = None
        while self._expect and failure is None:
            failure = self._take_reports(0.05)
            if failure is not None:
                break
            exited = [k for k, (_, _, pid) in self._expect.items()
                      if self.supervisor.exit_status(pid) is not None]
            if exited:
                # A worker reports before it exits: read what it said first,
                # so its own exception wins over "it exited".
                failure = self._take_reports(0.0)
                for key in exited:
                    if failure is None and key in self._expect:
                        servlet, index, pid = self._expect[key]
                        failure = WorkerStartupError(
                            f'worker process {servlet._process_name(index)} (pid {pid}) exited with '
                            f'{_describe_status(self.supervisor.exit_status(pid))} before it was '
                            'ready; see its output above'
                        )
        for holder in self._threads:
            holder.ready.wait()
            if holder.error is not None and failure is None:
                failure = holder.error
        if failure is not None:
            raise failure


WORKER_SPIN = 2000  # pause rounds before an idle worker yields, when it has a core to itself
WORKER_YIELDS = 200  # then sched_yield rounds before it sleeps


def _worker_spin(processes: int) -> tuple[int, int]:
    """How idle workers wait before sleeping on the ring's futex: (pause
    rounds, sched_yield rounds).

    Waiting a little saves the sleep and the producer's wake-up call when the
    next item comes soon.  A worker first spins on `pause` — but only when
    the workers and the main process fit on the usable cores: otherwise a
    spinning worker takes CPU from the processes with work (2 workers on 2
    cores lost ~20% throughput) — and then yields its core a number of times
    (the core goes to whoever has work; 4 workers on 2 cores gained ~18%
    over sleeping at once).  ``MPSERVER_WORKER_SPIN`` in the environment
    overrides the pause rounds.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    spin = WORKER_SPIN if processes + 1 <= usable else 0
    return spin, WORKER_YIELDS


def _child_env() -> list[str]:
    """The environment for worker processes: ours, plus, when this mpserver
    was imported from a directory that a fresh interpreter would not search
    (a source tree put on ``sys.path`` at run time), that directory on
    PYTHONPATH, so that ``python -m mpserver._child`` finds the same package.
    Returns [] when the inherited environment already works."""
    import site

    import mpserver

    home = os.path.dirname(os.path.dirname(os.path.abspath(mpserver.__file__)))
    pythonpath = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    known = {os.path.abspath(p) for p in (*site.getsitepackages(), site.getusersitepackages(), *pythonpath)}
    if home in known:
        return []
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([home, *pythonpath])
    return [f'{k}={v}' for k, v in env.items()]


def _describe_status(status: int) -> str:
    if status < 0:
        return 'an unknown status'
    if os.WIFSIGNALED(status):
        import signal

        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f'signal {name}'
    return f'exit code {os.WEXITSTATUS(status)}'


class Servlet(ABC):
    """A part of the serving graph: a simple servlet runs one Worker class on
    several processes or threads; compound servlets combine servlets."""

    @abstractmethod
    def _start(self, launch: _Launch, output, output_local: bool):
        """Create rings and register workers; return ``(input_ring, input_local)``.

        ``output_local`` is true when whoever consumes ``output`` lives in the
        main process (so thread workers may send object references).
        ``input_local`` tells producers whether they may send references.
        """

    @abstractmethod
    def _stop(self) -> None:
        """Close the input; wait for the workers to finish what they hold and exit."""

    @abstractmethod
    def _kill(self, grace: float = 0.0) -> None:
        """Stop now, dropping queued items; busy workers get ``grace`` seconds.
        Must be safe on a servlet that was never (or only partly) started."""

    def _guard(self, guardian) -> None:
        """Registers process workers with the server's guardian (after start-up)."""

    @property
    @abstractmethod
    def workers(self) -> list:
        """The running workers (process or thread handles)."""

    @property
    def children(self) -> list:
        return self.workers

    def _debug_info(self) -> dict:
        return {'type': type(self).__name__, 'children': [self._worker_info(i) for i in range(len(self.workers))]}

    def _worker_info(self, i) -> dict:  # pragma: no cover - overridden
        return {}


def _check_worker_cls(worker_cls):
    if not (isinstance(worker_cls, type) and issubclass(worker_cls, Worker)):
        raise ConfigError(f'worker_cls must be a subclass of mpserver.Worker, got {worker_cls!r}')


def _normalize_cpus(cpus) -> list:
    ncpu = os.cpu_count() or 1

    def check_cpu(c, where):
        if isinstance(c, bool) or not isinstance(c, int):
            raise ConfigError(f'cpus: {where} must be an int CPU number, got {c!r}')
        if not 0 <= c < ncpu:
            raise ConfigError(f'cpus: CPU {c} does not exist on this machine (CPUs 0..{ncpu - 1})')
        return c

    if cpus is None:
        return [None]
    if isinstance(cpus, bool):
        raise ConfigError(f'cpus must be None, an int or a list, got {cpus!r}')
    if isinstance(cpus, int):
        if cpus < 1:
            raise ConfigError(f'cpus as a number of workers must be >= 1, got {cpus}')
        return [None] * cpus
    if isinstance(cpus, (str, bytes)) or not isinstance(cpus, Sequence):
        raise ConfigError(f'cpus must be None, an int or a list, got {type(cpus).__name__}')
    if len(cpus) == 0:
        raise ConfigError('cpus must not be an empty list')
    out = []
    for i, c in enumerate(cpus):
        if c is None:
            out.append(None)
        elif isinstance(c, int) and not isinstance(c, bool):
            out.append(check_cpu(c, f'entry {i}'))
        elif isinstance(c, CpuAffinity):
            out.append(_normalize_cpus([c.target])[0] if c.target is not None else None)
        elif isinstance(c, Sequence) and not isinstance(c, (str, bytes)):
            if len(c) == 0:
                raise ConfigError(f'cpus: entry {i} is an empty list')
            out.append(sorted({check_cpu(v, f'entry {i}') for v in c}))
        else:
            raise ConfigError(f'cpus: entry {i} must be None, an int or a list of ints, got {c!r}')
    return out


class CpuAffinity:
    """The CPUs one worker process is pinned to (older mpservice API).

    ``CpuAffinity(3)``, ``CpuAffinity([0, 1])`` or ``CpuAffinity(None)`` (no
    pinning); accepted wherever an entry of ``ProcessServlet(cpus=[...])`` is.
    """

    def __init__(self, target: int | Sequence[int] | None = None):
        if target is not None and not isinstance(target, int):
            target = list(target)
        self.target = target

    def __repr__(self):
        return f'{type(self).__name__}({self.target!r})'

    def __eq__(self, other):
        return isinstance(other, CpuAffinity) and other.target == self.target

    def __hash__(self):
        return hash(repr(self))

    def set(self, *, pid: int = 0) -> None:
        """Pin process ``pid`` (0: this process) to the target CPUs."""
        if self.target is not None:
            os.sched_setaffinity(pid, [self.target] if isinstance(self.target, int) else self.target)

    def get(self, *, pid: int = 0) -> list[int]:
        """The CPUs process ``pid`` (0: this process) may run on now."""
        return sorted(os.sched_getaffinity(pid))


class ProcessServlet(Servlet):
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
    **kwargs
        Passed to ``worker_cls.__init__`` (they are pickled).
    """

    def __init__(self, worker_cls: type[Worker], *, cpus=None, worker_name: str | None = None,
                 max_restarts: int = 5, restart_window: float = 60.0, **kwargs):
        _check_worker_cls(worker_cls)
        budget = _RestartBudget(max_restarts, restart_window)  # validates; the guardian applies it
        self._worker_cls = worker_cls
        self._cpus = _normalize_cpus(cpus)
        self._worker_name = worker_name
        self._max_restarts = budget.max_restarts
        self._restart_window = budget.window
        self._init_kwargs = kwargs
        self._guardian = None
        self._pids: list = []
        self._supervisor = None
        self._input = None
        self._started = False

    def _process_name(self, index: int) -> str:
        base = self._worker_name or f'{self._worker_cls.__name__}-process'
        return f'{base}-{index}'

    def _start(self, launch, output, output_local):
        if self._started:
            raise RuntimeError('this servlet is already running in a server')
        main = sys.modules.get('__main__')
        if self._worker_cls.__module__ == '__main__' and not getattr(main, '__file__', None):
            raise TypeError(
                f'{self._worker_cls.__qualname__} is defined in an interactive session or a '
                "'python -c' program, which worker processes cannot import: define it in a module "
                'or a script file (workers import your main script, like multiprocessing\'s spawn)'
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
        boot = pickle.dumps({'prep': prep, 'body': body, 'cpus': self._cpus,
                             'names': [self._process_name(i) for i in range(len(self._cpus))]}, 5)
        boot_fd = _core.memfd_from_bytes('mpserver-boot', boot)
        self._input = _core.Ring.create(INPUT_RING_BYTES, 'mpserver-in')
        self._output = output
        self._control = launch.control
        self._claims = _core.ClaimTable.create(len(self._cpus), CLAIM_SLOTS)
        self._supervisor = launch.supervisor
        self._pids = [None] * len(self._cpus)
        self._specs = []
        env = _child_env()
        try:
            for i, cpu in enumerate(self._cpus):
                key = launch.key_for(self, i)
                # Same interpreter flags as ours (-S, -O, -X ...), as multiprocessing does.
                argv = [sys.executable, *subprocess._args_from_interpreter_flags(),
                        '-m', 'mpserver._child', str(os.getpid()), str(i), str(key)]
                fds = [(boot_fd, 3), (launch.control.fd, 4), (self._input.fd, 5), (output.fd, 6),
                       (self._claims.fd, 7)]
                cpus = [] if cpu is None else list(cpu) if isinstance(cpu, list) else [cpu]
                self._specs.append((argv, fds, cpus, env))
                launch.add_process(self, i, (argv, fds, cpus, env), key)
            self._boot_fd = boot_fd
        except BaseException:
            os.close(boot_fd)
            raise
        self._started = True
        return self._input, False

    def _guard(self, guardian) -> None:
        """Hands the running workers to the server's guardian (see guardian.hpp)."""
        label = f'{type(self).__name__}({self._worker_cls.__qualname__})'
        names = [self._process_name(i) for i in range(len(self._cpus))]
        self._guardian = guardian
        self._guard_id = guardian.add(label, names, self._max_restarts, self._restart_window,
                                      self._input, self._output, self._control, self._claims,
                                      self._specs, [p or 0 for p in self._pids])

    def _current_pids(self) -> list:
        if self._guardian is not None:
            return [p or None for p in self._guardian.info(self._guard_id)['pids']]
        return list(self._pids)

    def _stop(self):
        if not self._started:
            return
        self._input.close()
        # Wait for the workers of the moment (restarted ones included) to exit.
        while True:
            pids = [p for p in self._current_pids() if p is not None]
            if all(self._supervisor.wait_exit(pid, 0.1) is not None for pid in pids):
                if pids == [p for p in self._current_pids() if p is not None]:
                    break
        self._release()

    def _release(self):
        if getattr(self, '_boot_fd', None) is not None:
            os.close(self._boot_fd)
            self._boot_fd = None
        self._input = self._output = self._control = self._claims = None
        self._supervisor = self._guardian = None
        self._pids = []
        self._specs = []
        self._started = False

    def _kill(self, grace: float = 0.0):
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
    def workers(self):
        return [p for p in self._current_pids() if p is not None] if self._started else []

    def _debug_info(self):
        out = []
        for i, pid in enumerate(self._current_pids() if self._started else []):
            status = self._supervisor.exit_status(pid) if pid is not None else None
            out.append({
                'type': 'process',
                'name': self._process_name(i),
                'pid': pid,
                'cpus': self._cpus[i],
                'is_alive': pid is not None and status is None,
            })
        info = {'type': type(self).__name__, 'worker': self._worker_cls.__qualname__, 'children': out}
        if self._guardian is not None:
            g = self._guardian.info(self._guard_id)
            info.update(restarts=g['restarts'], crashes=g['crashes'], failed=g['failed'],
                        max_restarts=self._max_restarts, restart_window=self._restart_window)
        return info


class _ThreadHolder:
    def __init__(self):
        self.ready = threading.Event()
        self.error: BaseException | None = None


class ThreadServlet(Servlet):
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
        (default 5) within any ``restart_window`` seconds (default 60).
    **kwargs
        Passed to ``worker_cls.__init__``.
    """

    def __init__(self, worker_cls: type[Worker], *, num_threads: int | None = None,
                 worker_name: str | None = None, max_restarts: int = 5, restart_window: float = 60.0,
                 **kwargs):
        _check_worker_cls(worker_cls)
        if num_threads is None:
            num_threads = 1
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ConfigError(f'num_threads must be None or an int >= 1, got {num_threads!r}')
        self._restart_policy = _RestartBudget(max_restarts, restart_window)
        self._worker_cls = worker_cls
        self._num_threads = num_threads
        self._worker_name = worker_name
        self._init_kwargs = kwargs
        self._threads: list = []
        self._input = None
        self._started = False

    def _start(self, launch, output, output_local):
        if self._started:
            raise RuntimeError('this servlet is already running in a server')
        self._input = _core.Ring.create(INPUT_RING_BYTES, 'mpserver-thread-in')
        self._claims = _core.ClaimTable.create(self._num_threads, CLAIM_SLOTS)
        self._live = self._num_threads
        self._restarts = self._crashes = 0
        self._lock = threading.Lock()
        codec = ObjectCodec if output_local else PickleCodec
        base = self._worker_name or f'{self._worker_cls.__name__}-thread'
        self._threads = []
        for i in range(self._num_threads):
            holder = _ThreadHolder()
            t = threading.Thread(target=self._run, args=(i, holder, output, codec),
                                 name=f'{base}-{i}', daemon=True)
            launch.add_thread(holder)
            self._threads.append(t)
            t.start()
        self._started = True
        return self._input, True

    def _run(self, index, holder, output, codec):
        try:
            worker = self._worker_cls(worker_index=index, **self._init_kwargs)
        except BaseException as e:
            holder.error = e
            holder.ready.set()
            return
        holder.ready.set()
        inp, claims = self._input, self._claims
        _core.bind_claims(claims, index)
        try:
            while True:
                try:
                    _serve(worker, inp, output, codec, sole=self._num_threads == 1)
                except BaseException as e:  # noqa: BLE001 - a worker thread died: heal
                    _cleanup_quietly(worker, e)
                    err = self._crash_error(index, e)
                    for mid, aux in claims.take(index):
                        output.push(mid, *codec.encode_error(err, f'{type(err).__name__}: {err}\n'), aux)
                    with self._lock:
                        self._crashes += 1
                        again = not inp.closed and self._restart_policy.allow()
                        if again:
                            self._restarts += 1
                        else:
                            self._live -= 1
                            last = self._live == 0
                    if again:
                        try:
                            worker = self._worker_cls(worker_index=index, **self._init_kwargs)
                            continue
                        except BaseException as e2:  # noqa: BLE001
                            err = self._crash_error(index, e2)
                            with self._lock:
                                self._live -= 1
                                last = self._live == 0
                    if last and not inp.closed:
                        from ._errors import WorkerCrashedError

                        label = f'{type(self).__name__}({self._worker_cls.__qualname__})'
                        _fail_everything(inp, output, codec, WorkerCrashedError(
                            f'{label} has no live worker left (restart budget spent); '
                            'this item was not processed', label))
                    return
                else:
                    worker.cleanup()
                    return
        finally:
            _core.bind_claims(None)

    def _crash_error(self, index, exc) -> BaseException:
        from ._errors import WorkerCrashedError

        name = self._threads[index].name if index < len(self._threads) else str(index)
        label = f'{type(self).__name__}({self._worker_cls.__qualname__})'
        return WorkerCrashedError(
            f'worker thread {name} of {label} was stopped by {exc!r} while processing this item',
            label, name, index)

    def _stop(self):
        if not self._started:
            return
        self._input.close()
        for t in self._threads:
            while t.is_alive():
                t.join(0.1)
        self._input = None
        self._started = False

    def _kill(self, grace: float = 0.0):
        """Stop now: queued items are dropped; threads finish their current item."""
        if not self._started:
            return
        self._input.abort()
        for t in self._threads:
            t.join(grace)
        self._input = None
        self._started = False

    @property
    def workers(self):
        return list(self._threads) if self._started else []

    def _debug_info(self):
        return {
            'type': type(self).__name__,
            'worker': self._worker_cls.__qualname__,
            'children': [{'type': 'thread', 'name': t.name, 'is_alive': t.is_alive()} for t in self.workers],
            'restarts': getattr(self, '_restarts', 0),
            'crashes': getattr(self, '_crashes', 0),
        }


class _RestartBudget:
    """At most ``max_restarts`` restarts within any ``window`` seconds."""

    def __init__(self, max_restarts, window):
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ConfigError(f'max_restarts must be an int >= 0, got {max_restarts!r}')
        if isinstance(window, bool) or not isinstance(window, (int, float)) or not window > 0:
            raise ConfigError(f'restart_window must be a number of seconds > 0, got {window!r}')
        self.max_restarts = max_restarts
        self.window = float(window)
        self._times: list[float] = []

    def allow(self) -> bool:
        now = time.monotonic()
        self._times = [t for t in self._times if now - t <= self.window]
        if len(self._times) >= self.max_restarts:
            return False
        self._times.append(now)
        return True


def _cleanup_quietly(worker, exc) -> None:
    try:
        worker.cleanup(exc)
    except BaseException:  # noqa: BLE001 - the worker is being replaced anyway
        pass


def _for_each_item(inp, output, codec, handle) -> None:
    """Until ``inp`` is closed and drained: upstream errors go on to ``output``
    unchanged; every other message goes to ``handle(id, flags, aux, payload)``."""
    while True:
        items = inp.gather(256, 0.0, None)
        if items is None:
            return
        for mid, flags, aux, payload in items:
            if flags & FLAG_ERROR:
                output.push(mid, *pass_error(flags, payload, codec), aux)
            else:
                handle(mid, flags, aux, payload)


def _fail_everything(inp, output, codec, err) -> None:
    """A servlet without workers: answer every item reaching it with ``err``."""
    encoded = codec.encode_error(err, f'{type(err).__name__}: {err}\n')
    _for_each_item(inp, output, codec, lambda mid, flags, aux, payload: output.push(mid, *encoded, aux))


# --------------------------------------------------------------------- compound servlets


def _check_members(kind: str, servlets, minimum: int) -> tuple:
    if len(servlets) < minimum:
        raise ConfigError(f'{kind} needs at least {minimum} servlet{"s" if minimum > 1 else ""}, '
                          f'got {len(servlets)}')
    for i, s in enumerate(servlets):
        if not isinstance(s, Servlet):
            raise ConfigError(f'{kind}: member {i} must be a Servlet, got {type(s).__name__}')
    return tuple(servlets)


def _kill_all(servlets, grace: float) -> None:
    """Kills several servlets, sharing one grace period among them."""
    deadline = time.monotonic() + grace
    for s in servlets:
        s._kill(max(0.0, deadline - time.monotonic()))


class _Compound(Servlet):
    """What Sequential, Ensemble and Switch servlets share: members and their workers."""

    _servlets: tuple

    @property
    def workers(self) -> list:
        return [w for s in self._servlets for w in s.workers]

    @property
    def children(self) -> tuple:
        """The member servlets, as given (a tuple, as in mpservice)."""
        return self._servlets

    def _debug_info(self) -> dict:
        return {'type': type(self).__name__, 'children': [s._debug_info() for s in self._servlets]}

    def _guard(self, guardian) -> None:
        for s in self._servlets:
            s._guard(guardian)


class SequentialServlet(_Compound):
    """Runs servlets one after another: each one's output is the next one's input.

    Stages hand items to each other directly: process workers of one stage
    write into the input ring of the next, so an item does not pass through
    the main process between two process stages.
    """

    def __init__(self, *servlets: Servlet):
        self._servlets = _check_members('SequentialServlet', servlets, 1)

    def _start(self, launch, output, output_local):
        # Last stage first: each stage needs its consumer's ring.
        for s in reversed(self._servlets):
            output, output_local = s._start(launch, output, output_local)
        return output, output_local

    def _stop(self):
        # In order: a stage is drained (and its workers gone) before the next
        # stage's input is closed, so nothing in flight is lost.
        for s in self._servlets:
            s._stop()

    def _kill(self, grace=0.0):
        _kill_all(self._servlets, grace)


class EnsembleServlet(_Compound):
    """Gives every input to all member servlets; the result is the list of
    their results, in member order.

    With ``fail_fast=True`` (default), the first member that raises makes the
    item's result an :class:`EnsembleError` (results of the other members for
    that item are dropped).  With ``fail_fast=False``, exceptions take their
    place in the list; only if every member failed is the result an
    :class:`EnsembleError`.  ``EnsembleError.args[1]`` is ``{'y': [results,
    exceptions, or None for members that had not finished], 'n': members
    finished}``.  An exception arriving from an earlier stage skips the
    ensemble and goes on unchanged.

    Fan-out and fan-in run in C++ threads of the main process (no polling):
    members read their own input ring and write to the ensemble's join ring.
    When every member takes its input by reference (thread members) and the
    ensemble's consumer is in the main process, items travel by reference
    (each member holds its own reference); otherwise they are pickled.
    """

    def __init__(self, *servlets: Servlet, fail_fast: bool = True):
        self._servlets = _check_members('EnsembleServlet', servlets, 2)
        if len(servlets) > _core.MAX_ENSEMBLE_MEMBERS:
            raise ConfigError(f'EnsembleServlet takes at most {_core.MAX_ENSEMBLE_MEMBERS} members, '
                              f'got {len(servlets)}')
        if not isinstance(fail_fast, bool):
            raise ConfigError(f'fail_fast must be a bool, got {fail_fast!r}')
        self._fail_fast = fail_fast
        self._input = self._join = self._router = None

    def _start(self, launch, output, output_local):
        if self._router is not None:
            raise RuntimeError('this servlet is already running in a server')
        self._join = _core.Ring.create(INPUT_RING_BYTES, 'mpserver-join')
        started = [s._start(launch, self._join, output_local) for s in self._servlets]
        # By reference only when the consumer is local too: an upstream error
        # passes through the router untouched, and must suit the consumer.
        local = output_local and all(loc for _, loc in started)
        self._input = _core.Ring.create(INPUT_RING_BYTES, 'mpserver-ensemble-in')
        if local:
            self._input.object_refs = len(self._servlets)  # one per member
        self._router = _core.EnsembleRouter(self._input, [r for r, _ in started], self._join, output,
                                            self._fail_fast)
        self._router.start()
        return self._input, local

    def _stop(self):
        if self._router is None:
            return
        self._input.close()
        self._router.join_fanout()  # every input handed to every member
        for s in self._servlets:
            s._stop()  # every member result is in the join ring
        self._join.close()
        self._router.join_fanin()  # every result emitted
        self._release()

    def _kill(self, grace=0.0):
        if self._input is not None:
            self._input.abort()
        if self._join is not None:
            self._join.abort()
        _kill_all(self._servlets, grace)
        if self._router is not None:
            self._router.join_fanout()
            self._router.join_fanin()
        self._release()

    def _release(self):
        self._router = self._input = self._join = None

    def _debug_info(self):
        info = super()._debug_info()
        info['fail_fast'] = self._fail_fast
        r = self._router
        if r is not None:
            info['router'] = {'emitted': r.emitted, 'dropped': r.dropped, 'open': r.open_entries}
        return info


class SwitchServlet(_Compound):
    """Sends each input to exactly one member servlet, chosen by :meth:`switch`.

    Subclass it and implement ``switch(self, x) -> int``.  It runs on a
    routing thread of the main process for every input (exceptions from an
    earlier stage skip it and go on unchanged).  If ``switch`` raises, or
    returns something that is not a valid member index, that exception (an
    ``IndexError``/``TypeError`` for a bad index) becomes the item's result.
    """

    def __init__(self, *servlets: Servlet):
        self._servlets = _check_members('SwitchServlet', servlets, 1)
        self._input = None
        self._thread = None

    @abstractmethod
    def switch(self, x) -> int:
        """Return the index of the member servlet that processes ``x``.

        ``x`` is never an exception.  Keep it quick: it runs in the main process.
        """
        raise NotImplementedError

    def _start(self, launch, output, output_local):
        if self._thread is not None:
            raise RuntimeError('this servlet is already running in a server')
        started = [s._start(launch, output, output_local) for s in self._servlets]
        local = all(loc for _, loc in started)
        self._input = _core.Ring.create(INPUT_RING_BYTES, 'mpserver-switch-in')
        self._thread = threading.Thread(
            target=self._route, args=(self._input, [r for r, _ in started], output, codec_for(output_local)),
            name=f'{type(self).__name__}.router', daemon=True)
        self._thread.start()
        return self._input, local

    def _route(self, inp, members, output, codec):
        n = len(members)
        switch = self.switch
        name = type(self).__name__

        def choose(flags, payload):
            """(member index, message flags, payload) or raises the item's error."""
            x = decode(flags, payload)
            idx = switch(x)
            if isinstance(idx, bool) or not isinstance(idx, int):
                raise TypeError(f'{name}.switch returned {idx!r}; it must return an int member index')
            if not 0 <= idx < n:
                raise IndexError(f'{name}.switch returned {idx}; valid member indices are 0..{n - 1}')
            if isinstance(payload, tuple):  # by-reference ensemble result: send the value
                return idx, FLAG_OBJECT, x
            return idx, flags, payload

        # One push per member and batch: one lock and one wake-up for a run.
        while True:
            items = inp.gather(256, 0.0, None)
            if items is None:
                return
            runs: dict = {}  # (member, aux) -> [(id, flags, payload), ...]
            for mid, flags, aux, payload in items:
                if flags & FLAG_ERROR:
                    output.push(mid, *pass_error(flags, payload, codec), aux)
                    continue
                try:
                    idx, flags, payload = choose(flags, payload)
                except Exception as e:
                    output.push(mid, *codec.encode_error(e), aux)
                    continue
                run = runs.get((idx, aux))
                if run is None:
                    runs[(idx, aux)] = run = []
                run.append((mid, flags, payload))
            for (idx, aux), run in runs.items():
                members[idx].push_many(run, aux)

    def _stop(self):
        if self._thread is None:
            return
        self._input.close()
        while self._thread.is_alive():
            self._thread.join(0.1)
        for s in self._servlets:
            s._stop()
        self._input = self._thread = None

    def _kill(self, grace=0.0):
        if self._input is not None:
            self._input.abort()
        _kill_all(self._servlets, grace)
        if self._thread is not None:
            self._thread.join(1.0)
        self._input = self._thread = None
