"""Errors raised by a Server to its callers."""

from __future__ import annotations

import builtins

__all__ = ['ServerBacklogFull', 'TimeoutError', 'WorkerStartupError', 'ConfigError']


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
