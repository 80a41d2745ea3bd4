"""How values travel on the core's rings.

Between processes a value is a pickle (protocol 5) whose large out-of-band
buffers (numpy arrays, and other objects that pickle their data as a
PickleBuffer) travel beside it: the core copies
them once, straight from the sender's objects into the ring, and the receiver
unpickles over one writable copy (FLAG_OOB, see cpp/oob_message.hpp).  A
value that is exactly ``bytes`` travels as its raw contents (FLAG_RAW), with
no pickling at all.  Inside the main process
(thread workers, the Server's own threads) a value travels as a reference to
the object itself: no pickling, and objects that cannot be pickled (lambdas,
locks, open files) work, as with mpservice's thread queues.  An exception
result carries FLAG_ERROR; across processes it is pickled inside a
RemoteException so the caller gets the original type plus the remote
traceback.
"""

from __future__ import annotations

import os
import pickle
import struct
import traceback

from . import _core
from ._errors import crash_error
from ._remote import EnsembleError, RemoteException

FLAG_OBJECT = _core.FLAG_OBJECT
FLAG_ERROR = _core.FLAG_ERROR
FLAG_CONTROL = _core.FLAG_CONTROL
FLAG_ENSEMBLE = _core.FLAG_ENSEMBLE
FLAG_CRASH = _core.FLAG_CRASH
FLAG_RAW = _core.FLAG_RAW
FLAG_OOB = _core.FLAG_OOB
_oob_sections = _core.oob_sections
_OwnedBytes = _core.OwnedBytes
_PART_MISSING = _core.PART_MISSING
_COMPOSITE_MAGIC = _core.COMPOSITE_MAGIC
_composite_head = struct.Struct('<IIII')
_part_head = struct.Struct('<IIQ')

_dumps = pickle.dumps
_loads = pickle.loads


_heap_kept = False


def keep_heap() -> None:
    """Lets this process reuse the memory of large payloads (once per process).

    glibc gives every block above 128 KiB its own mapping and returns freed
    heap tops to the kernel, so a process receiving one large payload after
    another pays a page fault for every 4 KiB of every payload (it halves 1 MB
    echo throughput).  This raises both thresholds (blocks up to 32 MiB come
    from the heap; up to 128 MiB of free heap is kept).  Called by the first
    Server started in the main process and by every worker process;
    ``MPSERVER_KEEP_HEAP=0`` in the environment turns it off.
    """
    global _heap_kept
    if _heap_kept or os.environ.get('MPSERVER_KEEP_HEAP', '1') == '0':
        return
    _heap_kept = True
    _core.keep_heap(32 << 20, 128 << 20)


def _pickle_failure(value, exc: BaseException) -> BaseException:
    err = pickle.PicklingError(
        f'cannot pickle a value of type {type(value).__module__}.{type(value).__qualname__}: {exc}'
    )
    err.__cause__ = exc
    return err


# Buffers smaller than this stay inside the pickle: below it, the directory
# and the separate copies cost more than they save (the core's threshold for
# a large payload, see cpp/payload_home.hpp).
OOB_MIN_BYTES = _core.LARGE_PAYLOAD_BYTES
_SCALARS = frozenset({int, float, str, bool, complex, type(None)})
_PLAIN_BUFFERS = (bytes, bytearray)


def _pickle(value):
    """The payload of ``value`` for another process: a pickle, or a tagged
    tuple the core writes as one message — ``(FLAG_RAW, bytes)`` or
    ``(FLAG_OOB, pickle, buffer, ...)``."""
    t = type(value)
    if t is bytes:
        return FLAG_RAW, value
    if t in _SCALARS:
        return _dumps(value, 5)
    buffers = []

    def out_of_band(buf):  # pickle's buffer_callback: a true result keeps buf in-band
        try:
            raw = buf.raw()
        except BufferError:  # not contiguous: pickle copies it in-band
            return True
        # A bare PickleBuffer over bytes/bytearray unpickles as the buffer it
        # is given: in-band, it comes back as bytes/bytearray, as it always did.
        if raw.nbytes < OOB_MIN_BYTES or type(raw.obj) in _PLAIN_BUFFERS:
            return True
        buffers.append(buf)
        return False

    head = _dumps(value, 5, buffer_callback=out_of_band)
    if buffers:
        return (FLAG_OOB, head, *buffers)
    return head


def _unpickle_oob(payload):
    """The value of a FLAG_OOB message: its buffers are unpickled in place
    (numpy arrays share the one writable copy the core made)."""
    if type(payload) is not bytearray and type(payload) is not _OwnedBytes:
        payload = bytearray(payload)  # a read-only view (a part of an ensemble result)
    sections = _oob_sections(payload)
    return _loads(sections[0], buffers=sections[1:])


