"""Backends under test and the Worker classes the tests use, per backend.

Worker processes are separate (spawned) interpreters.  They receive a worker
class *by reference* (module + qualified name) and re-import it, so every test
Worker must live at module level under a stable name.  ``_define_workers``
builds the full set of test Workers on top of one backend's ``Worker`` base;
``_register`` runs it once per backend at import time and publishes each class
in this module's globals as ``<Name>__<backend>`` (e.g. ``Square__mpserver``),
with ``__name__``/``__qualname__``/``__module__`` set so that pickle, and the
re-import in the worker process, find exactly that object.

Tests never use those global names directly: they use ``backend.w.Square``.

``SwitchServlet`` subclasses are handled the same way by ``_define_switches``
(published as ``<Name>__<backend>``, used as ``backend.sw.ParitySwitch``), for
backends that have a ``SwitchServlet``.
"""

from __future__ import annotations

import builtins
import multiprocessing
import os
import sys
import threading
import time
import types
import zlib

__all__ = ['Backend', 'BACKENDS', 'IMPORT_ERRORS', 'CustomError', 'get_backend']


class CustomError(Exception):
    """An exception type that only this test module knows about."""


class MyBytes(bytes):
    """A bytes subclass (its instances can carry attributes): it must keep its
    type, and its attributes, across processes, i.e. be pickled rather than
    travel as raw bytes."""


def describe_payload(x):
    """What a payload looks like where it arrived, as plain comparable data.

    numpy array -> ('ndarray', dtype, shape, order, writable, crc32 of the C-order bytes);
    bytes-like  -> (type name, nbytes, writable, crc32);
    list/tuple  -> (type name, (descriptions...)); dict -> ('dict', ((key, description), ...));
    anything else -> (type name, repr).
    """
    np = None
    if 'numpy' in sys.modules:  # an array can only arrive if numpy is (being) imported
        # Another thread of the worker may still be importing numpy (mpservice
        # unpickles on a thread of its own): this import waits for it to finish
        # instead of reading a half-initialised module.
        import numpy as np
    if np is not None and isinstance(x, np.ndarray):
        order = 'C' if x.flags.c_contiguous else 'F' if x.flags.f_contiguous else '-'
        return ('ndarray', x.dtype.str, tuple(x.shape), order, bool(x.flags.writeable), zlib.crc32(x.tobytes()))
    if isinstance(x, (bytes, bytearray, memoryview)):
        m = memoryview(x)
        return (type(x).__name__, m.nbytes, not m.readonly, zlib.crc32(m.cast('B') if m.nbytes else b''))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(describe_payload(v) for v in x))
    if isinstance(x, dict):
        return ('dict', tuple((k, describe_payload(v)) for k, v in x.items()))
    return (type(x).__name__, repr(x))


