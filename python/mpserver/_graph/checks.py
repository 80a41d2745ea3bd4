"""Checks of servlet settings: worker classes, CPU lists, restart budgets.

Each check raises :class:`ConfigError` with a message that says what is
wrong, at construction, before anything starts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from mpserver._wire.errors import ConfigError
from mpserver._worker.api import Worker

__all__ = ['CpuAffinity', 'check_worker_cls', 'normalize_cpus', 'check_restarts', 'check_count']

#: One worker's CPUs after normalisation: None (no pinning), one CPU, or a sorted list.
Cpus = int | list[int] | None


def check_worker_cls(worker_cls: object) -> None:
    if not (isinstance(worker_cls, type) and issubclass(worker_cls, Worker)):
        raise ConfigError(f'worker_cls must be a subclass of mpserver.Worker, got {worker_cls!r}')


def check_restarts(max_restarts: object, window: object) -> tuple[int, float]:
    """``max_restarts`` (an int >= 0) and ``restart_window`` (seconds > 0)."""
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ConfigError(f'max_restarts must be an int >= 0, got {max_restarts!r}')
    if isinstance(window, bool) or not isinstance(window, (int, float)) or not window > 0:
        raise ConfigError(f'restart_window must be a number of seconds > 0, got {window!r}')
    return max_restarts, float(window)


def check_seconds(name: str, value: object) -> float | None:
    """An optional duration: None (no limit) or a number of seconds > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f'{name} must be None or a number of seconds > 0, got {value!r}')
    return float(value)


def check_count(name: str, value: object, default: int) -> int:
    """An optional count of workers: None (the default) or an int >= 1."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f'{name} must be None or an int >= 1, got {value!r}')
    return value


def normalize_cpus(cpus: object) -> list[Cpus]:
    ncpu = os.cpu_count() or 1

    def check_cpu(c: object, where: str) -> int:
        if isinstance(c, bool) or not isinstance(c, int):
            raise ConfigError(f'cpus: {where} must be an int CPU number, got {c!r}')
        if not 0 <= c < ncpu:
            raise ConfigError(f'cpus: CPU {c} does not exist on this machine (CPUs 0..{ncpu - 1})')
        return c

    if cpus is None:
        return [None]
    if isinstance(cpus, bool):
        raise ConfigError(f'cpus must be None, an int or a list, got {cpus!r}')
    if isinstance(cpus, int):
        if cpus < 1:
            raise ConfigError(f'cpus as a number of workers must be >= 1, got {cpus}')
        return [None] * cpus
    if isinstance(cpus, (str, bytes)) or not isinstance(cpus, Sequence):
        raise ConfigError(f'cpus must be None, an int or a list, got {type(cpus).__name__}')
    if len(cpus) == 0:
        raise ConfigError('cpus must not be an empty list')
    out: list[Cpus] = []
    for i, c in enumerate(cpus):
        if c is None:
            out.append(None)
        elif isinstance(c, int) and not isinstance(c, bool):
            out.append(check_cpu(c, f'entry {i}'))
        elif isinstance(c, CpuAffinity):
            out.append(normalize_cpus([c.target])[0] if c.target is not None else None)
        elif isinstance(c, Sequence) and not isinstance(c, (str, bytes)):
            if len(c) == 0:
                raise ConfigError(f'cpus: entry {i} is an empty list')
            out.append(sorted({check_cpu(v, f'entry {i}') for v in c}))
        else:
            raise ConfigError(f'cpus: entry {i} must be None, an int or a list of ints, got {c!r}')
    return out


class CpuAffinity:
    """The CPUs one worker process is pinned to (older mpservice API).

    ``CpuAffinity(3)``, ``CpuAffinity([0, 1])`` or ``CpuAffinity(None)`` (no
    pinning); accepted wherever an entry of ``ProcessServlet(cpus=[...])`` is.
    """

    def __init__(self, target: int | Sequence[int] | None = None):
        if target is not None and not isinstance(target, int):
            target = list(target)
        self.target = target

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.target!r})'

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CpuAffinity) and other.target == self.target

    def __hash__(self) -> int:
        return hash(repr(self))

    def set(self, *, pid: int = 0) -> None:
        """Pin process ``pid`` (0: this process) to the target CPUs."""
        if self.target is not None:
            os.sched_setaffinity(pid, [self.target] if isinstance(self.target, int) else self.target)

    def get(self, *, pid: int = 0) -> list[int]:
        """The CPUs process ``pid`` (0: this process) may run on now."""
        return sorted(os.sched_getaffinity(pid))
