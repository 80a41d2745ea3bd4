"""What a Server holds while it runs, opened and closed in one declared order.

A :class:`Running` record is made by ``Server.__enter__`` and closed by
``Server.__exit__``; nothing else opens or drops these resources.  They are
opened in this order and closed in the reverse one:

1. the output ring (results of the whole graph, read by the collector),
2. the control ring (workers' start-up reports and log records, the
   guardian's events),
3. the supervisor (spawns, watches and reaps worker processes),
4. the cancel board (requests whose callers gave up),
5. the meter board (the core's live counters),
6. the request book (``_core.RequestBook``: slots, the collector thread),
7. the servlet graph's rings and workers (all started at once, then waited
   for),
8. the announcement to ``python -m mpserver top``,
9. the guardian (heals the graph from now on),
10. the log pump (drains the control ring into ``logging``),
11. the collector (the request book starts delivering results), and with it
    the request path that ``call``, ``stream`` and the asyncio ports submit
    through.

While it runs, three sets of users come and go: the asyncio ports (made on
first use), the native HTTP fronts serving it, and the live views
(``watch``); closing stops the fronts and views first and the ports last.

The fork guard lives here too: a record belongs to the process that opened
it, and a forked child finds every record it inherited marked ``forked``
(``Server`` then refuses to use it, and closing it touches nothing of the
parent's).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import weakref
from time import perf_counter
from typing import TYPE_CHECKING, Any

from mpserver import _core
from mpserver._graph.launch import Launch
from mpserver._graph.servlet import Servlet
from mpserver._observe import announce
from mpserver._observe import stats as _stats
from mpserver._observe.layout import Layout
from mpserver._observe.logs import LogPump, log_started
from mpserver._serving.requests import RequestPath
from mpserver._wire.codec import Codec, ObjectCodec, PickleCodec

if TYPE_CHECKING:
    from mpserver._http_front.front import HttpService
    from mpserver._observe.watch import Watch
    from mpserver._serving.async_ports import Ports

__all__ = ['Running', 'METER_RECORDS', 'STOP_GRACE']

_log = logging.getLogger('mpserver')

#: Meter records of a server (cpp/meter.hpp): one for the request book, one
#: per worker and per ensemble.  A sparse memfd: unused records cost nothing.
METER_RECORDS = 4096

#: Seconds a busy worker gets to finish its item when the server is
#: interrupted (Ctrl-C) before it is killed.
STOP_GRACE = 2.0

#: Records open in this process; a forked child marks each as foreign.
_OPEN: weakref.WeakSet[Running] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A record belongs to the process that opened it.  A forked child has a
    copy of the parent's records but none of their threads, and their rings
    are the parent's shared memory: every use in the child is refused, and
    closing one there touches nothing of the parent's (the C++ objects are
    leaked in the child, see cpp/process_local.hpp)."""
    for run in list(_OPEN):
        run.forked = True
    _OPEN.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _error_message(text: str) -> tuple[int, Any]:
    """The encoded ``RuntimeError(text)`` the request book hands callers."""
    return PickleCodec.encode_error(RuntimeError(text), f'RuntimeError: {text}\n')