def build_payload(kind, n, seed):
    """A deterministic value of about ``n`` bytes, distinct per ``seed``:
    'bytes' -> bytes; 'array' -> writable uint8 numpy array;
    'mixed' -> (bytes, float64 array, {'k': bytearray}, str)."""
    import numpy as np

    period = ((np.arange(251, dtype=np.int64) * 7 + seed) % 251).astype(np.uint8)
    u8 = np.resize(period, n)  # byte i is (7 * i + seed) % 251
    if kind == 'bytes':
        return u8.tobytes()
    if kind == 'array':
        return u8
    if kind == 'mixed':
        f64 = np.arange(n // 8, dtype=np.float64) * 0.5 + seed
        return (u8.tobytes(), f64, {'k': bytearray(u8)}, f'text {seed}')
    raise ValueError(f'unknown kind {kind!r}')


def _define_workers(Worker) -> dict[str, type]:
    """Define every test Worker as a subclass of ``Worker``; return them by short name."""

    class Square(Worker):
        def call(self, x):
            return x * x

    class SlowVarying(Worker):
        # Every third item is slow, so with 2+ workers the results complete
        # out of input order.
        def call(self, x):
            time.sleep(0.04 if x % 3 == 0 else 0.0)
            return x * 10

    class Sleeper(Worker):
        def call(self, x):
            time.sleep(x)
            return x

    class Gate(Worker):
        # ``call((path, value))`` blocks until ``path`` exists (bounded), then
        # returns ``value``.  Lets a test hold items "in flight" for exactly as
        # long as it wants, without relying on sleep durations.
        def call(self, x):
            path, value = x
            deadline = time.monotonic() + 60
            while not os.path.exists(path):
                if time.monotonic() > deadline:
                    raise RuntimeError(f'gate {path} never opened')
                time.sleep(0.005)
            return value

    class FailOn(Worker):
        def __init__(self, *, bad=(3,), **kwargs):
            super().__init__(**kwargs)
            self.bad = tuple(bad)

        def call(self, x):
            if x == 'custom':
                raise CustomError('custom failure', 42)
            if x in self.bad:
                self._explode_on_purpose(x)
            return x * 10

        def _explode_on_purpose(self, x):
            raise ValueError(f'refusing to process {x}')

    class BatchLen(Worker):
        # For each item, returns (item, size of the batch it was processed in).
        def __init__(self, *, batch_size=10, **kwargs):
            super().__init__(batch_size=batch_size, **kwargs)

        def call(self, batch):
            if not isinstance(batch, list):
                raise TypeError(f'expected a list batch, got {type(batch).__name__}')
            if any(v < 0 for v in batch):
                raise ValueError(f'negative item in batch {batch!r}')
            return [(v, len(batch)) for v in batch]

    class Info(Worker):
        # Reports the worker's view of its own attributes.  A positive number
        # input makes the call sleep that long first.
        def call(self, x):
            if self.batch_size > 0:
                return [self._info(v, True, len(x)) for v in x]
            return self._info(x, isinstance(x, list), None)

        def _info(self, x, got_list, batch_len):
            if isinstance(x, (int, float)) and x > 0:
                time.sleep(x)
            return {
                'x': x,
                'worker_index': self.worker_index,
                'batch_size': self.batch_size,
                'batch_wait_time': self.batch_wait_time,
                'cpu_affinity': self.cpu_affinity,
                'name': self.name,
                'pid': os.getpid(),
                'thread': threading.current_thread().name,
                'affinity': sorted(os.sched_getaffinity(0)),
                'call_got_list': got_list,
                'batch_len': batch_len,
            }

    class Prep(Worker):
        # preprocess doubles, rejecting negatives; call adds 1.
        # 'report' returns what preprocess and call have seen so far.
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._lock = threading.Lock()
            self.preprocessed = []
            self.called = []

        def preprocess(self, x):
            with self._lock:
                if isinstance(x, BaseException):
                    self.preprocessed.append(('EXCEPTION', repr(x)))
                else:
                    self.preprocessed.append(x)
            if x == 'report':
                return x
            if x < 0:
                raise ValueError(f'negative input {x}')
            return x * 2

        def call(self, x):
            if self.batch_size > 0:
                return [self._one(v) for v in x]
            return self._one(x)

        def _one(self, x):
            with self._lock:
                if x == 'report':
                    return {'preprocessed': list(self.preprocessed), 'called': list(self.called)}
                self.called.append(x)
            return x + 1

    class Concurrency(Worker):
        # Runs ``call`` in 4 threads within the worker (num_stream_threads);
        # each result carries the max number of calls seen running at once.
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.num_stream_threads = 4
            self._lock = threading.Lock()
            self._active = 0
            self._max_active = 0

        def call(self, x):
            with self._lock:
                self._active += 1
                self._max_active = max(self._max_active, self._active)
            try:
                time.sleep(0.3)
            finally:
                with self._lock:
                    self._active -= 1
            with self._lock:
                return (x, self._max_active)

    class Cleanup(Worker):
        def __init__(self, *, marker_dir, **kwargs):
            super().__init__(**kwargs)
            self.marker_dir = marker_dir
            self.calls = 0

        def call(self, x):
            self.calls += 1
            return x

        def cleanup(self, exc=None):
            path = os.path.join(self.marker_dir, f'cleanup-{self.worker_index}')
            with open(path, 'w') as f:
                f.write(f'{exc!r} calls={self.calls}')

    class Greeter(Worker):
        def __init__(self, *, greeting, factor=1, **kwargs):
            super().__init__(**kwargs)
            self.greeting = greeting
            self.factor = factor

        def call(self, x):
            return f'{self.greeting} {x * self.factor} from {self.worker_index}'

    class InitFail(Worker):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            raise ValueError('boom')

        def call(self, x):
            return x

    class ParentInfo(Worker):
        def call(self, x):
            return (os.getppid(), multiprocessing.parent_process() is None, os.getpid(), x)

    class Echo(Worker):
        def call(self, x):
            return x

    class Messenger(Worker):
        # Holds multiprocessing objects from its kwargs: ``call(x)`` puts
        # (worker_index, x) on ``queue``, adds x to ``total`` (a shared Value)
        # and returns whether ``event`` is set; 'exit' ends the process.
        def __init__(self, *, queue, event, total, **kwargs):
            super().__init__(**kwargs)
            self.queue, self.event, self.total = queue, event, total

        def call(self, x):
            if x == 'exit':
                os._exit(3)
            self.queue.put((self.worker_index, x))
            with self.total.get_lock():
                self.total.value += x
            return self.event.is_set()

    class Describe(Worker):
        # Returns (type name, len) so big payloads need not travel back.
        def call(self, x):
            return (type(x).__name__, len(x), bytes(x[:4]), bytes(x[-4:]))

    class WrongLength(Worker):
        # A batched call that drops one result.
        def __init__(self, **kwargs):
            super().__init__(batch_size=4, batch_wait_time=0.05, **kwargs)

        def call(self, xs):
            return xs[:-1]

    class Unpicklable(Worker):
        # Results that cannot be pickled for the odd inputs.
        def call(self, x):
            if x % 2:
                return threading.Lock()
            return x

    class ExitInInit(Worker):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            os._exit(3)

        def call(self, x):
            return x

    # ---- workers for composed servlets (Sequential / Ensemble / Switch) ----

    class AddOne(Worker):
        def call(self, x):
            return x + 1

    class Double(Worker):
        def call(self, x):
            return x * 2

    class Tag(Worker):
        # Returns (tag, x): shows which member / stage handled an item.
        def __init__(self, *, tag, **kwargs):
            super().__init__(**kwargs)
            self.tag = tag

        def call(self, x):
            return (self.tag, x)

    class Affix(Worker):
        # Appends ``suffix`` to a string: distinct, order-revealing stage marks.
        def __init__(self, *, suffix, **kwargs):
            super().__init__(**kwargs)
            self.suffix = suffix

        def call(self, x):
            return f'{x}{self.suffix}'

    class FailIf(Worker):
        # Raises ``exc_type(f'{tag} rejects {x!r}')`` when ``x == value``;
        # passes every other item through unchanged.  Before raising it waits
        # for the file ``wait_for`` to exist (if given), then ``delay`` seconds.
        def __init__(self, *, value, exc_type='ValueError', tag='failif', delay=0.0, wait_for=None, **kwargs):
            super().__init__(**kwargs)
            self.value = value
            self.exc_type = exc_type
            self.tag = tag
            self.delay = delay
            self.wait_for = wait_for

        def call(self, x):
            if x == self.value:
                if self.wait_for:
                    deadline = time.monotonic() + 60
                    while not os.path.exists(self.wait_for) and time.monotonic() < deadline:
                        time.sleep(0.005)
                if self.delay:
                    time.sleep(self.delay)
                if self.exc_type == 'CustomError':
                    raise CustomError(f'{self.tag} rejects {x!r}')
                raise getattr(builtins, self.exc_type)(f'{self.tag} rejects {x!r}')
            return x

    class SlowAdd(Worker):
        # Sleeps ``delay`` (or ``delays[x % len(delays)]``), then returns x + add.
        def __init__(self, *, add=0, delay=0.0, delays=None, **kwargs):
            super().__init__(**kwargs)
            self.add = add
            self.delay = delay
            self.delays = tuple(delays) if delays else None

        def call(self, x):
            d = self.delays[x % len(self.delays)] if self.delays else self.delay
            if d:
                time.sleep(d)
            return x + self.add

    class PidTrail(Worker):
        # Appends (pid, thread name) of the worker to the list it is given.
        def call(self, x):
            return list(x) + [(os.getpid(), threading.current_thread().name)]

    class WaitFile(Worker):
        # Blocks each item until the file ``path`` exists (bounded), then passes
        # it through; unlike Gate, the gate is per worker, so the item itself
        # can be a plain value (handy for ensemble members).
        def __init__(self, *, path, add=0, **kwargs):
            super().__init__(**kwargs)
            self.path = path
            self.add = add

        def call(self, x):
            deadline = time.monotonic() + 60
            while not os.path.exists(self.path):
                if time.monotonic() > deadline:
                    raise RuntimeError(f'gate {self.path} never opened')
                time.sleep(0.005)
            return x + self.add

    class Touch(Worker):
        # Creates the file ``path`` (so another worker's WaitFile opens), then
        # returns x + add.
        def __init__(self, *, path, add=0, **kwargs):
            super().__init__(**kwargs)
            self.path = path
            self.add = add

        def call(self, x):
            with open(self.path, 'w'):
                pass
            return x + self.add

    class BatchDouble(Worker):
        # Batched: doubles each item; refuses non-list input.
        def call(self, batch):
            if not isinstance(batch, list):
                raise TypeError(f'expected a list batch, got {type(batch).__name__}')
            return [v * 2 for v in batch]

    class Crash(Worker):
        # ``call(x)``: 'exit' -> os._exit(3), 'kill' -> SIGKILL itself,
        # 'segv' -> segmentation fault, ('sleep', s) -> sleeps s then returns;
        # 'pid' -> its pid; anything else -> x * 2.  With batching, the batch
        # dies if any item asks for it.
        def __init__(self, **kwargs):
            super().__init__(**kwargs)

        def call(self, x):
            if self.batch_size > 0:
                for v in x:
                    self._maybe_die(v)
                return [self._one(v) for v in x]
            self._maybe_die(x)
            return self._one(x)

        def _maybe_die(self, x):
            import signal

            if x == 'exit':
                os._exit(3)
            if x == 'kill':
                os.kill(os.getpid(), signal.SIGKILL)
            if x == 'segv':
                import ctypes

                ctypes.string_at(0)

        def _one(self, x):
            if isinstance(x, tuple) and x[0] == 'sleep':
                time.sleep(x[1])
                return x
            if x == 'pid':
                return os.getpid()
            return x * 2

    class CrashTrail(Worker):
        # ``call(x) -> x + 1`` (a batch: each item + 1).  Before it starts an
        # item (or a batch) it appends it as a JSON line to trail_dir/<pid>;
        # it dies by a segmentation fault when it starts ``poison``.
        def __init__(self, *, trail_dir, poison, **kwargs):
            super().__init__(**kwargs)
            self.trail = os.path.join(trail_dir, str(os.getpid()))
            self.poison = poison

        def call(self, x):
            import json

            items = x if self.batch_size > 0 else [x]
            with open(self.trail, 'a') as f:
                f.write(json.dumps(items) + '\n')
            if self.poison in items:
                import ctypes

                ctypes.string_at(0)
            ys = [v + 1 for v in items]
            return ys if self.batch_size > 0 else ys[0]

    class Lingering(Worker):
        # Starts a non-daemon thread that outlives the worker's work (it
        # sleeps ``linger`` seconds): the worker process cannot exit before.
        def __init__(self, *, linger=600, **kwargs):
            super().__init__(**kwargs)
            threading.Thread(target=time.sleep, args=(linger,), daemon=False).start()

        def call(self, x):
            return x

    class Quit(Worker):
        # A thread worker stopped by SystemExit on 'quit'.
        def call(self, x):
            if x == 'quit':
                raise SystemExit(1)
            return x * 2

    # ---- workers for large payloads (test_payloads.py) ----

    class Inspect(Worker):
        # Returns describe_payload(x): what arrived (types, sizes, writable
        # flags, checksums), without the payload travelling back.
        def call(self, x):
            return describe_payload(x)

    class InspectEcho(Worker):
        # Returns (describe_payload(x), x): what arrived, and the value itself.
        def call(self, x):
            return (describe_payload(x), x)

    class AddOneInPlace(Worker):
        # Adds 1 in place to a received numpy array (which must therefore be
        # writable) and returns that same array; anything else passes through.
        def call(self, x):
            if type(x).__name__ == 'ndarray':
                x += 1
            return x

    class Build(Worker):
        # ``call((kind, n, seed))``: returns build_payload(kind, n, seed), a
        # large value made in the worker process itself.
        def call(self, x):
            return build_payload(*x)

    class RaiseIfLarge(Worker):
        # Raises ValueError for a payload of ``limit`` bytes or more; echoes
        # anything smaller.
        def __init__(self, *, limit=1 << 20, **kwargs):
            super().__init__(**kwargs)
            self.limit = limit

        def call(self, x):
            if len(x) >= self.limit:
                raise ValueError(f'payload of {len(x)} bytes is too large', len(x))
            return x

    class LockOnMarker(Worker):
        # Returns an unpicklable lock for the input b'lock'; echoes the rest.
        def call(self, x):
            if type(x) is bytes and x == b'lock':
                return threading.Lock()
            return x

    class BatchEcho(Worker):
        # Batched: for each item, (batch length, describe_payload(item), item).
        def call(self, batch):
            if not isinstance(batch, list):
                raise TypeError(f'expected a list batch, got {type(batch).__name__}')
            return [(len(batch), describe_payload(v), v) for v in batch]

    return {
        name: obj
        for name, obj in locals().items()
        if isinstance(obj, type) and issubclass(obj, Worker) and obj is not Worker
    }


def _define_switches(SwitchServlet) -> dict[str, type]:
    """Define the test SwitchServlet subclasses on one backend's ``SwitchServlet``."""

    class ParitySwitch(SwitchServlet):
        # even ints -> member 0, odd ints -> member 1
        def switch(self, x):
            return x % 2

    class IndexSwitch(SwitchServlet):
        # The item *is* the member index (ints), or a (index, payload) tuple.
        def switch(self, x):
            return x[0] if isinstance(x, tuple) else x

    class RaisingSwitch(SwitchServlet):
        # ``switch`` itself fails on negative items.
        def switch(self, x):
            if x < 0:
                raise ValueError(f'cannot route {x}')
            return 0

    return {
        name: obj
        for name, obj in locals().items()
        if isinstance(obj, type) and issubclass(obj, SwitchServlet) and obj is not SwitchServlet
    }


class Backend:
    """Everything a test needs from one implementation of the mpserver API."""

    def __init__(self, name, server_mod, remote_mod):
        self.name = name
        self.module = server_mod
        self.Server = server_mod.Server
        self.ProcessServlet = server_mod.ProcessServlet
        self.ThreadServlet = server_mod.ThreadServlet
        self.Worker = server_mod.Worker
        self.make_worker = server_mod.make_worker
        self.PassThrough = server_mod.PassThrough
        self.ServerBacklogFull = server_mod.ServerBacklogFull
        self.TimeoutError = server_mod.TimeoutError
        self.EnsembleError = server_mod.EnsembleError
        # Composition API; ``None`` where a backend does not (yet) provide it,
        # so that the backend still imports and the other tests still run.
        self.SequentialServlet = getattr(server_mod, 'SequentialServlet', None)
        self.EnsembleServlet = getattr(server_mod, 'EnsembleServlet', None)
        self.SwitchServlet = getattr(server_mod, 'SwitchServlet', None)
        self.AsyncServer = getattr(server_mod, 'AsyncServer', None)
        self.RemoteException = remote_mod.RemoteException
        self.is_remote_exception = remote_mod.is_remote_exception
        self.get_remote_traceback = remote_mod.get_remote_traceback
        self.w = _register(name, self.Worker)
        self.sw = (
            _register(name, self.SwitchServlet, _define_switches)
            if self.SwitchServlet is not None
            else types.SimpleNamespace()
        )

    def __repr__(self):
        return f'<Backend {self.name}>'


def _register(backend_name: str, base: type, define=_define_workers) -> types.SimpleNamespace:
    classes = define(base)
    ns = {}
    for short, cls in classes.items():
        full = f'{short}__{backend_name}'
        cls.__name__ = full
        cls.__qualname__ = full
        cls.__module__ = __name__
        globals()[full] = cls
        ns[short] = cls
    return types.SimpleNamespace(**ns)


def _load_mpservice():
    import mpservice.mpserver as server_mod
    import mpservice.multiprocessing.remote_exception as remote_mod

    return Backend('mpservice', server_mod, remote_mod)


def _load_mpserver():
    import mpserver

    return Backend('mpserver', mpserver, mpserver)


BACKENDS: dict[str, Backend | None] = {}
IMPORT_ERRORS: dict[str, BaseException] = {}

for _name, _loader in (('mpservice', _load_mpservice), ('mpserver', _load_mpserver)):
    try:
        BACKENDS[_name] = _loader()
    except Exception as _e:  # noqa: BLE001 - ImportError, or a half-built package failing on import
        BACKENDS[_name] = None
        IMPORT_ERRORS[_name] = _e
del _name, _loader


def get_backend(name: str) -> Backend:
    """Return the backend, or raise RuntimeError explaining why it is unavailable."""
    b = BACKENDS.get(name)
    if b is None:
        raise RuntimeError(f'backend {name!r} could not be imported: {IMPORT_ERRORS.get(name)!r}')
    return b
