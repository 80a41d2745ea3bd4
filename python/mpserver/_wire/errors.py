"""Errors raised by a Server to its callers."""

from __future__ import annotations

import builtins
import os
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ['ServerBacklogFull', 'TimeoutError', 'WorkerStartupError', 'WorkerCrashedError', 'ConfigError']


class TimeoutError(builtins.TimeoutError):
    """A request did not finish within its ``timeout`` (also a builtin ``TimeoutError``)."""


class ServerBacklogFull(RuntimeError):
    """The server holds ``capacity`` requests already; this one was turned away."""

    def __init__(self, n: int, x: float | None = None) -> None:
        super().__init__(n, x)

    def __str__(self) -> str:
        n, x = self.args
        if x is None:
            return (
                f'Server is at capacity with {n} items in proces; '
                'new request is rejected immediately due to back-pressure'
            )
        return (
            f'Server is at capacity with {n} items in proces; new request is rejected after waiting for {x:.3f} seconds'
        )


#: The name of mpservice <= 0.12 (``PipelineFull``, kept "for backward
#: compatibility" until 0.13): the same class.  Not in ``__all__``.
PipelineFull = ServerBacklogFull


class WorkerStartupError(RuntimeError):
    """A worker did not start: its process exited before it reported ready
    (e.g. it could not import its class), or its ``__init__`` raised a
    ``BaseException`` that is not an ``Exception`` (``sys.exit()``,
    ``KeyboardInterrupt``, ...), which is then its ``__cause__``."""


def startup_failure(worker: str, exc: BaseException) -> BaseException:
    """What ``with Server(...)`` raises when the ``__init__`` of ``worker``
    (e.g. ``'worker process Model-process-0 (pid 1234)'``) raised ``exc``.

    An ``Exception`` is raised as it is.  Anything else would end or
    interrupt the main program (``SystemExit`` from ``sys.exit()``,
    ``KeyboardInterrupt``): it becomes a :class:`WorkerStartupError` saying
    which worker did what, e.g. ``worker thread Model-thread-0 called
    sys.exit(4) during start-up``, with ``exc`` (and so the worker's
    traceback) as its cause.
    """
    if isinstance(exc, Exception):
        return exc
    if isinstance(exc, SystemExit):
        what = f'called sys.exit({"" if exc.code is None else repr(exc.code)})'
    else:
        detail = str(exc)
        what = f'raised {type(exc).__qualname__}' + (f' ({detail})' if detail else '')
    err = WorkerStartupError(f'{worker} {what} during start-up')
    err.__cause__ = exc
    return err


class WorkerCrashedError(RuntimeError):
    """The worker holding this item died (killed, segfault, ``os._exit``, out of
    memory, or a ``BaseException`` in a worker thread) before answering it;
    or its servlet has no live worker left.

    Attributes: ``servlet`` (e.g. ``'ProcessServlet(Model)'``), ``worker``
    (the worker's name), ``worker_index``, ``pid`` (``None`` for threads and
    when no worker was involved), ``exit_code`` and ``signal`` (``None`` when
    not applicable).  The server keeps serving: the worker is restarted
    within its servlet's ``max_restarts`` budget.
    """

    def __init__(
        self,
        message: str,
        servlet: str = '',
        worker: str = '',
        worker_index: int | None = None,
        pid: int | None = None,
        exit_code: int | None = None,
        signal: int | None = None,
    ) -> None:
        super().__init__(message, servlet, worker, worker_index, pid, exit_code, signal)
        self.servlet = servlet
        self.worker = worker
        self.worker_index = worker_index
        self.pid = pid
        self.exit_code = exit_code
        self.signal = signal

    def __str__(self) -> str:
        message: str = self.args[0]
        return message


def describe_wait_status(status: int) -> tuple[str, int | None, int | None]:
    """How a process ended, from its raw wait status: ``(text, exit code,
    signal number)``, e.g. ``('was killed by SIGKILL', None, 9)``; a
    negative status (unknown) gives ``('exited', None, None)``."""
    if status >= 0 and os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f'was killed by {signal.Signals(sig).name}', None, sig
        except ValueError:
            return f'was killed by signal {sig}', None, sig
    if status >= 0 and os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        return f'exited with code {code}', code, None
    return 'exited', None, None


def crash_error(payload: Buffer) -> WorkerCrashedError:
    """The WorkerCrashedError for a crash report written by the C++ guardian
    (cpp/guardian.hpp: fields separated by 0x1f — kind, servlet, worker name,
    index, pid, wait status, note), or by a worker for an item it skipped
    because its caller had given up (kind ``dropped``, bindings/ring.cpp)."""
    kind, label, name, index, pid, status, note = bytes(payload).decode('utf-8', 'replace').split('\x1f', 6)
    if kind == 'dropped':  # skipped for a caller who had given up: nobody normally sees it
        return WorkerCrashedError(f'this item {note}')
    if kind == 'servlet':
        return WorkerCrashedError(f'{label} {note}; this item was not processed', label)
    if kind == 'thread':
        return WorkerCrashedError(f'worker thread {name} of {label} {note}', label, name, int(index))
    how, code, sig = describe_wait_status(int(status))
    msg = f'worker process {name} (pid {pid}) of {label} {how}; it {note}'
    return WorkerCrashedError(msg, label, name, int(index), int(pid), code, sig)


class ConfigError(ValueError, AssertionError):
    """An invalid worker or servlet setting.

    It is a ``ValueError`` with a message that says what is wrong, and also an
    ``AssertionError`` because that is what mpservice raised for the same
    mistakes, so existing ``except AssertionError`` code keeps working.
    """


def check_timeout(timeout: object) -> None:
    """Timeouts are seconds: a number > 0."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ConfigError(f'timeout must be a number of seconds > 0, got {timeout!r}')
