"""How values travel on the core's rings: the codec.

Between processes a value is a pickle (protocol 5) whose large out-of-band
buffers (numpy arrays, and other objects that pickle their data as a
PickleBuffer) travel beside it: the core copies them once, straight from the
sender's objects into the ring, and the receiver unpickles over one writable
copy (``Flag.OOB``, see cpp/oob_message.hpp).  A value that is exactly
``bytes`` travels as its raw contents (``Flag.RAW``), with no pickling at
all.  Inside the main process (thread workers, the Server's own threads) a
value travels as a reference to the object itself (``Flag.OBJECT``): no
pickling, and objects that cannot be pickled (lambdas, locks, open files)
work, as with mpservice's thread queues.  An exception result carries
``Flag.ERROR``; across processes it is pickled inside a RemoteException so
the caller gets the original type plus the remote traceback, or a
RemoteError with the same type name, message and traceback when the
exception cannot be pickled or re-created (see ``_wire.remote``).

Every encoder returns ``(flags, payload)`` with the message's true flags
(cpp/wire.hpp); the core lays the payload out by those flags and hands the
receiver the matching form (bindings/payload.hpp).
"""

from __future__ import annotations

import pickle
from typing import Any, TypeAlias

from mpserver import _core
from mpserver._wire.errors import crash_error
from mpserver._wire.http_request import decode_request
from mpserver._wire.remote import EnsembleError, RemoteException

# Plain ints of cpp/wire.hpp's flags, for the hot paths (int & int is
# cheaper than int & IntFlag).
FLAG_OBJECT = int(_core.Flag.OBJECT)
FLAG_ERROR = int(_core.Flag.ERROR)
FLAG_CONTROL = int(_core.Flag.CONTROL)
FLAG_ENSEMBLE = int(_core.Flag.ENSEMBLE)
FLAG_CRASH = int(_core.Flag.CRASH)
FLAG_RAW = int(_core.Flag.RAW)
FLAG_OOB = int(_core.Flag.OOB)
FLAG_REQUEST = int(_core.Flag.REQUEST)
FLAG_CHUNK = int(_core.Flag.CHUNK)
_PART_MISSING = _core.PART_MISSING
_composite_parts = _core.composite_parts

_dumps = pickle.dumps
_loads = pickle.loads

#: What every encoder returns: the message's flags and its payload.
Encoded = tuple[int, Any]


def _unraised(exc: BaseException) -> str:
    """The traceback text for an exception made here but never raised: its type and message."""
    return f'{type(exc).__module__}.{type(exc).__qualname__}: {exc}\n'


def _pickle_failure(value: Any, exc: BaseException) -> BaseException:
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


def _pickle(value: Any) -> Encoded:
    """``(flags, payload)`` of ``value`` for another process: ``(Flag.RAW,
    bytes)``, ``(Flag.OOB, (pickle, buffer, ...))`` or ``(0, pickle)``."""
    t = type(value)
    if t is bytes:
        return FLAG_RAW, value
    if t in _SCALARS:
        return 0, _dumps(value, 5)
    buffers: list[pickle.PickleBuffer] = []

    def out_of_band(buf: pickle.PickleBuffer) -> bool:  # a true result keeps buf in-band
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
        return FLAG_OOB, (head, *buffers)
    return 0, head


class PickleCodec:
    """Values cross a process boundary."""

    local = False

    encode = staticmethod(_pickle)

    @staticmethod
    def encode_error(exc: BaseException, tb: str | None = None) -> Encoded:
        """``tb``: traceback text for an exception that was never raised.

        Never fails because of ``exc``: the envelope falls back to a
        RemoteError for an exception that cannot be pickled, and its receiver
        for one that cannot be unpickled there."""
        return FLAG_ERROR, _dumps(RemoteException(exc, tb), 5)

    @staticmethod
    def encode_result(value: Any) -> Encoded:
        """encode(), turning a pickling failure into that item's error."""
        try:
            return _pickle(value)
        except Exception as e:  # noqa: BLE001 - a pickling failure is this item's error
            err = _pickle_failure(value, e)
            return PickleCodec.encode_error(err, _unraised(err))


