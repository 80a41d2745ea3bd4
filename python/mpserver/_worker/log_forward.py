"""Worker log records go to the main process's handlers (the worker side).

In a worker process, :func:`forward_records` puts a :class:`RingHandler` on
the root logger (as mpservice's worker processes do: only if the user's main
module, imported as ``__mp_main__``, did not configure logging itself).  Each
record travels as its attribute dict, message merged and exception
formatted, as a ``Control.LOG`` message on the server's control ring
(``ChildFd.CONTROL``).  The handler never blocks for ever: a record that
finds the ring full for :data:`PUSH_TIMEOUT` seconds is dropped (and the drop
reported later).  The main side is ``_observe.logs``.

``print`` output of workers does not come here: worker processes write to
the stdout and stderr they inherited.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

from mpserver import _core
from mpserver._wire.codec import FLAG_CONTROL

__all__ = ['PUSH_TIMEOUT', 'RingHandler', 'forward_records']

_LOG = int(_core.Control.LOG)
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
