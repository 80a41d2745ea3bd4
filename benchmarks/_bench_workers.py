"""The classes the benchmarks run, defined once per backend.

Worker processes are separate interpreters that receive the worker class by
reference (module + qualified name) and re-import it, so it must live at
module level under a stable name.  The ``_define_*`` functions build each
class on top of one backend's base class; this module runs them for each
backend at import time and publishes the results as ``<Name>__<backend>``
(``Echo__mpservice``, ``Echo__mpserver``, ``Burn__mpserver``, ...), with
``__name__``/``__qualname__``/``__module__`` set so that pickle, and the
re-import in the worker process, find exactly that class.

* ``Echo``: ``call(x) -> x``, the trivial worker of every serving-overhead
  workload (with batching on, ``x`` is a list and comes back as it is).
* ``Burn``: a CPU-bound worker; each call runs ``harness.burn`` for ``loops``
  iterations of pure Python (``loops`` is a constructor argument: the ~1 ms
  item's count, ``harness.burn_loops``, calibrated in the main process) and
  returns the seconds that took (measured in the worker), so the caller can
  tell how busy the workers were.
* ``Parity``: a ``SwitchServlet`` that sends ``x`` to member ``x % 2``.  The
  switch runs in the main process on both backends; it is module-level anyway,
  like the workers.

``bench.py`` and its parts use ``BACKENDS[name]``, ``ECHO[name]``,
``BURN[name]`` and ``PARITY[name]``, never the global names.
"""

from __future__ import annotations

import time
import types

from harness import burn

__all__ = ['BACKENDS', 'BURN', 'ECHO', 'PARITY']


def _define_echo(module: types.ModuleType) -> type:
    class Echo(module.Worker):
        # With batching on, ``x`` is a list and the same list comes back,
        # which is the batched form of the same identity function.
        def call(self, x):
            return x

    return Echo


def _define_burn(module: types.ModuleType) -> type:
    class Burn(module.Worker):
        def __init__(self, *, loops: int, **kwargs):
            super().__init__(**kwargs)
            self.loops = loops

        def call(self, x):
            start = time.perf_counter()
            burn(self.loops)
            return time.perf_counter() - start

    return Burn


def _define_parity(module: types.ModuleType) -> type:
    class Parity(module.SwitchServlet):
        def switch(self, x) -> int:
            return x % 2

    return Parity


def _load_backends() -> dict[str, types.ModuleType]:
    import mpservice.mpserver

    try:
        import mpserver
    except ImportError as e:
        raise ImportError(
            'mpserver is not importable: install it, or run with PYTHONPATH=python from the repository root'
        ) from e
    return {'mpservice': mpservice.mpserver, 'mpserver': mpserver}


def _publish(kind: str, define, backends: dict[str, types.ModuleType]) -> dict[str, type]:
    """Define ``kind`` for every backend as the module-level ``<kind>__<backend>``."""
    classes = {}
    for name, module in backends.items():
        cls = define(module)
        cls.__name__ = cls.__qualname__ = f'{kind}__{name}'
        cls.__module__ = __name__
        globals()[cls.__name__] = cls
        classes[name] = cls
    return classes


BACKENDS: dict[str, types.ModuleType] = _load_backends()
ECHO: dict[str, type] = _publish('Echo', _define_echo, BACKENDS)
BURN: dict[str, type] = _publish('Burn', _define_burn, BACKENDS)
PARITY: dict[str, type] = _publish('Parity', _define_parity, BACKENDS)
