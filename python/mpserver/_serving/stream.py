"""One ``Server.stream`` call: its window of inputs in flight and how it is fed.

The C++ stream window (``_core.StreamWindow``, cpp/stream_window.hpp) keeps a
stream's requests in input order and hands back the ready prefix.  A
:class:`StreamRun` holds what the window does not: the inputs themselves
(for ``return_x`` and for errors found before sending), the settings of the
call, and the chunk sizer.  It is fed one of two ways:

* :meth:`StreamRun.inline` — for inputs that never block (lists, ranges,
  ...): the caller's thread pulls, encodes, sends and drains in turns;
* :meth:`StreamRun.fed` — for anything else (generators, queues, sockets):
  a feeder thread pulls and sends, because pulling the next input may block
  while results are ready to be yielded; the caller's thread drains.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from mpserver import _core
from mpserver._serving.chunk_sizer import ChunkSizer
from mpserver._serving.requests import BACKLOG_FULL, failure
from mpserver._wire.chunks import encode_run
from mpserver._wire.codec import FLAG_ERROR, Codec, PickleCodec, decode
from mpserver._wire.errors import TimeoutError

if TYPE_CHECKING:
    from mpserver._serving.running import Running

__all__ = ['StreamRun', 'NON_BLOCKING_INPUTS']

#: An input in a stream's window: ``(x, its local error or None)``; a fed
#: stream queues a list, whose error its feeder may set after queueing it.
_InWindow: TypeAlias = tuple[Any, BaseException | None] | list[Any]

#: Inputs that can be iterated without ever blocking: a stream over one of
#: these feeds and drains in the caller's thread; anything else (generators,
#: queues, sockets, ...) is pulled by a feeder thread.
NON_BLOCKING_INPUTS = (list, tuple, range, str, bytes, bytearray, dict, set, frozenset)

_READY = int(_core.Outcome.READY)
_LOCAL = int(_core.Outcome.LOCAL)
_VALUES = _core.OUTCOME_VALUES

# A stream sends inputs in runs of up to _RUN (one ring push, one wake-up)
# and takes up to _DRAIN_MAX ready results per crossing into the core.
_RUN = 64
_DRAIN_MAX = 256


def _popleft_n(xs: collections.deque[Any], n: int) -> None:
    """Drops the first ``n`` entries of ``xs``, the loop run in C (a zero-length
    deque consumes the calls), not once per item in Python."""
    collections.deque(itertools.starmap(xs.popleft, itertools.repeat((), n)), maxlen=0)


class StreamRun:
    """The state of one stream: its window, the inputs in it, its settings."""

    def __init__(
        self,
        running: Callable[[], Running],
        timeout: float,
        preprocessor: Callable[[Any], Any] | None,
        return_x: bool,
        return_exceptions: bool,
    ) -> None:
        self._running = running  # the server's record, or raises why it is not running
        self.win: Any = None  # opened when the consumer first asks for a result
        self.capacity = 0
        self.codec: Codec = PickleCodec
        self.chunk_readers = 0
        self.timeout = timeout
        self.preprocessor = preprocessor
        self.return_x = return_x
        self.return_exceptions = return_exceptions
        #: The inputs in the window, in order: (x, local error) pairs.
        self.xs: collections.deque[_InWindow] = collections.deque()

    def _open(self) -> None:
        """Opens the window on the running server (when the stream starts, not
        when it is made: a stream never iterated holds nothing)."""
        run = self._running()
        self.win = _core.StreamWindow(run.book, run.entry, self.timeout)
        self.capacity, self.codec, self.chunk_readers = run.capacity, run.codec, run.chunk_readers

    def encode(self, x: Any) -> tuple[Any, Exception | None]:
        """((flags, payload), None) or (None, exception) for one input."""
        try:
            if self.preprocessor is not None:
                x = self.preprocessor(x)
            return self.codec.encode(x), None
        except Exception as e:  # noqa: BLE001 - a preprocess or encode failure is this item's result
            return None, e

    def outcomes(self, wait: bool = True) -> Iterator[Any]:
        """Yields what the stream's consumer sees for the window's ready prefix
        (waiting for its head, unless ``wait`` is false)."""
        xs, return_x, return_exceptions = self.xs, self.return_x, self.return_exceptions
        pop = xs.popleft
        for outcome, flags, payload in self.win.drain(_DRAIN_MAX, wait):
            if outcome == _VALUES:  # a run of results from chunks: plain values
                if return_x:
                    for y in payload:
                        yield pop()[0], y
                else:
                    _popleft_n(xs, len(payload))
                    yield from payload
                continue
            x, err = pop()
            if outcome == _READY:
                try:
                    y = decode(flags, payload)
                except Exception as e:  # noqa: BLE001 - an undecodable result is this item's error
                    y, flags = e, FLAG_ERROR
                if flags & FLAG_ERROR and not return_exceptions:
                    raise y
            elif outcome == _LOCAL:
                y = err
                if not return_exceptions:
                    raise cast(BaseException, y)  # an entry the window counts as local has its error set
            else:  # timed out
                y = TimeoutError(f'item not done within its timeout of {self.timeout} seconds')
                if not return_exceptions:
                    raise y
            yield (x, y) if return_x else y

    def inline(self, data: Iterable[Any], chunk_size: int | None) -> Iterator[Any]:
        """Feeds and drains in the caller's thread: for inputs that never block."""
        self._open()
        win, xs, cap = self.win, self.xs, self.capacity
        # pulled and encoded, not yet sent: (x, (flags, payload), None) or (x, None, local error)
        todo: collections.deque[tuple[Any, Any, Exception | None]] = collections.deque()
        it = iter(data)
        exhausted = False
        encode = self.encode
        sizer = self._chunk_sizer(chunk_size) if self.preprocessor is None else None
        try:
            while True:
                chunk = sizer.size() if sizer is not None else 1
                if chunk > 1 and not exhausted and not todo:
                    # Small items, deep backlog: the next run goes as one chunk
                    # (_wire.chunks) once the capacity has room for all of it.
                    if cap - len(xs) >= chunk:
                        exhausted = self._send_chunk(it, chunk, todo)
                    want = 0
                else:
                    want = min(_RUN, cap - len(xs)) - len(todo)
                if not exhausted and want > 0:
                    pulled = 0
                    for x in itertools.islice(it, want):
                        todo.append((x, *encode(x)))
                        pulled += 1
                    exhausted = pulled < want
                stalled = False  # other callers hold the capacity
                while todo:
                    x, payload, err = todo[0]
                    if err is not None:
                        todo.popleft()
                        xs.append((x, err))
                        win.add_local()
                        continue
                    run: list[tuple[int, Any]] = []  # (flags, payload) of each input
                    for item in todo:
                        if item[2] is not None:
                            break
                        run.append(item[1])
                    k, status = win.submit(run, not xs, self.timeout)
                    for _ in range(k):
                        xs.append((todo.popleft()[0], None))
                    if k < len(run):
                        if status == BACKLOG_FULL and xs:
                            stalled = True
                            break  # other callers hold the capacity: drain ours first
                        x = todo.popleft()[0]
                        xs.append((x, failure(status, cap, perf_counter())))
                        win.add_local()
                if not xs:
                    if exhausted and not todo:
                        return
                    continue
                # Wait for the head only when nothing more can be sent now;
                # otherwise take what is ready and keep feeding: a worker
                # gathering a batch may be waiting for exactly those inputs.
                can_send = not stalled and len(xs) + chunk <= cap and not (exhausted and not todo)
                before = len(xs)
                yield from self.outcomes(not can_send)
                if sizer is not None:
                    sizer.observe(before - len(xs))
        finally:
            win.close()

    def _chunk_sizer(self, chunk_size: int | None) -> ChunkSizer | None:
        """The stream's chunk sizer, or None when its items travel singly."""
        if chunk_size == 1 or not self.chunk_readers:
            return None
        return ChunkSizer(self.chunk_readers, self.capacity, chunk_size)

    def _send_chunk(
        self, it: Iterator[Any], size: int, todo: collections.deque[tuple[Any, Any, Exception | None]]
    ) -> bool:
        """Pulls up to ``size`` inputs and sends them as one chunk, or queues
        them in ``todo`` to go singly (values a chunk cannot carry, or no room
        in the capacity right now).  Returns whether ``it`` is exhausted."""
        run = list(itertools.islice(it, size))
        if len(run) > 1:
            blob = encode_run(run)
            if blob is not None and self.win.submit_chunk(len(run), blob, self.timeout)[0]:
                self.xs.extend(zip(run, itertools.repeat(None)))
                return len(run) < size
        encode = self.encode
        for x in run:
            todo.append((x, *encode(x)))
        return len(run) < size

    def fed(self, data: Iterable[Any]) -> Iterator[Any]:
        """A feeder thread pulls from the iterable (which may block); this thread drains."""
        self._open()
        win, xs = self.win, self.xs
        stop = threading.Event()
        feed_error: list[BaseException] = []

        def feed() -> None:
            try:
                for x in data:
                    if stop.is_set():
                        break
                    encoded, err = self.encode(x)
                    if err is not None:
                        xs.append((x, err))
                        win.add_local()
                        continue
                    entry = [x, None]
                    xs.append(entry)
                    k, status = win.submit([encoded], True, self.timeout)
                    if k == 0:
                        if stop.is_set():
                            break
                        entry[1] = failure(status, self.capacity, perf_counter())
                        win.add_local()
            except BaseException as e:  # noqa: BLE001 - the iterable failed: end the stream with it
                feed_error.append(e)
            finally:
                win.finish()

        feeder = threading.Thread(target=feed, name='mpserver.Server.stream.feeder', daemon=True)
        feeder.start()
        try:
            while True:
                n = 0
                for out in self.outcomes():
                    n += 1
                    yield out
                if n == 0:
                    break
            if feed_error:
                raise feed_error[0]
        finally:
            stop.set()
            win.close()
