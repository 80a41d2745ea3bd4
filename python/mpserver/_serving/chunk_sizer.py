"""How many small items a stream sends as one chunk (the format: ``_wire.chunks``).

A stream whose items are small and whose backlog is deep sends a run of
inputs as one chunk; items whose work takes long travel singly, so that
whichever worker is free takes the next one.  The size follows the rate at
which results come back.
"""

from __future__ import annotations

import time

from mpserver._wire.chunks import MAX_CHUNK, MAX_CHUNK_LIMIT

__all__ = ['ChunkSizer']

# A chunk is sized so that one worker runs it in about this long: long enough
# to spread the per-message costs over many items, short enough that a chunk
# never holds many items back from an idle sibling.
_CHUNK_SECONDS = 0.0002
# The estimate is renewed every this many results (the first one included).
_WINDOW_ITEMS = 64


class ChunkSizer:
    """Picks a stream's chunk size from the rate its results come back.

    The estimate of one item's work is ``workers / rate`` (every worker busy);
    a chunk is as many items as one worker runs in ``_CHUNK_SECONDS``, at
    most ``MAX_CHUNK`` and at most a share of the capacity that leaves every
    worker something to take.  ``fixed``: the user's explicit chunk size.
    """

    def __init__(self, workers: int, capacity: int, fixed: int | None = None) -> None:
        self._workers = max(1, workers)
        self._cap_share = max(1, capacity // (2 * self._workers))
        self._fixed = None if fixed is None else max(1, min(fixed, MAX_CHUNK_LIMIT, capacity))
        self._mark = time.perf_counter()  # the estimate covers results since then
        self._count = 0
        self._size = 1

    def observe(self, n: int) -> None:
        """``n`` more results were taken by the stream."""
        if self._fixed is not None:
            return
        self._count += n
        if self._count < _WINDOW_ITEMS:
            return
        now = time.perf_counter()
        per_item = self._workers * (now - self._mark) / self._count
        self._mark, self._count = now, 0
        fit = int(_CHUNK_SECONDS / per_item) if per_item > 0 else MAX_CHUNK
        self._size = max(1, min(MAX_CHUNK, self._cap_share, fit))

    def size(self) -> int:
        """The size of the next chunk (1: send singly)."""
        return self._fixed if self._fixed is not None else self._size
