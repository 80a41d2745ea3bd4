"""The :class:`Servlet` base every servlet derives from, simple or compound
(``compound``), and what the two simple servlets (``process_servlet``,
``thread_servlet``) share: how many workers run a Worker class.

A servlet is a specification until a Server starts it.  Starting creates the
servlet's input ring in shared memory and registers its workers with the
start's ``Launch``; workers take items from that ring (whichever is free
takes the next) and write results to the ring they were given as output.
Once every worker is ready the Server hands the servlet to its guardian
(``_guard``), which heals it when a worker dies (cpp/guardian.hpp).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

from mpserver import _core
from mpserver._graph.checks import check_restarts, check_worker_cls
from mpserver._graph.launch import Launch
from mpserver._observe.layout import Layout, WorkerLayout
from mpserver._worker.api import Worker

__all__ = ['Servlet']

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
        items (``_wire.chunks``), else 0."""
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

    #: What runs its workers, as the stats call it: 'process' or 'thread'.
    _KIND = ''

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
        workers = [WorkerLayout(n, self._KIND, r) for n, r in zip(self._worker_names(), self._records, strict=True)]
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
