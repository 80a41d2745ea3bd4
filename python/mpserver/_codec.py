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
import traceback

from . import _core
from ._remote import RemoteException

FLAG_OBJECT = _core.FLAG_OBJECT
FLAG_ERROR = _core.FLAG_ERROR
FLAG_CONTROL = _core.FLAG_CONTROL

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
    if flags & FLAG_OBJECT:
        value = payload
    else:
        value = _loads(payload)
    if flags & FLAG_ERROR and isinstance(value, RemoteException):
        value = value.exc
    return value


def codec_for(local: bool):
    return ObjectCodec if local else PickleCodec