class Running:
    """The resources of one running server (see the module docstring for the
    order).  Made by :meth:`open`; every attribute is valid until
    :meth:`close`, which may be called once."""

    def __init__(self, servlet: Servlet, capacity: int) -> None:
        self.servlet = servlet
        self.capacity = capacity
        self.pid = os.getpid()
        self.forked = False
        self.output: Any = None
        self.control: Any = None
        self.supervisor: Any = None
        self.board: Any = None
        self.meter: Any = None
        self.book: Any = None
        self.entry: Any = None
        self.codec: Codec = PickleCodec
        self.chunk_readers = 0  # workers reading the entry ring, if it takes chunks (_wire.chunks)
        self.layout: Layout | None = None
        self.announced: str | None = None
        self.guardian: Any = None
        self.logs: LogPump | None = None
        self.path: RequestPath | None = None
        self.fronts: set[HttpService] = set()  # native HTTP fronts serving it, drained first at close
        self.watches: list[Watch] = []  # live views, stopped (after a last frame) at close
        self.http_stop: threading.Event | None = None  # set to end serve_http()
        self._ports: Ports | None = None
        self._ports_lock = threading.Lock()

    @classmethod
    def open(cls, servlet: Servlet, capacity: int) -> Running:
        """Starts the servlet graph and everything serving it; returns when
        every worker is ready.  If a worker cannot start, everything opened
        so far is dropped and the worker's error raised."""
        started_at = perf_counter()
        run = cls(servlet, capacity)
        run.output = _core.Ring.create(_core.OUTPUT_RING_BYTES, 'mpserver-out')
        run.control = _core.Ring.create(_core.CONTROL_RING_BYTES, 'mpserver-ctl')
        run.supervisor = _core.Supervisor()
        run.board = _core.CancelBoard.create(capacity)
        run.meter = _core.MeterBoard.create(METER_RECORDS)
        launch = Launch(run.supervisor, run.control, run.board, run.meter)
        launch.output = run.output
        book = _core.RequestBook(run.output, capacity, run.board, run.meter)
        try:
            run.entry, local = servlet._start(launch, run.output, True)
            run.chunk_readers = servlet._chunk_readers()
            launch.spawn_all()
            launch.wait_ready()
        except BaseException:
            servlet._kill()
            raise
        run.codec = ObjectCodec if local else PickleCodec
        run.layout = servlet._layout('0')
        run.announced = announce.announce(run.meter, run.layout, capacity)
        # From now on a worker that dies is noticed and replaced.
        run.guardian = _core.Guardian(run.supervisor)
        servlet._guard(run.guardian)
        # The guardian's events and the workers' log records (also those of
        # restarted workers) go to logging from now on.
        run.guardian.set_events(run.control)
        run.logs = LogPump(run.control, launch.names)
        run.logs.start()
        run.guardian.start()
        book.set_failure(*_error_message("the server's output ring was found corrupt; this request was lost"))
        book.start()
        run.book = book
        run.path = RequestPath(book, run.entry, run.codec, capacity)
        _OPEN.add(run)
        log_started(len(launch.names), launch.thread_count, servlet._label(), perf_counter() - started_at)
        return run

    def ports(self) -> Ports:
        """The asyncio side of this server (made on first use)."""
        # Imported on first use, not at the top: asyncio is a large import
        # (~15 ms and 40 modules) that a server used only from threads, and
        # the start it measures, should not pay.
        from mpserver._serving.async_ports import Ports

        with self._ports_lock:
            if self._ports is None:
                assert self.path is not None
                self._ports = Ports(self.path)
            return self._ports

    def stats(self) -> _stats.ServerStats:
        """A snapshot of the core's counters for this server's tree."""
        meter, layout = self.meter, self.layout  # once: another thread may be closing the record
        if meter is None or layout is None:
            raise RuntimeError('the Server has been stopped')
        return _stats.snapshot(meter, layout)

    def stats_dict(self) -> dict[str, Any]:
        """:meth:`stats` as plain dicts and lists (for ``debug_info``)."""
        return dataclasses.asdict(self.stats())

    def made_ports(self) -> Ports | None:
        """The asyncio side if it was made, else None (never makes it)."""
        return self._ports

    def close(self, interrupted: bool, stop_grace: float | None) -> int:
        """Stops serving, in the reverse order of :meth:`open`; returns how
        many items workers skipped for callers who had gone.

        Fronts and views first (nothing new comes in; a last frame); then the
        guardian stops healing and bounds the stop by ``stop_grace``; then
        the workers finish what they hold and exit (``interrupted``, e.g.
        Ctrl-C: queued items are dropped and busy workers get
        :data:`STOP_GRACE` seconds); then the collector drains the last
        results and every request still waiting fails."""
        for front in list(self.fronts):
            front.stop(0.0)  # nothing new comes in; requests still waiting get 503
        for view in self.watches:
            view.stop()  # a last frame with the final numbers, before anything stops
        _OPEN.discard(self)
        if self.guardian is not None:
            # Deaths from now on are failed, not repaired; workers stuck for
            # longer than the grace are killed.
            self.guardian.stop(stop_grace)
        try:
            if interrupted:
                self.servlet._kill(STOP_GRACE)
            else:
                try:
                    self.servlet._stop()
                except BaseException:
                    self.servlet._kill(STOP_GRACE)
                    raise
        finally:
            book = self.book
            book.stop()
            book.close()
            book.fail_pending(*_error_message('the server stopped before this request finished'))
            del book
            with self._ports_lock:
                ports, self._ports = self._ports, None
            if ports is not None:
                ports.close()
            # Drop the rings, the book and the supervisor thread now (a
            # stream window still open keeps the book alive on its own).
            self.book = self.entry = self.output = self.control = self.path = None
            self.guardian = None  # before the supervisor it watches
            self.supervisor = None
            logs, self.logs = self.logs, None
            if logs is not None and not logs.close():  # every worker is gone: what is left, then None
                _log.warning('the log records left on the control ring were not all handled within 10 s')
            dropped = int(self.board.dropped)
            self.board = None
            self.meter = self.layout = None
            announce.withdraw(self.announced)
            self.announced = None
        return dropped
