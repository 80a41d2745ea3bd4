"""The work of benchmarks/peers.py, at module level so that every peer's worker
processes can import it: plain functions for the standard library's pools and
joblib, Worker classes for mpserver and mpservice (one per backend, built on
each backend's own ``Worker``)."""

from __future__ import annotations

import time

from harness import burn

__all__ = ['burn_item', 'double', 'echo', 'ceiling', 'worker_classes']


def double(x):
    return x * 2


def burn_item(loops, x):
    """The ~1 ms item (``loops`` from ``harness.burn_loops``); returns ``x``."""
    burn(loops)
    return x


def echo(x):
    return x


def ceiling(kind, loops, items):
    """The no-IPC ceiling: run the work over ``items`` inputs right here; the
    seconds it took, measured inside the process."""
    t0 = time.perf_counter()
    if kind == 'trivial':
        for x in range(items):
            double(x)
    else:
        for x in range(items):
            burn_item(loops, x)
    return time.perf_counter() - t0


def worker_classes(module):
    """(Double, Burn, Echo) Worker classes on ``module.Worker`` (mpserver or mpservice.mpserver)."""

    class Double(module.Worker):
        def call(self, x):
            return x * 2

    class Burn(module.Worker):
        def __init__(self, *, loops, **kwargs):
            super().__init__(**kwargs)
            self.loops = loops

        def call(self, x):
            burn(self.loops)
            return x

    class Echo(module.Worker):
        def call(self, x):
            return x

    return Double, Burn, Echo


def _publish():
    import mpserver
    import mpservice.mpserver

    for tag, mod in (('mpserver', mpserver), ('mpservice', mpservice.mpserver)):
        for cls in worker_classes(mod):
            name = f'{cls.__name__}__{tag}'
            cls.__name__ = cls.__qualname__ = name
            cls.__module__ = __name__
            globals()[name] = cls


_publish()
