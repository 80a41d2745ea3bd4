"""asyncio front end: AsyncServer, and Server.async_call.

An async request takes a ledger slot and is pushed into the servlet graph
like a sync one, but nobody blocks on it: its slot is flagged so that the
C++ collector, when the result lands, publishes the request's token on the
engine's completion queue and writes the queue's eventfd (once per drained
batch).  That eventfd is registered as a reader on the event loop; its
callback drains every finished token at once and resolves the futures.  So
a burst of results costs one loop wake-up, with no helper thread and no
``call_soon_threadsafe`` per item.

Cancellation and timeouts: the awaiting caller gets its exception at once;
the request is abandoned in the ledger and keeps its place in ``backlog``
until its result leaves the pipeline (then it is dropped), as mpservice does.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterable, Callable, Iterable
from time import perf_counter

from . import _core
from ._codec import FLAG_ERROR, decode
from ._errors import ServerBacklogFull, TimeoutError, check_timeout
from ._servlet import Servlet

__all__ = ['AsyncServer']

_OK = _core.OK
_BACKLOG_FULL = _core.BACKLOG_FULL

# How long a caller waiting for capacity sleeps before retrying on its own:
# slots freed by async requests wake it at once; this bounds the wait when a
# sync caller of the same server frees the slot.
_SPACE_RECHECK = 0.05


class _Expired(Exception):
    """Set on a request's future when its timeout passes."""


def _resolve(fut: asyncio.Future, result) -> None:
    if not fut.done():
        fut.set_result(result)


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(_Expired())


class _AsyncPort:
    """Connects one running Server's engine to one event loop."""

    def __init__(self, server, loop: asyncio.AbstractEventLoop):
        self.server = server
        self.loop = loop
        self.engine = server._engine
        self.entry = server._entry
        self.codec = server._codec
        # Shared by every loop's port: whichever loop drains the completion
        # queue resolves futures of other loops through their own loop.
        # A request is registered there in the same critical section that
        # pushes it, so a loop on another thread cannot drain its result
        # before its future exists.
        self.pending: dict[int, asyncio.Future] = server._async_pending
        self.lock: threading.Lock = server._async_lock
        self.space_waiters: collections.deque = collections.deque()  # FIFO of futures
        self.fd = self.engine.async_fd
        loop.add_reader(self.fd, self._on_completions)
        self.closed = False

    def _on_completions(self) -> None:
        engine = self.engine
        tokens = engine.drain_async()
        pending = self.pending
        with self.lock:
            owned = [(token, pending.pop(token, None)) for token in tokens]
        for token, fut in owned:
            if fut is None:
                continue  # its caller gave up; the collector already dropped the result
            result = engine.take_token(token)
            owner = fut.get_loop()
            if owner is self.loop:
                _resolve(fut, result)
            elif not owner.is_closed():
                owner.call_soon_threadsafe(_resolve, fut, result)
        # Each token freed one slot: let that many callers waiting for room retry.
        self._wake_space_waiters(len(tokens))

    def _wake_space_waiters(self, n: int) -> None:
        waiters = self.space_waiters
        while n > 0 and waiters:
            w = waiters.popleft()
            if not w.done():
                w.set_result(None)
                n -= 1

    async def submit(self, payload, flags: int, backpressure: bool, t0: float, deadline: float):
        """Pushes one request; returns ``(token, future)``, or raises
        ServerBacklogFull etc."""
        while True:
            if self.closed:
                raise RuntimeError('the Server has been stopped')
            with self.lock:
                status, token = self.engine.submit_async(self.entry, payload, flags)
                if status == _OK:
                    fut = self.pending[token] = self.loop.create_future()
                    return token, fut
            if status != _BACKLOG_FULL:
                raise self.server._failure(status, t0)
            if backpressure:
                raise ServerBacklogFull(self.server.capacity)
            left = deadline - perf_counter()
            if left <= 0:
                raise ServerBacklogFull(self.server.capacity, perf_counter() - t0)
            w = self.loop.create_future()
            self.space_waiters.append(w)
            recheck = self.loop.call_later(min(left, _SPACE_RECHECK), _resolve, w, None)
            try:
                await w
            finally:
                recheck.cancel()

    async def result(self, token: int, fut: asyncio.Future, deadline: float):
        """Waits for a request's (flags, payload).  Raises _Expired after the
        deadline; on cancellation or timeout the request is abandoned."""
        handle = self.loop.call_at(self.loop.time() + max(0.0, deadline - perf_counter()), _expire, fut)
        try:
            return await fut
        except BaseException:
            self.abandon(token)
            raise
        finally:
            handle.cancel()

    def abandon(self, token: int) -> None:
        with self.lock:
            mine = self.pending.pop(token, None) is not None
        if mine and not self.closed:
            self.engine.abandon_token(token)

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


def port_for(server) -> _AsyncPort:
    """The running loop's port into ``server`` (created on first use)."""
    loop = asyncio.get_running_loop()
    server._require_running()
    ports = server._async_ports
    port = ports.get(loop)
    if port is None:
        for old in [lp for lp in ports if lp.is_closed()]:  # loops gone (e.g. after asyncio.run)
            del ports[old]
        port = ports[loop] = _AsyncPort(server, loop)
    return port


def close_ports(server) -> None:
    """Called by Server.__exit__ once no result can arrive any more."""
    ports, server._async_ports = server._async_ports, {}
    for loop, port in ports.items():
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            port.close()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(port.close)


def _timeout_message(t0: float, t_enqueued: float) -> str:
    now = perf_counter()
    return f'{t_enqueued - t0:.3f} seconds enqueue, {now - t0:.3f} seconds total'