class PickleCodec:
    """Values cross a process boundary."""

    local = False

    @staticmethod
    def encode(value):
        return 0, _pickle(value)

    @staticmethod
    def encode_error(exc: BaseException, tb: str | None = None):
        """``tb``: traceback text for an exception that was never raised."""
        try:
            return FLAG_ERROR, _dumps(RemoteException(exc, tb), 5)
        except Exception as e:  # the exception object itself cannot be pickled
            text = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            fallback = RuntimeError(
                f'{type(exc).__qualname__}: {exc} (the original exception could not be pickled: {e})'
            )
            return FLAG_ERROR, _dumps(RemoteException(fallback, text), 5)

    @staticmethod
    def encode_result(value):
        """encode(), turning a pickling failure into that item's error."""
        try:
            return 0, _pickle(value)
        except Exception as e:
            err = _pickle_failure(value, e)
            return PickleCodec.encode_error(err, f'{type(err).__module__}.{type(err).__name__}: {err}\n')


class ObjectCodec:
    """Values stay inside the main process."""

    local = True

    @staticmethod
    def encode(value):
        return FLAG_OBJECT, value

    @staticmethod
    def encode_error(exc: BaseException, tb: str | None = None):
        # The exception object itself, with its live traceback (if any).
        return FLAG_OBJECT | FLAG_ERROR, exc

    encode_result = encode


def decode(flags: int, payload):
    """The value of a message; an error message gives the exception object."""
    if not flags:
        return _loads(payload)
    if flags & FLAG_RAW:
        return payload if type(payload) is bytes else bytes(payload)
    if flags & FLAG_ENSEMBLE:
        return _decode_ensemble(flags, payload)
    if flags & FLAG_CRASH:
        return crash_error(payload)
    if flags & FLAG_OBJECT:
        value = payload
    elif flags & FLAG_OOB:
        value = _unpickle_oob(payload)
    else:
        value = _loads(payload)
    if flags & FLAG_ERROR and isinstance(value, RemoteException):
        value = value.exc
    return value


def codec_for(local: bool):
    return ObjectCodec if local else PickleCodec


def _decode_ensemble(flags: int, payload):
    """An ensemble's composite result (built by the C++ EnsembleRouter): the
    list of member results in member order, exceptions in their place; or,
    for a failed item, an :class:`EnsembleError` holding that list.

    ``payload`` is the composite's bytes, or — when parts travel by reference
    — the bindings' ``(finished, [(part flags, value), ...])`` form.
    """
    if isinstance(payload, tuple):
        finished, parts = payload
        ys = [None if pflags == _PART_MISSING else _decode_part(pflags, value) for pflags, value in parts]
    else:
        finished, ys = _parse_composite(payload)
    if flags & FLAG_ERROR:
        return EnsembleError({'y': ys, 'n': finished})
    return ys


def _parse_composite(payload):
    buf = memoryview(payload)
    if len(buf) < _composite_head.size:
        raise ValueError('corrupt ensemble result: too short')
    magic, n, finished, _ = _composite_head.unpack_from(buf, 0)
    if magic != _COMPOSITE_MAGIC:
        raise ValueError('corrupt ensemble result: bad magic')
    off = _composite_head.size
    ys = []
    for _ in range(n):
        if off + _part_head.size > len(buf):
            raise ValueError('corrupt ensemble result: truncated')
        pflags, _, length = _part_head.unpack_from(buf, off)
        off += _part_head.size
        if off + length > len(buf):
            raise ValueError('corrupt ensemble result: part overruns the message')
        ys.append(None if pflags == _PART_MISSING else decode(pflags, buf[off:off + length]))
        off += (length + 7) & ~7
    return finished, ys


def _decode_part(flags: int, value):
    """One member's result from the by-reference form of a composite."""
    if flags & FLAG_OBJECT:
        if flags & FLAG_ERROR and isinstance(value, RemoteException):
            value = value.exc
        return value
    return decode(flags, value)


def pass_error(flags: int, payload, codec):
    """An upstream error message, made fit for ``codec``'s consumer: an
    exception held by reference (alone, or inside an ensemble result) is
    re-encoded; anything else passes through untouched."""
    if flags & FLAG_OBJECT and not codec.local:
        return codec.encode_error(payload)
    if isinstance(payload, tuple):  # by-reference composite: only Python can carry it on
        return codec.encode_error(decode(flags, payload))
    return flags, payload
