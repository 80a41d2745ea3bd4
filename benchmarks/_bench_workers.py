"""The Worker class the benchmarks run, defined once per backend.

Worker processes are separate interpreters that receive the worker class by
reference (module + qualified name) and re-import it, so it must live at
module level under a stable name.  ``_define_echo`` builds the class on top of
one backend's ``Worker`` base; this module runs it for each backend at import
time and publishes the result as ``Echo__<backend>`` (``Echo__mpservice``,
``Echo__mpserver``), with ``__name__``/``__qualname__``/``__module__`` set so
that pickle, and the re-import in the worker process, find exactly that class.

``bench.py`` uses ``BACKENDS[name]`` and ``ECHO[name]``, never the global names.
"""

from __future__ import annotations

import types

__all__ = ['BACKENDS', 'ECHO']


def _define_echo(Worker: type) -> type:
    class Echo(Worker):
        # With batching on, ``x`` is a list and the same list comes back,
        # which is the batched form of the same identity function.
        def call(self, x):
            return x

    return Echo


def _load_backends() -> dict[str, types.ModuleType]:
    import mpservice.mpserver

    try:
        import mpserver
    except ImportError as e:
        raise ImportError(
            'mpserver is not importable: install it, or run with PYTHONPATH=python '
            'from the repository root'
        ) from e
    return {'mpservice': mpservice.mpserver, 'mpserver': mpserver}


BACKENDS: dict[str, types.ModuleType] = _load_backends()
ECHO: dict[str, type] = {}

for _name, _module in BACKENDS.items():
    _cls = _define_echo(_module.Worker)
    _cls.__name__ = _cls.__qualname__ = f'Echo__{_name}'
    _cls.__module__ = __name__
    globals()[_cls.__name__] = _cls
    ECHO[_name] = _cls
del _name, _module, _cls