class ObjectCodec:
    """Values stay inside the main process."""

    local = True

    @staticmethod
    def encode(value: Any) -> Encoded:
        return FLAG_OBJECT, value

    @staticmethod
    def encode_error(exc: BaseException, tb: str | None = None) -> Encoded:
        # The exception object itself, with its live traceback (if any).
        return FLAG_OBJECT | FLAG_ERROR, exc

    encode_result = encode


#: How a producer encodes values for the consumer of one ring.
Codec: TypeAlias = 'type[PickleCodec] | type[ObjectCodec]'


def decode(flags: int, payload: Any) -> Any:
    """The value of a received message; an error message gives the exception object."""
    if not flags:
        return _loads(payload)
    if flags & FLAG_CHUNK:  # an item of a chunk of results, unpickled by the stream window
        if not flags & FLAG_ERROR:
            return payload
        # The item's encoded error, or the exception that unpickling its chunk raised.
        return payload if isinstance(payload, BaseException) else decode(FLAG_ERROR, payload)
    if flags & FLAG_RAW:
        return payload if type(payload) is bytes else bytes(payload)
    if flags & FLAG_ENSEMBLE:
        return _decode_ensemble(flags, payload)
    if flags & FLAG_CRASH:
        return crash_error(payload)
    if flags & FLAG_REQUEST:  # from the native HTTP front, for a route that takes whole requests
        return decode_request(payload)
    if flags & FLAG_OBJECT:
        value = payload
    elif flags & FLAG_OOB:
        # The core hands (pickle, buffer, ...) as writable views of one copy;
        # anything else means the message's layout was corrupt.
        if type(payload) is not tuple:
            raise ValueError('corrupt out-of-band message')
        value = _loads(payload[0], buffers=payload[1:])
    else:
        value = _loads(payload)
    if flags & FLAG_ERROR and isinstance(value, RemoteException):
        value = value.exc
    return value


def codec_for(local: bool) -> Codec:
    return ObjectCodec if local else PickleCodec


def _decode_ensemble(flags: int, payload: Any) -> Any:
    """An ensemble's composite result (built by the C++ EnsembleRouter): the
    list of member results in member order, exceptions in their place; or,
    for a failed item, an :class:`EnsembleError` holding that list.

    ``payload`` is ``(finished, [(part flags, value), ...])`` when parts
    travel by reference, else the composite's bytes, which the core parses
    (``composite_parts``: ValueError if malformed).
    """
    finished, parts = payload if type(payload) is tuple else _composite_parts(payload)
    ys = [None if pflags == _PART_MISSING else _decode_part(pflags, value) for pflags, value in parts]
    if flags & FLAG_ERROR:
        return EnsembleError({'y': ys, 'n': finished})
    return ys


def _decode_part(flags: int, value: Any) -> Any:
    """One member's result in a composite's parsed form."""
    if flags & FLAG_OBJECT:
        if flags & FLAG_ERROR and isinstance(value, RemoteException):
            value = value.exc
        return value
    return decode(flags, value)


def by_reference_composite(flags: int, payload: Any) -> bool:
    """True for an ensemble result whose parts are held by reference (the
    core's ``(finished, parts)`` form): only its decoded value can travel on."""
    return bool(flags & FLAG_ENSEMBLE) and type(payload) is tuple


def pass_error(flags: int, payload: Any, codec: Codec) -> Encoded:
    """An upstream error message, made fit for ``codec``'s consumer: an
    exception held by reference (alone, or inside an ensemble result) is
    re-encoded; anything else passes through untouched."""
    if flags & FLAG_OBJECT and not codec.local:
        return codec.encode_error(payload)
    if by_reference_composite(flags, payload):
        err = decode(flags, payload)  # a fresh EnsembleError, never raised
        return codec.encode_error(err, _unraised(err))
    return flags, payload
