"""How values travel on the core's rings.

Between processes a value is a pickle (protocol 5).  Inside the main process
(thread workers, the Server's own threads) a value travels as a reference to
the object itself: no pickling, and objects that cannot be pickled (lambdas,
locks, open files) work, as with mpservice's thread queues.  An exception
result carries FLAG_ERROR; across processes it is pickled inside a
RemoteException so the caller gets the original type plus the remote
traceback.
"""

from __future__ import annotations

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
_PART_MISSING = _core.PART_MISSING
_COMPOSITE_MAGIC = _core.COMPOSITE_MAGIC
_composite_head = struct.Struct('<IIII')
_part_head = struct.Struct('<IIQ')

_dumps = pickle.dumps
_loads = pickle.loads


def _pickle_failure(value, exc: BaseException) -> BaseException:
    err = pickle.PicklingError(
        f'cannot pickle a value of type {type(value).__module__}.{type(value).__qualname__}: {exc}'
    )
    err.__cause__ = exc
    return err


class PickleCodec:
    """Values cross a process boundary."""

    local = False

    @staticmethod
    def encode(value):
        return 0, _dumps(value, 5)

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
            return 0, _dumps(value, 5)
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
    if flags & FLAG_ENSEMBLE:
        return _decode_ensemble(flags, payload)
    if flags & FLAG_CRASH:
        return crash_error(payload)
    if flags & FLAG_OBJECT:
        value = payload
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
