"""The keywords of ``Server`` that older mpservice releases had (<= 0.12).

They keep working: ``backlog`` (deprecated, the older name of
``capacity``), ``sys_info_log_cadence`` (deprecated there too, no effect)
and ``main_cpu`` (pins the main process).  ``DeprecationWarning``\\ s point at
the caller's line (``stacklevel``: the Server's constructor is one frame
up).
"""

from __future__ import annotations

import warnings

from mpserver._graph.checks import normalize_cpus
from mpserver._wire.errors import ConfigError

__all__ = ['capacity_of', 'main_cpus']


def capacity_of(capacity: int, backlog: int | None, sys_info_log_cadence: int | None) -> int:
    """The capacity to use, after warning about the deprecated keywords given."""
    if backlog is not None:
        warnings.warn(
            'the parameter `backlog` is deprecated (mpservice 0.12.7): use `capacity` instead',
            DeprecationWarning,
            stacklevel=3,
        )
        capacity = backlog
    if sys_info_log_cadence is not None:
        warnings.warn(
            'the parameter `sys_info_log_cadence` is deprecated (mpservice 0.12.1) and has no effect',
            DeprecationWarning,
            stacklevel=3,
        )
    return capacity


def main_cpus(main_cpu: object) -> list[int] | None:
    """The CPUs of the older ``main_cpu`` keyword: None, an int or a list of ints."""
    if main_cpu is None:
        return None
    try:
        cpus = normalize_cpus([main_cpu])[0]
    except ConfigError as e:
        raise ConfigError(f'main_cpu must be a CPU number or a list of them, got {main_cpu!r} ({e})') from None
    return [cpus] if isinstance(cpus, int) else cpus
