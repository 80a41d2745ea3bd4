"""Logging across processes, the main side: worker records reach the main
process's handlers, and the server's lifecycle events reach the ``mpserver``
logger.

One channel carries both: the server's control ring, where workers also
report ready or their ``__init__`` error.

* Workers forward their records as ``Control.LOG`` messages
  (``_worker.log_forward``), at the level :func:`worker_level` chose when
  they started.
* The C++ guardian pushes ``Control.EVENT`` messages (crashes, with the
  reason when mpserver killed the worker; restarts; a servlet out of
  workers), without ever waiting.
* In the main process one :class:`LogPump` thread per running server drains
  the ring and :func:`dispatch` hands each message on: a record to the
  logger of its name (if that logger is enabled for its level here), an
  event to the ``mpserver`` logger.  During start-up the Launch reads the
  ring itself and dispatches the same way.
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

from mpserver import _core
from mpserver._wire.codec import FLAG_CONTROL, decode
from mpserver._wire.remote import get_remote_traceback, is_remote_exception

__all__ = ['LogPump', 'dispatch', 'handle_failure', 'log_started', 'worker_level']

_log = logging.getLogger('mpserver')

_LOG = int(_core.Control.LOG)
_EVENT = int(_core.Control.EVENT)
_ACCESS = int(_core.Control.ACCESS)
_access_log = logging.getLogger('mpserver.access')
_READY = int(_core.Control.READY)
_INIT_FAILED = int(_core.Control.INIT_FAILED)


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
