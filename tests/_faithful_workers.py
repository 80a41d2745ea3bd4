"""Exceptions that do not survive pickling, and the Workers that raise them,
for tests/test_faithful_errors.py.

Worker processes re-import worker classes by module and qualified name, so,
as in ``_backends``, every Worker is defined once per backend on that
backend's ``Worker`` base (at import time, for each backend ``_backends``
could import) and published here as ``<Name>__<backend>``; tests use
``workers_for(backend).Raiser``.  The exception classes are plain
module-level classes, shared by both backends.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types

import _backends


class TwoArgError(Exception):
    """Pickles, but does not unpickle: unpickling calls ``TwoArgError(message)``
    with the one string in ``args``, and ``__init__`` wants two arguments."""

    def __init__(self, a, b):
        super().__init__(f'{a}: {b}')


class LockedError(Exception):
    """Cannot be pickled: it carries a lock."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


class CallbackError(Exception):
    """Cannot be pickled: it carries a lambda."""

    def __init__(self, message):
        super().__init__(message)
        self.retry = lambda: None


class OrdinaryError(Exception):
    """Pickles and unpickles fine (its ``__init__`` takes exactly its ``args``)."""

    def __init__(self, message, code):
        super().__init__(message, code)
        self.code = code


#: The module a Raiser imports from its ``plugin_dir`` for ``call('plugin')``:
#: it is on the worker's sys.path only, so the main process cannot import it.
PLUGIN_MODULE = 'faithful_plugin'
PLUGIN_SOURCE = '''
class PluginError(Exception):
    """Defined in a module that only the worker process can import."""
'''


def raise_plugin_error(plugin_dir):
    if plugin_dir not in sys.path:
        sys.path.insert(0, plugin_dir)
    plugin = importlib.import_module(PLUGIN_MODULE)
    raise plugin.PluginError('the plugin failed')


def _define(Worker) -> dict[str, type]:
    class Raiser(Worker):
        # ``call(kind)`` raises the exception named by ``kind``; any other
        # input is returned as it is.
        def __init__(self, *, plugin_dir=None, **kwargs):
            super().__init__(**kwargs)
            self.plugin_dir = plugin_dir

        def call(self, x):
            if x == 'two-arg':
                raise TwoArgError('the real problem', 'detail')
            if x == 'lock':
                raise LockedError('the real problem, holding a lock')
            if x == 'lambda':
                raise CallbackError('the real problem, with a callback')
            if x == 'plugin':
                raise_plugin_error(self.plugin_dir)
            if x == 'value':
                raise ValueError('an ordinary problem')
            if x == 'ordinary':
                raise OrdinaryError('an ordinary custom problem', 7)
            return x

    class Echo(Worker):
        def call(self, x):
            return x

    class SysExitInInit(Worker):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            sys.exit(4)

        def call(self, x):
            return x

    class InterruptInInit(Worker):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            raise KeyboardInterrupt

        def call(self, x):
            return x

    return {
        name: obj
        for name, obj in locals().items()
        if isinstance(obj, type) and issubclass(obj, Worker) and obj is not Worker
    }


def _register(backend_name: str, Worker) -> types.SimpleNamespace:
    ns = {}
    for short, cls in _define(Worker).items():
        full = f'{short}__{backend_name}'
        cls.__name__ = cls.__qualname__ = full
        cls.__module__ = __name__
        globals()[full] = cls
        ns[short] = cls
    return types.SimpleNamespace(**ns)


# At import time, in the test process and in every worker process alike.
_WORKERS = {name: _register(name, b.Worker) for name, b in _backends.BACKENDS.items() if b is not None}


def workers_for(backend) -> types.SimpleNamespace:
    """The Workers above, on ``backend``'s ``Worker`` base."""
    return _WORKERS[backend.name]