async def async_call(server, x, timeout, backpressure):
    """``Server.async_call`` and ``AsyncServer.call``."""
    check_timeout(timeout)
    port = port_for(server)
    t0 = perf_counter()
    deadline = t0 + timeout
    flags, payload = port.codec.encode(x)
    token, fut = await port.submit(payload, flags, backpressure, t0, deadline)
    t_enqueued = perf_counter()
    try:
        rflags, result = await port.result(token, fut, deadline)
    except _Expired:
        raise TimeoutError(_timeout_message(t0, t_enqueued)) from None
    y = decode(rflags, result)
    if rflags & FLAG_ERROR:
        raise y
    return y


async def _aiter(data):
    if isinstance(data, AsyncIterable):
        async for x in data:
            yield x
    else:
        for x in data:
            yield x


class AsyncServer:
    """The asyncio face of a servlet graph: ``await call(x)``, ``async for y in stream(xs)``.

    Use it as ``async with AsyncServer(servlet) as server:``.  Entering starts
    every worker (in a helper thread, so the loop keeps running); leaving lets
    workers finish the items they hold, then stops them.  All methods must be
    used from the loop that entered the server.

    Parameters
    ----------
    servlet
        The servlet (graph) to run.
    capacity
        Most requests in progress at once.  A request whose caller was
        cancelled or timed out keeps its place until its result comes out.
    """

    def __init__(self, servlet: Servlet, *, capacity: int = 256):
        from ._server import Server

        self._server = Server(servlet, capacity=capacity)
        self.servlet = servlet

    def __getstate__(self):
        raise TypeError(f"cannot pickle '{type(self).__name__}' object")

    @property
    def capacity(self) -> int:
        """The ``capacity`` given to the constructor."""
        return self._server.capacity

    @property
    def backlog(self) -> int:
        """Requests now in the server, including abandoned ones still in the pipeline."""
        return self._server.backlog

    async def __aenter__(self):
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._server.__enter__)
        port_for(self._server)
        return self

    async def __aexit__(self, exc_type, exc, tb):
        loop = asyncio.get_running_loop()
        port = self._server._async_ports.get(loop)
        # Workers finish what they hold while the loop keeps delivering results.
        try:
            await loop.run_in_executor(None, self._server.__exit__, exc_type, exc, tb)
        finally:
            if port is not None:
                port.close()

    def debug_info(self) -> dict:
        """Like :meth:`Server.debug_info`."""
        info = self._server.debug_info()
        info['type'] = type(self).__name__
        return info

    async def call(self, x, /, *, timeout: int | float = 60, backpressure: bool = True):
        """Serve one input and return its result (or raise the worker's exception).

        ``timeout`` and ``backpressure`` mean what they mean for
        :meth:`Server.call`.  If the awaiting task is cancelled, the caller
        gets ``CancelledError`` at once; the request stays in ``backlog`` until
        its result leaves the pipeline.
        """
        check_timeout(timeout)
        return await async_call(self._server, x, timeout, backpressure)

    async def stream(
        self,
        data_stream: AsyncIterable | Iterable,
        /,
        *,
        return_x: bool = False,
        return_exceptions: bool = False,
        timeout: int | float = 3600,
        preprocessor: Callable | None = None,
    ):
        """Serve every input of ``data_stream`` (an async iterable, or a plain
        iterable); yield results in input order.

        Inputs are fed by a task of their own, ahead of the results (up to
        ``capacity`` in flight).  Parameters are those of :meth:`Server.stream`;
        ``timeout`` applies to each item from the moment it was fed.
        """
        check_timeout(timeout)
        port = port_for(self._server)
        loop = port.loop
        cap = self._server.capacity
        # (x, local error, token, future, deadline) in input order; the feeder
        # waits while `cap` items are in the window.
        window: collections.deque = collections.deque()
        room = asyncio.Semaphore(cap)
        arrived = asyncio.Event()
        feed_done = []  # [exception or None] once the feeder is finished

        async def feed():
            try:
                async for x in _aiter(data_stream):
                    await room.acquire()
                    t0 = perf_counter()
                    try:
                        x1 = preprocessor(x) if preprocessor is not None else x
                        flags, payload = port.codec.encode(x1)
                    except Exception as e:
                        window.append((x, e, None, None, 0.0))
                    else:
                        try:
                            token, fut = await port.submit(payload, flags, False, t0, t0 + timeout)
                        except (ServerBacklogFull, TimeoutError) as e:
                            window.append((x, e, None, None, 0.0))
                        else:
                            window.append((x, None, token, fut, t0 + timeout))
                    arrived.set()
                feed_done.append(None)
            except BaseException as e:  # noqa: BLE001 - the input failed: end the stream with it
                feed_done.append(e)
            finally:
                arrived.set()

        feeder = loop.create_task(feed())
        try:
            while True:
                if not window:
                    if feed_done:
                        break
                    arrived.clear()
                    await arrived.wait()
                    continue
                x, err, token, fut, deadline = window[0]
                if err is None:
                    try:
                        rflags, result = await port.result(token, fut, deadline)
                    except _Expired:
                        y, failed = TimeoutError(f'item not done within its timeout of {timeout} seconds'), True
                    else:
                        try:
                            y = decode(rflags, result)
                            failed = bool(rflags & FLAG_ERROR)
                        except Exception as e:
                            y, failed = e, True
                else:
                    y, failed = err, True
                window.popleft()
                room.release()
                if failed and not return_exceptions:
                    raise y
                yield (x, y) if return_x else y
            if feed_done and feed_done[0] is not None:
                raise feed_done[0]
        finally:
            feeder.cancel()
            for _, _, token, _, _ in window:
                if token is not None:
                    port.abandon(token)
            window.clear()
