"""Errors raised by a Server to its callers."""

from __future__ import annotations

import builtins

__all__ = ['ServerBacklogFull', 'TimeoutError', 'WorkerStartupError', 'WorkerCrashedError', 'ConfigError']


class TimeoutError(builtins.TimeoutError):
    """A request did not finish within its ``timeout`` (also a builtin ``TimeoutError``)."""


class ServerBacklogFull(RuntimeError):
    """The server holds ``capacity`` requests already; this one was turned away."""

    def __init__(self, n, x=None):
        super().__init__(n, x)

    def __str__(self):
        n, x = self.args
        if x is None:
            return (
                f'Server is at capacity with {n} items in proces; '
                'new request is rejected immediately due to back-pressure'
            )
        return (
            f'Server is at capacity with {n} items in proces; '
            f'new request is rejected after waiting for {x:.3f} seconds'
        )


class WorkerStartupError(RuntimeError):
    """A worker process exited before it reported ready (e.g. it could not import its class)."""


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

    def __init__(self, message: str, servlet: str = '', worker: str = '', worker_index=None,
                 pid=None, exit_code=None, signal=None):
        super().__init__(message, servlet, worker, worker_index, pid, exit_code, signal)
        self.servlet = servlet
        self.worker = worker
        self.worker_index = worker_index
        self.pid = pid
        self.exit_code = exit_code
        self.signal = signal

    def __str__(self):
        return self.args[0]


def crash_error(payload) -> WorkerCrashedError:
    """The WorkerCrashedError for a crash report written by the C++ guardian
    (fields separated by 0x1f: servlet, worker name, index, pid, wait status, note)."""
    import os
    import signal as _signal

    label, name, index, pid, status, note = bytes(payload).decode('utf-8', 'replace').split('\x1f', 5)
    pid, status = int(pid), int(status)
    if pid <= 0:
        return WorkerCrashedError(f'{label} {note}; this item was not processed', label)
    code = sig = None
    if status >= 0 and os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            how = f'was killed by {_signal.Signals(sig).name}'
        except ValueError:
            how = f'was killed by signal {sig}'
    elif status >= 0 and os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        how = f'exited with code {code}'
    else:
        how = 'exited'
    msg = f'worker process {name} (pid {pid}) of {label} {how}; it {note}'
    return WorkerCrashedError(msg, label, name, int(index), pid, code, sig)


class ConfigError(ValueError, AssertionError):
    """An invalid worker or servlet setting.

    It is a ``ValueError`` with a message that says what is wrong, and also an
    ``AssertionError`` because that is what mpservice raised for the same
    mistakes, so existing ``except AssertionError`` code keeps working.
    """


def check_timeout(timeout) -> None:
    """Timeouts are seconds: a number > 0."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ConfigError(f'timeout must be a number of seconds > 0, got {timeout!r}')
