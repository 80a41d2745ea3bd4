"""Exceptions that cross process boundaries with their traceback.

A traceback object cannot be pickled, so an exception raised in a worker
process would reach the caller stripped of where it happened.  Wrapping it in
:class:`RemoteException` before pickling keeps the formatted traceback as
text; unpickling gives back an exception of the *original* type whose
``__cause__`` is a :class:`RemoteTraceback` carrying that text.  Callers can
therefore catch worker errors by their usual types and still print where they
came from.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

__all__ = [
    'RemoteException',
    'RemoteTraceback',
    'is_remote_exception',
    'get_remote_traceback',
    'EnsembleError',
]

from ._process import name as _label


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


def _rebuild(exc: BaseException, tb: str) -> BaseException:
    exc.__cause__ = RemoteTraceback(tb)
    return exc


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
    :class:`RemoteTraceback`.  This class is not an exception itself and
    cannot be raised; use its ``exc`` attribute before pickling.
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

    def __reduce__(self) -> tuple[Callable[[BaseException, str], BaseException], tuple[BaseException, str]]:
        return _rebuild, (self.exc, self.tb)


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
