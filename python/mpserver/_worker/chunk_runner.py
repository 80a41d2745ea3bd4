"""A worker's side of a chunk: a stuck item does not hold up the rest of its chunk.

A worker that takes a chunk (``_wire.chunks``) runs its items one by one and
answers with one chunk of results; the collector files them item by item.
A worker stuck on one item hands the items it has not started back to its
ring, where an idle sibling takes them.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from mpserver import _core

__all__ = ['ChunkRunner']


class ChunkRunner:
    """Keeps a stuck item from holding up the rest of its chunk.

    :meth:`start_chunk` returns the chunk's *pending* deque: the indices of
    its items not started yet.  The worker's item loop pops the next index
    from its left (``popleft``) until it is empty, writing each item's result
    into the chunk's lists before it pops the next, then calls
    :meth:`end_chunk`.  Each pop is one C call under the GIL, so an index goes
    either to the loop or to the watcher, never to both, and the item loop
    takes no lock and reads no clock.  A watcher thread (it polls only while
    the worker is busy with chunks, and parks on a condition otherwise)
    samples how many items are pending once per ``patience`` seconds; the
    same count at two samples in a row means an item has run for at least
    ``patience`` (and at most twice that).  It then

    * takes every pending index from the right (``pop``) — the loop no longer
      starts those items — and re-sends those items singly to the worker's own
      input ring, where an idle sibling (or this worker, later) takes them.
      They are re-sent before they are given up here, so none is lost;
    * answers the items of the chunk that are already done (``flush``), so
      that they are not kept waiting for the slow one.

    The watcher releases the claims of the items it hands back (the
    process's claims are then taken under a lock, ``_core.share_claims``), so
    that this worker's death cannot fail them while a sibling runs them; the
    claims and meters of the items it answered are settled by the loop
    (:meth:`end_chunk` says which) — a death before that only duplicates
    answers already given, which the collector drops.  The
    watcher needs the GIL: an item that holds it for long (a C extension that
    never releases it) delays the hand-back.
    """

    def __init__(self, ring: Any, patience: float = 0.005) -> None:
        _core.share_claims()  # on the serving thread, before the watcher exists
        self._ring = ring
        self._patience = patience
        self._lock = threading.Lock()  # the chunk's bookkeeping; never taken per item
        self._wake = threading.Condition(self._lock)
        self._ids: tuple[int, ...] = ()
        self._resend: Any = None  # index -> (flags, payload) of an item to hand back
        self._flush: Any = None  # (lo, hi) -> answers items lo..hi-1
        self._aux = 0
        self._pending: collections.deque[int] = collections.deque()  # indices not started
        self._handed = 0  # items of the chunk handed back (the last ones)
        self._flushed = 0  # items before this were answered by the watcher
        self._chunks = 0  # chunks started, so the watcher can tell an idle worker
        self._parked = False
        self._thread: threading.Thread | None = None

    def start_chunk(self, ids: tuple[int, ...], resend: Any, flush: Any, aux: int) -> collections.deque[int]:
        """Starts a chunk of ``len(ids)`` items and returns its pending deque.
        ``resend(j)``: the (flags, payload) message that sends item ``j``
        singly; ``flush(lo, hi)``: answers the done items ``lo..hi-1``."""
        pending = collections.deque(range(len(ids)))
        with self._lock:
            self._ids, self._resend, self._flush, self._aux = ids, resend, flush, aux
            self._pending, self._handed, self._flushed = pending, 0, 0
            self._chunks += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name='mpserver.chunk-watcher', daemon=True)
                self._thread.start()
            elif self._parked:
                self._wake.notify()
        return pending

    def end_chunk(self) -> tuple[int, int]:
        """Ends the chunk: ``(flushed, ran)`` — items ``0..flushed-1`` were
        answered by the watcher, ``flushed..ran-1`` ran and await their
        answer, ``ran..`` were handed back (or, if the loop was cut short,
        never started)."""
        with self._lock:
            done = self._flushed, len(self._ids) - self._handed - len(self._pending)
            self._ids, self._resend, self._flush = (), None, None
            self._pending = collections.deque()
            self._handed = self._flushed = 0
            return done

    def _watch(self) -> None:
        # No clock on the item loop: the watcher samples (chunk, pending
        # count) once per ``patience``; the same pair at two samples in a row
        # means the item being run has run for at least ``patience``.
        seen = -1
        mark: tuple[int, int] | None = None
        while True:
            with self._lock:
                while not self._pending and self._chunks == seen:
                    self._parked = True
                    mark = None
                    self._wake.wait()
                self._parked = False
                seen = self._chunks
                pending = self._pending
                now = (self._chunks, len(pending))
                started = len(self._ids) - now[1]
                stuck, mark = started > 0 and now == mark, now
                if stuck:
                    self._hand_back(pending)
            time.sleep(self._patience)

    def _hand_back(self, pending: collections.deque[int]) -> None:
        """(Watcher, under the lock.)  Takes the chunk's pending items from the
        loop, re-sends them, and answers the items done before the stuck one."""
        back: list[int] = []
        while True:
            try:
                back.append(pending.pop())  # the loop pops from the other end: each index goes to one side
            except IndexError:
                break
        back.reverse()
        # The loop's last index is running (stuck); all before it are done.
        nxt = back[0] if back else len(self._ids)
        lo, hi = self._flushed, nxt - 1
        if hi > lo:
            self._flush(lo, hi)
            self._flushed = hi
        if back:
            self._handed = len(back)
            msgs = [(self._ids[j], *self._resend(j)) for j in back]
            # Sent first, released after: a death in between makes a
            # duplicate (dropped by the collector), never a loss.
            self._ring.push_many(msgs, self._aux)
            _core.release_handed_back([mid for mid, _, _ in msgs])
