"""The asyncio side of a running Server: one port per event loop.

An async request takes a slot in the request book and is pushed into the
servlet graph like a sync one, but nobody blocks on it: its slot is flagged
so that the C++ collector, when the result lands, publishes the request's
token on the request book's completion queue and writes the queue's eventfd (once
per drained batch).  That eventfd is registered as a reader on the event
loop; its callback drains every finished token at once and resolves the
futures.  So a burst of results costs one loop wake-up, with no helper
thread and no ``call_soon_threadsafe`` per item.

Cancellation and timeouts: the awaiting caller gets its exception at once;
the request is abandoned and keeps its place in ``backlog`` until its result
leaves the pipeline (then it is dropped), as mpservice does.

This module knows a running server only through its :class:`RequestPath`;
the Server owns one :class:`Ports` and closes it when it stops.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from time import perf_counter
from typing import Any, TypeVar

from mpserver._serving.requests import BACKLOG_FULL, OK, RequestPath, failure, result
from mpserver._wire.errors import ServerBacklogFull, TimeoutError

__all__ = ['Ports', 'Expired']

_T = TypeVar('_T')

# How long a caller waiting for capacity sleeps before retrying on its own:
# slots freed by async requests wake it at once; this bounds the wait when a
# sync caller of the same server frees the slot.
_SPACE_RECHECK = 0.05


class Expired(Exception):
    """Set on a request's future when its timeout passes."""


def _resolve(fut: asyncio.Future[_T], value: _T) -> None:
    if not fut.done():
        fut.set_result(value)


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(Expired())


class Port:
    """Connects one running Server's request book to one event loop."""

    def __init__(self, ports: Ports, loop: asyncio.AbstractEventLoop) -> None:
        self.path = ports.path
        self.loop = loop
        self.book = ports.path.book
        self.entry = ports.path.entry
        self.codec = ports.path.codec
        # Shared by every loop's port: whichever loop drains the completion
        # queue resolves futures of other loops through their own loop.
        # A request is registered there in the same critical section that
        # pushes it, so a loop on another thread cannot drain its result
        # before its future exists.
        self.pending = ports.pending
        self.lock = ports.lock
        self.space_waiters: collections.deque[asyncio.Future[None]] = collections.deque()  # FIFO
        self.fd = self.book.async_fd
        loop.add_reader(self.fd, self._on_completions)
        self.closed = False

    def _on_completions(self) -> None:
        book = self.book
        tokens = book.drain_async()
        pending = self.pending
        with self.lock:
            owned = [(token, pending.pop(token, None)) for token in tokens]
        for token, fut in owned:
            if fut is None:
                continue  # its caller gave up; the collector already dropped the result
            done = book.take_token(token)
            owner = fut.get_loop()
            if owner is self.loop:
                _resolve(fut, done)
            elif not owner.is_closed():
                owner.call_soon_threadsafe(_resolve, fut, done)
        # Each token freed one slot: let that many callers waiting for room retry.
        self._wake_space_waiters(len(tokens))

    def _wake_space_waiters(self, n: int) -> None:
        waiters = self.space_waiters
        while n > 0 and waiters:
            w = waiters.popleft()
            if not w.done():
                w.set_result(None)
                n -= 1

    async def submit(
        self, payload: Any, flags: int, backpressure: bool, t0: float, deadline: float
    ) -> tuple[int, asyncio.Future[tuple[int, Any]]]:
        """Pushes one request; returns ``(token, future)``, or raises
        ServerBacklogFull etc."""
        capacity = self.path.capacity
        while True:
            if self.closed:
                raise RuntimeError('the Server has been stopped')
            with self.lock:
                status, token = self.book.submit_async(self.entry, payload, flags)
                if status == OK:
                    fut = self.pending[token] = self.loop.create_future()
                    return token, fut
            if status != BACKLOG_FULL:
                raise failure(status, capacity, t0)
            if backpressure:
                raise ServerBacklogFull(capacity)
            left = deadline - perf_counter()
            if left <= 0:
                raise ServerBacklogFull(capacity, perf_counter() - t0)
            w = self.loop.create_future()
            self.space_waiters.append(w)
            recheck = self.loop.call_later(min(left, _SPACE_RECHECK), _resolve, w, None)
            try:
                await w
            finally:
                recheck.cancel()

    async def result(self, token: int, fut: asyncio.Future[tuple[int, Any]], deadline: float) -> tuple[int, Any]:
        """Waits for a request's (flags, payload).  Raises Expired after the
        deadline; on cancellation or timeout the request is abandoned."""
        handle = self.loop.call_at(self.loop.time() + max(0.0, deadline - perf_counter()), _expire, fut)
        try:
            return await fut
        except Expired:
            self.abandon(token, timed_out=True)
            raise
        except BaseException:
            self.abandon(token)
            raise
        finally:
            handle.cancel()

    def abandon(self, token: int, timed_out: bool = False) -> None:
        with self.lock:
            mine = self.pending.pop(token, None) is not None
        if mine and not self.closed:
            self.book.abandon_token(token, timed_out)

    def close(self) -> None:
        """After the server stopped: resolve what is left, unregister the eventfd."""
        if self.closed:
            return
        if not self.loop.is_closed():
            self._on_completions()
            self.loop.remove_reader(self.fd)
        self.closed = True
        err = RuntimeError('the server stopped before this request finished')
        with self.lock:
            mine = [(t, f) for t, f in self.pending.items() if f.get_loop() is self.loop]
            for token, _ in mine:
                del self.pending[token]
        for _, fut in mine:
            if not fut.done():
                fut.set_exception(err)
        self._wake_space_waiters(len(self.space_waiters))


class Ports:
    """The ports of one running Server, by event loop."""

    def __init__(self, path: RequestPath) -> None:
        self.path = path
        self.pending: dict[int, asyncio.Future[tuple[int, Any]]] = {}  # token -> future (flags, payload), across loops
        self.lock = threading.Lock()
        self._ports: dict[asyncio.AbstractEventLoop, Port] = {}

    def port(self) -> Port:
        """The running loop's port (created on first use)."""
        loop = asyncio.get_running_loop()
        port = self._ports.get(loop)
        if port is None:
            for old in [lp for lp in self._ports if lp.is_closed()]:  # loops gone (e.g. after asyncio.run)
                del self._ports[old]
            port = self._ports[loop] = Port(self, loop)
        return port

    def get(self, loop: asyncio.AbstractEventLoop) -> Port | None:
        return self._ports.get(loop)

    def close(self) -> None:
        """Called when the server stopped: no result can arrive any more."""
        ports, self._ports = self._ports, {}
        for loop, port in ports.items():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                port.close()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(port.close)

    async def call(self, x: Any, timeout: float, backpressure: bool) -> Any:
        """``Server.async_call`` and ``AsyncServer.call``."""
        port = self.port()
        t0 = perf_counter()
        deadline = t0 + timeout
        flags, payload = port.codec.encode(x)
        token, fut = await port.submit(payload, flags, backpressure, t0, deadline)
        t_enqueued = perf_counter()
        try:
            rflags, out = await port.result(token, fut, deadline)
        except Expired:
            now = perf_counter()
            raise TimeoutError(f'{t_enqueued - t0:.3f} seconds enqueue, {now - t0:.3f} seconds total') from None
        return result(rflags, out)
