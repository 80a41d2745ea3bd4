"""The main process's side of a request, shared by Server and AsyncServer.

A running Server exposes its request path — the request book (C++), the
entry ring, the codec its entry takes and the capacity — as a
:class:`RequestPath`; the sync and the asyncio fronts submit through it.
What a request came to is a ``_core.Status`` (cpp/wire.hpp); this module is
the one place where a status becomes the exception the caller sees.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from mpserver import _core
from mpserver._wire.codec import FLAG_ERROR, Codec, decode
from mpserver._wire.errors import ServerBacklogFull, TimeoutError

__all__ = ['RequestPath', 'failure', 'result']

OK = int(_core.Status.OK)
BACKLOG_FULL = int(_core.Status.BACKLOG_FULL)
BACKLOG_TIMEOUT = int(_core.Status.BACKLOG_TIMEOUT)
RESULT_TIMEOUT = int(_core.Status.RESULT_TIMEOUT)
CLOSED = int(_core.Status.CLOSED)
PUSH_TIMEOUT = int(_core.Status.PUSH_TIMEOUT)


class RequestPath:
    """How requests enter one running Server: its request book (``_core.RequestBook``),
    the entry servlet's input ring, the codec that ring takes (references if
    its consumers are in this process) and the server's capacity."""

    __slots__ = ('book', 'entry', 'codec', 'capacity')

    def __init__(self, book: Any, entry: Any, codec: Codec, capacity: int) -> None:
        self.book = book
        self.entry = entry
        self.codec = codec
        self.capacity = capacity


def failure(status: int, capacity: int, t0: float, enqueue_seconds: float | None = None) -> BaseException:
    """The exception for a request that came to ``status`` (not OK), ``t0``
    being when it started (``perf_counter``)."""
    now = perf_counter()
    if status == BACKLOG_FULL:
        return ServerBacklogFull(capacity)
    if status == BACKLOG_TIMEOUT:
        return ServerBacklogFull(capacity, now - t0)
    if status == RESULT_TIMEOUT or status == PUSH_TIMEOUT:
        enq = now - t0 if enqueue_seconds is None else enqueue_seconds
        return TimeoutError(f'{enq:.3f} seconds enqueue, {now - t0:.3f} seconds total')
    if status == CLOSED:
        return RuntimeError('the Server has been stopped')
    return RuntimeError(f'unexpected request status {status}')


def result(flags: int, payload: Any) -> Any:
    """The value of a result message, or raises the exception it carries."""
    y = decode(flags, payload)
    if flags & FLAG_ERROR:
        try:
            raise y
        finally:
            del y  # this frame is in the traceback: keep it from holding the exception (a cycle)
    return y
