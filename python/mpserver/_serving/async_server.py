"""asyncio front end: AsyncServer.

An AsyncServer runs a :class:`Server` and serves it to one event loop
through the server's asyncio side (``async_ports``): requests are pushed
without blocking the loop and resolved in batches from an eventfd the loop
watches.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from time import perf_counter
from typing import IO, TYPE_CHECKING, Any

from mpserver._graph.servlet import Servlet
from mpserver._serving.async_ports import Expired
from mpserver._serving.server import Server
from mpserver._wire.codec import FLAG_ERROR, decode
from mpserver._wire.errors import ServerBacklogFull, TimeoutError, check_timeout

if TYPE_CHECKING:
    from mpserver._observe.stats import ServerStats
    from mpserver._observe.watch import Watch

__all__ = ['AsyncServer']


async def _aiter(data: AsyncIterable[Any] | Iterable[Any]) -> AsyncIterator[Any]:
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

    def __init__(self, servlet: Servlet, *, capacity: int = 256) -> None:
        self._server = Server(servlet, capacity=capacity)
        self.servlet = servlet

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(f"cannot pickle '{type(self).__name__}' object")

    @property
    def capacity(self) -> int:
        """The ``capacity`` given to the constructor."""
        return self._server.capacity

    @property
    def backlog(self) -> int:
        """Requests now in the server, including abandoned ones still in the pipeline."""
        return self._server.backlog

    async def __aenter__(self) -> AsyncServer:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._server.__enter__)
        self._server._running().ports().port()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        run = self._server._run
        if run is None or run.forked:
            return  # not running, or a forked child: the parent's server is not ours to stop
        loop = asyncio.get_running_loop()
        ports = run.made_ports()
        port = ports.get(loop) if ports is not None else None
        # Workers finish what they hold while the loop keeps delivering results.
        try:
            await loop.run_in_executor(None, self._server.__exit__, exc_type, exc, tb)
        finally:
            if port is not None:
                port.close()

    def debug_info(self) -> dict[str, Any]:
        """Like :meth:`Server.debug_info`."""
        info = self._server.debug_info()
        info['type'] = type(self).__name__
        return info

    def stats(self) -> ServerStats:
        """Like :meth:`Server.stats` (cheap: safe to call from the loop)."""
        return self._server.stats()

    def watch(self, interval: float = 1.0, *, file: IO[str] | None = None) -> Watch:
        """Like :meth:`Server.watch` (drawn by its own thread, not the loop)."""
        return self._server.watch(interval, file=file)

    async def call(self, x: Any, /, *, timeout: int | float = 60, backpressure: bool = True) -> Any:
        """Serve one input and return its result (or raise the worker's exception).

        ``timeout`` and ``backpressure`` mean what they mean for
        :meth:`Server.call`.  If the awaiting task is cancelled, the caller
        gets ``CancelledError`` at once; the request stays in ``backlog`` until
        its result leaves the pipeline.
        """
        check_timeout(timeout)
        return await self._server._running().ports().call(x, timeout, backpressure)

    async def stream(
        self,
        data_stream: AsyncIterable[Any] | Iterable[Any],
        /,
        *,
        return_x: bool = False,
        return_exceptions: bool = False,
        timeout: int | float = 3600,
        preprocessor: Callable[[Any], Any] | None = None,
    ) -> AsyncIterator[Any]:
        """Serve every input of ``data_stream`` (an async iterable, or a plain
        iterable); yield results in input order.

        Inputs are fed by a task of their own, ahead of the results (up to
        ``capacity`` in flight).  Parameters are those of :meth:`Server.stream`;
        ``timeout`` applies to each item from the moment it was fed.
        """
        check_timeout(timeout)
        port = self._server._running().ports().port()
        loop = port.loop
        cap = self._server.capacity
        # (x, local error, token, future, deadline) in input order; the feeder
        # waits while `cap` items are in the window.  Token (an int) and future
        # (an asyncio.Future[tuple[int, Any]]) are None when there is a local error.
        window: collections.deque[tuple[Any, BaseException | None, Any, Any, float]] = collections.deque()
        room = asyncio.Semaphore(cap)
        arrived = asyncio.Event()
        feed_done: list[BaseException | None] = []  # [exception or None] once the feeder is finished

        async def feed() -> None:
            try:
                async for x in _aiter(data_stream):
                    await room.acquire()
                    t0 = perf_counter()
                    try:
                        x1 = preprocessor(x) if preprocessor is not None else x
                        flags, payload = port.codec.encode(x1)
                    except Exception as e:  # noqa: BLE001 - a preprocess or encode failure is this item's result
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
                y: Any
                if err is None:
                    try:
                        rflags, result = await port.result(token, fut, deadline)
                    except Expired:
                        y, failed = TimeoutError(f'item not done within its timeout of {timeout} seconds'), True
                    else:
                        try:
                            y = decode(rflags, result)
                            failed = bool(rflags & FLAG_ERROR)
                        except Exception as e:  # noqa: BLE001 - an undecodable result is this item's error
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
