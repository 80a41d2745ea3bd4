"""ThreadServlet: a Worker class run by threads of the main process."""

from __future__ import annotations

import logging
import threading
from typing import Any

from mpserver import _core
from mpserver._graph.checks import check_count
from mpserver._graph.launch import Launch, ThreadStart
from mpserver._graph.servlet import _Simple
from mpserver._wire.codec import Codec, ObjectCodec, PickleCodec, pass_error
from mpserver._worker import loops
from mpserver._worker.api import Worker

__all__ = ['ThreadServlet']

_log = logging.getLogger('mpserver')


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

    _KIND = 'thread'

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
        self._final = False

    def _start(self, launch: Launch, output: Any, output_local: bool) -> tuple[Any, bool]:
        if self._started:
            raise RuntimeError('this servlet is already running in a server')
        self._input = _core.Ring.create(_core.INPUT_RING_BYTES, 'mpserver-thread-in')
        self._claims = _core.ClaimTable.create(self._num_threads, _core.CLAIM_SLOTS)
        self._board = launch.board if launch.carries_tokens else None
        self._take_records(launch, self._num_threads)
        self._output = output
        self._codec = ObjectCodec if output_local else PickleCodec
        self._final = output is launch.output
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
        final = self._final
        meter = self._meter
        _core.bind_claims(claims, index)
        _core.bind_board(board)
        _core.bind_meter(meter, self._records[index] if meter is not None else 0)
        try:
            while True:
                try:
                    loops.run(worker, inp, output, codec, final)
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
