"""Run unchanged ``mpservice.mpserver`` programs on mpserver.

:func:`install` puts an import hook (a :data:`sys.meta_path` finder, at
position 0) in front of the import system.  From then on

- ``import mpservice.mpserver`` gives the :mod:`mpserver` package itself, and
  ``mpservice.mpserver.X`` (a submodule) gives ``mpserver.X`` when mpserver
  has such a module;
- ``import mpservice.multiprocessing.remote_exception`` gives a module holding
  mpserver's :class:`~mpserver.RemoteException`, :class:`~mpserver.RemoteTraceback`,
  :class:`~mpserver.EnsembleError`, :func:`~mpserver.is_remote_exception` and
  :func:`~mpserver.get_remote_traceback` (the names the real module has), plus
  ``_rebuild_exception``, so that exceptions pickled by the real mpservice in
  other processes still unpickle here;
- ``import mpservice.http`` gives :mod:`mpserver.http` (uvicorn serving of an
  ASGI app, same functions); like the real module, it needs uvicorn;
- if mpservice is not installed, ``mpservice`` and ``mpservice.multiprocessing``
  are stub packages (``__version__ == '0.16.8+mpserver'``) that hold only the
  modules above; any other ``mpservice.*`` import fails as usual.

Nothing else changes: when mpservice is installed, its other modules
(``mpservice.multiprocessing``, ``mpservice.streamer``, ...) import and work
as before, using mpserver's ``remote_exception`` module.

``install()`` is idempotent.  It also sets ``MPSERVER_INSTALL=1`` in
:data:`os.environ`; mpserver's worker processes inherit it and install the
hook before they import the main script, so classes defined there see the
same modules as the main process.  And it makes the processes that the
program starts with :mod:`multiprocessing` (``spawn`` and ``forkserver``:
its own processes, a ``ProcessPoolExecutor``, the real
``mpservice.multiprocessing``) install the hook before they import the main
script (see ``_compat/spawned.py``).

``python -m mpserver script.py`` calls it before running the script.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

from mpserver._compat import ENV_VAR
from mpserver._compat.spawned import hook_spawn
from mpserver._wire import remote as _remote

__all__ = ['install']

STUB_VERSION = '0.16.8+mpserver'

_SERVER = 'mpservice.mpserver'
_REMOTE = 'mpservice.multiprocessing.remote_exception'
_HTTP = 'mpservice.http'
_STUBS = ('mpservice', 'mpservice.multiprocessing')


def _remote_exception_module() -> ModuleType:
    """The module served as ``mpservice.multiprocessing.remote_exception``."""
    mod = ModuleType(_REMOTE, "mpserver's remote exceptions, under the name used by mpservice.")
    for name in ('RemoteException', 'RemoteTraceback', 'EnsembleError', 'is_remote_exception', 'get_remote_traceback'):
        setattr(mod, name, getattr(_remote, name))
    mod.__dict__['_rebuild_exception'] = _remote._rebuild  # target of the real module's pickles
    mod.__dict__['__all__'] = ['RemoteException', 'get_remote_traceback', 'is_remote_exception']
    return mod


class _Loader(importlib.abc.Loader):
    """Gives an existing or freshly made module for a spec of :class:`_Finder`."""

    def __init__(self, make: Callable[[], ModuleType]) -> None:
        self._make = make
        self._spec: ModuleSpec | None = None

    def __repr__(self) -> str:
        return 'mpserver.install()'

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        module = self._make()
        # The import system sets ``__spec__`` to the alias' spec; put back a
        # module's own spec (mpserver's) in exec_module.
        self._spec = getattr(module, '__spec__', None)
        return module

    def exec_module(self, module: ModuleType) -> None:
        if self._spec is not None:
            module.__spec__ = self._spec
        if getattr(module, '__mpserver_stub__', False) and module.__name__ == 'mpservice.multiprocessing':
            importlib.import_module(_REMOTE)  # like the real package does


def _stub(name: str) -> Callable[[], ModuleType]:
    def make() -> ModuleType:
        mod = ModuleType(name, f'Stand-in for {name!r} (not installed), made by mpserver.install().')
        # Through __dict__: a ModuleType has no such attributes for the type checker.
        mod.__dict__['__version__'] = STUB_VERSION
        mod.__dict__['__mpserver_stub__'] = True
        return mod

    return make


class _Finder(importlib.abc.MetaPathFinder):
    """Serves the mpservice names that mpserver replaces, and nothing else."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == _SERVER:
            return ModuleSpec(fullname, _Loader(lambda: importlib.import_module('mpserver')))
        if fullname.startswith(_SERVER + '.'):
            target_name = 'mpserver' + fullname[len(_SERVER) :]
            try:
                found = importlib.util.find_spec(target_name)
            except ImportError:
                found = None
            if found is None:
                return None
            return ModuleSpec(fullname, _Loader(lambda: importlib.import_module(target_name)))
        if fullname == _REMOTE:
            return ModuleSpec(fullname, _Loader(_remote_exception_module))
        if fullname == _HTTP:
            return ModuleSpec(fullname, _Loader(lambda: importlib.import_module('mpserver.http')))
        if fullname in _STUBS and not self._found_elsewhere(fullname, path, target):
            return ModuleSpec(fullname, _Loader(_stub(fullname)), is_package=True)
        return None

    def _found_elsewhere(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None) -> bool:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            if finder.find_spec(fullname, path, target) is not None:
                return True
        return False


_finder = _Finder()


def _replace(name: str) -> None:
    """Drop an already imported real ``name`` (and its submodules) and import ours."""
    current = sys.modules.get(name)
    if current is None or current is sys.modules.get('mpserver'):
        return
    if isinstance(getattr(current.__spec__, 'loader', None), _Loader):
        return
    for m in [m for m in sys.modules if m == name or m.startswith(name + '.')]:
        del sys.modules[m]
    parent, _, child = name.rpartition('.')
    module = importlib.import_module(name)
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)


def install() -> None:
    """Make ``mpservice.mpserver``, ``mpservice.multiprocessing.remote_exception``
    and ``mpservice.http`` resolve to mpserver, in this process, in
    mpserver's worker processes and in the processes this program starts with
    :mod:`multiprocessing`.

    Idempotent, and it may run before or after ``mpservice`` is imported.
    The real ``mpservice/__init__.py`` imports ``mpservice.mpserver`` and
    ``mpservice.multiprocessing`` eagerly, so any earlier mpservice import
    has loaded the real modules: install() then *replaces* them, in
    :data:`sys.modules` and as attributes of their parent packages.  Names
    that code had already bound from the real modules (``from
    mpservice.mpserver import Server`` run before install()) keep the real
    objects, so call install() before importing names from them.
    """
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
        _replace(_SERVER)
        _replace(_REMOTE)
        _replace(_HTTP)
    os.environ[ENV_VAR] = '1'
    hook_spawn()
