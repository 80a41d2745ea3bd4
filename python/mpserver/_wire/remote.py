"""Exceptions that cross process boundaries with their traceback.

A traceback object cannot be pickled, so an exception raised in a worker
process would reach the caller stripped of where it happened.  Wrapping it in
:class:`RemoteException` before pickling keeps the formatted traceback as
text; unpickling gives back an exception of the *original* type whose
``__cause__`` is a :class:`RemoteTraceback` carrying that text.  Callers can
therefore catch worker errors by their usual types and still print where they
came from.

Some exceptions cannot make that trip: one that carries an unpicklable
attribute (a lock, a lambda), one whose ``__init__`` takes other arguments
than its ``args`` (unpickling calls ``cls(*args)``), one whose class the
receiving process cannot import.  The envelope therefore pickles the
exception apart, as bytes, next to its qualified type name, its message and
the traceback text; where it cannot be pickled or re-created, the receiver
gets a :class:`RemoteError` holding that text instead, never the pickling or
unpickling error.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

__all__ = [
    'RemoteError',
    'RemoteException',
    'RemoteTraceback',
    'is_remote_exception',
    'get_remote_traceback',
    'EnsembleError',
]

from mpserver._wire.process import name as _label


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised in another process.

    It is attached as ``__cause__`` of the re-created exception, so Python's
    default error display shows the remote frames above the local ones.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class RemoteError(Exception):
    """An exception raised in another process that could not be re-created here.

    The original exception could not be pickled (e.g. it holds a lock) or not
    unpickled (e.g. its ``__init__`` needs other arguments than its ``args``,
    or its class cannot be imported in this process).  What it said is kept:

    - ``type_name``: the original type, ``module.qualname`` (e.g. ``'app.errors.QuotaError'``);
    - ``message``: ``str()`` of the original exception;
    - ``remote_traceback``: its formatted traceback in the process that raised it;
    - ``reason``: why it could not be re-created, e.g. ``"could not be pickled:
      cannot pickle '_thread.lock' object"``.

    Like a re-created exception, its ``__cause__`` is a :class:`RemoteTraceback`
    of that traceback (so the default display shows the remote frames, and
    :func:`is_remote_exception` is true).  It pickles and unpickles cleanly itself.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str, reason: str) -> None:
        super().__init__(type_name, message, remote_traceback, reason)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback
        self.reason = reason
        self.__cause__ = RemoteTraceback(remote_traceback)

    def __str__(self) -> str:
        return f'{self.type_name}: {self.message} (the original exception {self.reason})'

    def __repr__(self) -> str:
        return f'{type(self).__name__}({str(self)!r})'


def _rebuild(exc: BaseException, tb: str) -> BaseException:
    # Also the target of pickles made by the real mpservice (see ``_compat/install.py``).
    exc.__cause__ = RemoteTraceback(tb)
    return exc


def _restore(data: bytes | None, tb: str, type_name: str, message: str, reason: str) -> BaseException:
    """Unpickles what :meth:`RemoteException.__reduce__` made: the original
    exception (``data`` is its pickle) with the remote traceback as cause; a
    :class:`RemoteError` when ``data`` is ``None`` (``reason`` says why) or
    does not unpickle into an exception here."""
    if data is not None:
        try:
            exc = pickle.loads(data)
        except Exception as e:  # noqa: BLE001 - any failure to re-create it is reported the same way
            reason = f'could not be unpickled here: {type(e).__qualname__}: {e}'
        else:
            if isinstance(exc, BaseException):
                return _rebuild(exc, tb)
            reason = f'unpickled as a {type(exc).__qualname__}, not an exception'
    return RemoteError(type_name, message, tb, reason)


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as e:  # noqa: BLE001 - a broken __str__ must not lose the rest
        return f'<str() failed: {type(e).__qualname__}: {e}>'


def is_remote_exception(e: object) -> bool:
    """True if ``e`` came out of a :class:`RemoteException` (it carries a remote traceback)."""
    return isinstance(e, BaseException) and isinstance(e.__cause__, RemoteTraceback)


def get_remote_traceback(e: BaseException) -> str:
    """The remote traceback text of an exception for which :func:`is_remote_exception` is true."""
    return cast(RemoteTraceback, e.__cause__).tb  # that precondition: the cause is a RemoteTraceback


class RemoteException:
    """Pickling envelope for an exception and its traceback text.

    ``pickle.loads(pickle.dumps(RemoteException(e)))`` is an exception of
    ``type(e)`` (not a ``RemoteException``) whose ``__cause__`` is a
    :class:`RemoteTraceback`; or, if ``e`` cannot be pickled or cannot be
    re-created where it is unpickled, a :class:`RemoteError` with ``e``'s
    type name, message and traceback.  Pickling never fails because of ``e``.
    This class is not an exception itself and cannot be raised; use its
    ``exc`` attribute before pickling.
    """

    def __init__(self, exc: BaseException, tb: TracebackType | str | None = None) -> None:
        if isinstance(tb, TracebackType):
            tb = f'[{_label()}] ' + ''.join(traceback.format_exception(type(exc), exc, tb))
        elif tb is None:
            if exc.__traceback__ is not None:
                tb = f'[{_label()}] ' + ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            elif is_remote_exception(exc):
                tb = get_remote_traceback(exc)
            else:
                raise ValueError(f'{exc!r} carries no traceback to preserve')
        elif not isinstance(tb, str):
            raise TypeError(f'tb must be a traceback, a str or None, not {type(tb).__name__}')
        if isinstance(exc, EnsembleError):
            results = exc.args[1]['y']
            for i, v in enumerate(results):
                if isinstance(v, BaseException):
                    results[i] = RemoteException(v) if _has_tb(v) else v
        self.exc = exc
        self.tb = tb

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.exc!r})'

    def __str__(self) -> str:
        return f"{type(self).__name__}('{self.exc}')"

    def __reduce__(
        self,
    ) -> tuple[Callable[[bytes | None, str, str, str, str], BaseException], tuple[bytes | None, str, str, str, str]]:
        # The exception travels as a pickle of its own, so that the receiver
        # can fall back to the text beside it when that pickle does not load.
        exc = self.exc
        try:
            data: bytes | None = pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
            reason = ''
        except Exception as e:  # noqa: BLE001 - any pickling failure is reported the same way
            data, reason = None, f'could not be pickled: {e}'
        name = f'{type(exc).__module__}.{type(exc).__qualname__}'
        return _restore, (data, self.tb, name, _message(exc), reason)


def _has_tb(e: BaseException) -> bool:
    return e.__traceback__ is not None or is_remote_exception(e)


class EnsembleError(RuntimeError):
    """Raised for an input of an ensemble whose members failed.

    ``args[1]`` is ``{'y': [member results or exceptions], 'n': members finished}``.
    """

    def __init__(self, results: dict[str, Any]) -> None:
        ys = results['y']
        errors = [v for v in ys if isinstance(v, (BaseException, RemoteException))]
        first = repr(errors[0]) if errors else None
        n = len(errors)
        msg = (
            f'{results["n"]}/{len(ys)} ensemble members finished, '
            f'with {n} error{"s" if n > 1 else ""}; first error: {first}'
        )
        super().__init__(msg, results)

    def __str__(self) -> str:
        message: str = self.args[0]
        return message

    def __repr__(self) -> str:
        message: str = self.args[0]
        return message

    def __reduce__(self) -> tuple[type[EnsembleError], tuple[dict[str, Any]]]:
        return type(self), (self.args[1],)
