"""The chunk format: several small items in one message (cpp/chunk.hpp).

A stream whose items are small and whose backlog is deep sends a run of
inputs as one *chunk*: one pickle, one ring hand-off, one wake-up, each item
still with its own request token.  A worker that takes a chunk runs its items
one by one and answers with one chunk of results; the collector files them
item by item.  Items whose work takes long travel singly, so that whichever
worker is free takes the next one; and a worker stuck on one item of a chunk
hands the items it has not started back to its ring (``ChunkRunner``).

A chunk's values travel in one of two forms, chosen per run:

* ``(0, [value, ...])``: one pickle of the list, when every value is an
  immutable scalar (``int``, ``float``, ``str``, ``bytes``, ...), whose
  identity nobody can observe;
* ``(1, [pickle, ...])``: one pickle per value, inside the run's pickle, for
  anything else, so that two items never share an object after unpickling
  (as they would inside one pickle's memo) — each is the copy it would be
  if sent alone.

Values with large out-of-band buffers (numpy arrays, ``OOB_MIN_BYTES`` and
up) never travel in a chunk: they go singly, through the zero-copy path.
"""

from __future__ import annotations

import pickle
from typing import Any

from mpserver import _core
from mpserver._wire.codec import FLAG_CHUNK

__all__ = ['FLAG_CHUNK', 'MAX_CHUNK', 'MAX_CHUNK_LIMIT', 'encode_run']

#: The most items an adaptive chunk carries.
MAX_CHUNK = 64
#: The most an explicit ``chunk_size`` may ask for (cpp/chunk.hpp's limit).
MAX_CHUNK_LIMIT = 4096
# A chunk's pickle larger than this goes singly: large items gain nothing.
_MAX_BLOB_BYTES = 256 << 10

_SCALARS = frozenset({int, float, str, bytes, bool, complex, type(None)})
_dumps = pickle.dumps
_OOB_MIN = _core.LARGE_PAYLOAD_BYTES


def _no_oob(buf: pickle.PickleBuffer) -> bool:
    """A pickle buffer_callback that keeps small buffers in-band and refuses large ones."""
    try:
        nbytes = buf.raw().nbytes
    except BufferError:
        return True
    if nbytes >= _OOB_MIN:
        raise _TooLarge
    return True


class _TooLarge(Exception):
    pass


def encode_run(values: list[Any]) -> bytes | None:
    """The pickle of a chunk's values, or None if they should travel singly."""
    try:
        if _SCALARS.issuperset(map(type, values)):  # the types checked in C, not per item in Python
            blob = _dumps((0, values), 5)
        else:
            blob = _dumps((1, [_dumps(v, 5, buffer_callback=_no_oob) for v in values]), 5)
    except Exception:  # noqa: BLE001 - unpicklable or large: the single path reports or handles it
        return None
    return blob if len(blob) <= _MAX_BLOB_BYTES else None
