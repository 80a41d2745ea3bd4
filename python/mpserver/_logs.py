"""Logging across processes: worker records reach the main process's
handlers, and the server's lifecycle events reach the ``mpserver`` logger.

One channel carries both: the server's control ring (``ChildFd.CONTROL`` in
a worker process), where workers also report ready or their ``__init__``
error.

* In a worker process, :func:`forward_records` puts a :class:`RingHandler`
  on the root logger (as mpservice's worker processes do: only if the user's
  main module, imported as ``__mp_main__``, did not configure logging
  itself).  Each record travels as its attribute dict, message merged and
  exception formatted, as a ``Control.LOG`` message.  The handler never
  blocks for ever: a record that finds the ring full for
  :data:`PUSH_TIMEOUT` seconds is dropped (and the drop reported later).
* The C++ guardian pushes ``Control.EVENT`` messages (crashes, with the
  reason when mpserver killed the worker; restarts; a servlet out of
  workers), without ever waiting.
* In the main process one :class:`LogPump` thread per running server drains
  the ring and :func:`dispatch` hands each message on: a record to the
  logger of its name (if that logger is enabled for its level here), an
  event to the ``mpserver`` logger.  During start-up the Launch reads the
  ring itself and dispatches the same way.

``print`` output of workers does not come here: worker processes write to
the stdout and stderr they inherited.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from . import _core
from ._remote import get_remote_traceback, is_remote_exception
from ._wire import FLAG_CONTROL, decode

__all__ = ['LogPump', 'PUSH_TIMEOUT', 'RingHandler', 'dispatch', 'forward_records', 'log_started', 'worker_level']

_log = logging.getLogger('mpserver')

_LOG = int(_core.Control.LOG)
_EVENT = int(_core.Control.EVENT)
_ACCESS = int(_core.Control.ACCESS)
_access_log = logging.getLogger('mpserver.access')
_READY = int(_core.Control.READY)
_INIT_FAILED = int(_core.Control.INIT_FAILED)
_OK = int(_core.Status.OK)

#: Seconds a worker's log record waits for room on the control ring before
#: it is dropped (the main process reads the ring all the time; a full ring
#: means its handlers are far behind).
PUSH_TIMEOUT = 1.0

#: The id of a record's message: one no item has (request tokens and
#: ensemble tickets never have every bit set), although a control message
#: answers no item anyway (bindings/ring.cpp skips its claim).
_NO_ITEM = (1 << 64) - 1

#: Attributes of a record whose text may be cut to fit one frame of the ring.
_TEXT_FIELDS = ('msg', 'exc_text', 'stack_info')

#: What every LogRecord has (the rest came from ``extra=``).
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {'message', 'asctime', 'taskName'}

_formatter = logging.Formatter()


# ---------------------------------------------------------------- worker side


class RingHandler(logging.Handler):
    """Pushes every record it handles onto the control ring, for the main
    process to handle (``Control.LOG``; payload: the pickled attribute dict).

    A record is self-contained when it leaves: its message merged with its
    arguments, its exception and stack formatted as text, any attribute that
    cannot be pickled replaced by its ``repr``, and texts cut so that it fits
    in one frame of the ring (so a push waits only for room, never for the
    reader to take part of a message).  It waits at most ``timeout`` seconds
    for room; after a drop, records are pushed only when there is room at
    once, until one gets through, followed by a warning saying how many were
    dropped.  A record logged while a record is being pushed (by the same
    thread) is dropped rather than recursing.
    """

    def __init__(self, ring: Any, timeout: float = PUSH_TIMEOUT) -> None:
        super().__init__()
        self._ring = ring
        self._timeout = timeout
        self._limit = int(ring.max_chunk)
        self._emitting = False  # under the handler's lock: only its holder reads it
        self._dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self._emitting:
            return
        self._emitting = True
        try:
            if self._push(pack(record, self._limit)) and self._dropped:
                self._report_drops()
        except Exception:  # noqa: BLE001 - logging's own path for a handler's failure
            self.handleError(record)
        finally:
            self._emitting = False

    def close(self) -> None:
        """At exit (``logging.shutdown``): says how many records were dropped
        since the last one that got through, if any."""
        self.acquire()
        try:
            if self._dropped and not self._emitting:
                self._emitting = True
                try:
                    self._report_drops()
                except Exception:  # noqa: BLE001 - at exit there is nobody left to tell
                    pass
                finally:
                    self._emitting = False
        finally:
            self.release()
        super().close()

    def _report_drops(self) -> None:
        n, self._dropped = self._dropped, 0
        note = logging.LogRecord(
            'mpserver',
            logging.WARNING,
            __file__,
            0,
            '%d log record(s) of this worker process were dropped: the control ring stayed full',
            (n,),
            None,
        )
        self._push(pack(note, self._limit))

    def _push(self, payload: bytes) -> bool:
        timeout = self._timeout if not self._dropped else 0.0
        if self._ring.push(_NO_ITEM, FLAG_CONTROL, payload, _LOG, timeout=timeout) == _OK:
            return True
        self._dropped += 1  # full (or closed: the server is stopping)
        return False


def pack(record: logging.LogRecord, limit: int) -> bytes:
    """``record`` as the payload of a ``Control.LOG`` message of at most
    ``limit`` bytes (the record itself is left as it is)."""
    d = dict(record.__dict__)
    d['msg'] = record.getMessage()
    d['args'] = None
    if record.exc_info and not d.get('exc_text'):
        d['exc_text'] = _formatter.formatException(record.exc_info)
    d['exc_info'] = None
    d.pop('message', None)  # set by a formatter; the main process's formats it again
    try:
        data = pickle.dumps(d, pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - some attribute (from extra=) cannot be pickled
        d = {k: _picklable(v) for k, v in d.items()}
        data = pickle.dumps(d, pickle.HIGHEST_PROTOCOL)
    if len(data) <= limit:
        return data
    return _shrink(d, len(data), limit)


def _picklable(value: Any) -> Any:
    try:
        pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001
        return repr(value)
    return value


def _shrink(d: dict[str, Any], size: int, limit: int) -> bytes:
    """Cuts the longest texts of ``d`` (a record too large by ``size -
    limit`` bytes) until it fits; drops its ``extra=`` attributes if that is
    not enough, and keeps only its level and origin if even that is not."""
    for name in sorted(_TEXT_FIELDS, key=lambda k: -len(d.get(k) or '')):
        text = d.get(name)
        if not isinstance(text, str) or not text:
            continue
        raw = text.encode('utf-8', 'surrogatepass')
        # Keep what fits (in UTF-8, as pickle stores it), with room for the note.
        head = raw[: max(0, len(raw) - (size - limit) - 96)].decode('utf-8', 'ignore')
        d[name] = f'{head} ... [{len(text) - len(head)} characters cut to fit the control ring]'
        data = pickle.dumps(d, pickle.HIGHEST_PROTOCOL)
        if len(data) <= limit:
            return data
        size = len(data)
    d = {k: v for k, v in d.items() if k in _STANDARD}
    data = pickle.dumps(d, pickle.HIGHEST_PROTOCOL)
    if len(data) <= limit:
        return data
    keep = ('levelno', 'levelname', 'process', 'created', 'msecs', 'relativeCreated', 'thread')
    short = {k: d[k] for k in keep if k in d}
    short.update(name=str(d.get('name', 'root'))[:200], processName=str(d.get('processName', ''))[:200])
    short['msg'] = 'a log record too large for the control ring was cut to this line'
    return pickle.dumps(short, pickle.HIGHEST_PROTOCOL)


def forward_records(ring: Any, level: int) -> RingHandler | None:
    """In a worker process, after the user's main module was imported: sends
    every log record of this process to the main process, and returns the
    handler doing it.

    As in mpservice, only when the root logger has no handler yet: a main
    module that configures logging at import time (outside ``if __name__ ==
    '__main__':``) configures its worker processes too, and their records
    are then handled there (returns None).  ``level`` (see
    :func:`worker_level`) becomes the root logger's level, so records no
    logger of the main process would take are not even sent; warnings
    (``warnings.warn``) become records, as ``logging.captureWarnings`` makes
    them.
    """
    root = logging.getLogger()
    if root.hasHandlers():
        return None
    handler = RingHandler(ring)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return handler


def worker_level() -> int:
    """The root level for worker processes started now: the lowest level a
    logger of this process passes (the root's effective level, or a lower
    level set on some named logger), so that every record that could be
    handled here is sent and no more.  Later changes of levels here are not
    seen by running workers; records are still filtered here by the levels
    of the moment."""
    level = logging.getLogger().getEffectiveLevel()
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            level = min(level, logger.level)
    return level


# ----------------------------------------------------------------- main side


def dispatch(mid: int, flags: int, aux: int, payload: Any, names: Mapping[int, str], started: bool = True) -> bool:
    """Handles one control message in the main process; returns False if it
    is not for this module (a start-up report while ``started`` is False,
    which the Launch reads itself).

    ``Control.LOG``: the worker's record goes to the logger of its name,
    if that logger is enabled for its level here.  ``Control.EVENT``: the
    guardian's event goes to the ``mpserver`` logger at its level.  Once the
    server runs (``started``), a restarted worker's ``READY`` and
    ``INIT_FAILED`` reports are logged too; ``names`` gives the worker
    process's name by the key its reports carry.
    """
    if aux == _LOG:
        record = logging.makeLogRecord(pickle.loads(payload))
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
        return True
    if aux == _EVENT:
        level, _, text = bytes(payload).decode('utf-8', 'replace').partition('\x1f')
        levelno = logging.getLevelName(level)
        _log.log(levelno if isinstance(levelno, int) else logging.WARNING, '%s', text)
        return True
    if aux == _ACCESS:  # "METHOD TARGET STATUS SECONDS" from the native HTTP front
        _access_log.info('%s', bytes(payload).decode('utf-8', 'replace'))
        return True
    if not started:
        return False
    name = names.get(mid, f'with key {mid}')
    if aux == _READY:
        _log.info('worker process %s is ready', name)
    elif aux == _INIT_FAILED:
        exc = decode(flags & ~FLAG_CONTROL, payload)
        if is_remote_exception(exc):  # its traceback is text from the worker: show that alone
            tb = get_remote_traceback(exc).rstrip('\n')
            _log.error('worker process %s could not start again: its __init__ raised %r\n%s', name, exc, tb)
        else:
            _log.error('worker process %s could not start again: its __init__ raised %r', name, exc, exc_info=exc)
    else:
        _log.warning('unknown control message (aux=%d) from worker process %s', aux, name)
    return True


def handle_failure(aux: int) -> None:
    """A control message could not be handled (a handler raised, a record
    did not unpickle): reported the way logging reports a handler's failure
    (``Handler.handleError``: a traceback on stderr, unless
    ``logging.raiseExceptions`` is off).  Called in an ``except`` block."""
    record = logging.LogRecord('mpserver', logging.ERROR, __file__, 0, 'control message (aux=%d)', (aux,), None)
    _failure_handler.handleError(record)


#: Only its handleError is used.
_failure_handler = logging.Handler()


class LogPump:
    """The main side of the control ring while a server runs: one daemon
    thread that gathers messages (the GIL released while it waits) and
    dispatches them, until the ring is closed and drained.

    ``names`` maps the key a worker's reports carry to its process name.
    Start it once every worker reported ready; :meth:`close` it after every
    worker process is gone and the guardian has stopped.  A pump still
    running when the interpreter exits (a server never stopped) is closed by
    an ``atexit`` hook: a daemon thread that woke up in the core during
    finalization would abort the process when it takes the GIL back.
    """

    def __init__(self, ring: Any, names: Mapping[int, str]) -> None:
        self._ring = ring
        self._names = names
        self._thread = threading.Thread(target=self._run, name='mpserver-logs', daemon=True)
        self._pid = 0  # the process that started it (a forked child must not close the shared ring)

    def start(self) -> None:
        self._pid = os.getpid()
        _running.add(self)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> bool:
        """Closes the ring, then waits (at most ``timeout`` seconds) until
        what is left in it is handled; returns whether the thread ended."""
        _running.discard(self)
        self._ring.close()
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        ring, names = self._ring, self._names
        while True:
            batch = ring.gather(256, 0.0, None)
            if batch is None:
                return
            for mid, flags, aux, payload in batch:
                try:
                    dispatch(mid, flags, aux, payload, names)
                except Exception:  # noqa: BLE001 - the pump outlives a failing handler
                    handle_failure(aux)


#: Pumps started and not yet closed.
_running: weakref.WeakSet[LogPump] = weakref.WeakSet()


@atexit.register
def _close_running() -> None:
    for pump in list(_running):
        if pump._pid == os.getpid():  # not in a forked child: the ring is its parent's
            pump.close(1.0)


def log_started(processes: int, threads: int, label: str, seconds: float) -> None:
    """Logs (INFO) that a server's workers are all ready."""
    _log.info(
        'started %d worker process%s and %d worker thread%s for %s in %.2f s',
        processes,
        '' if processes == 1 else 'es',
        threads,
        '' if threads == 1 else 's',
        label,
        seconds,
    )
