"""The processes a program starts with :mod:`multiprocessing` run ``install()`` too.

mpserver's own children (worker processes, the uvicorn processes of
``mpserver.http``) call ``_compat.inherit.inherit()`` first thing.  The
children of the *program* — multiprocessing's ``spawn`` and ``forkserver``
methods and what is built on them (``ProcessPoolExecutor``, uvicorn's own
workers, the real ``mpservice.multiprocessing``) — run nothing of mpserver's
before they import the program's main module.  For them :func:`hook_spawn`
adds one entry to the *preparation data* that multiprocessing pickles for
every such child: an object whose unpickling, in the child, runs
``install()``.  The child unpickles that data before it calls
``multiprocessing.spawn.prepare``, which imports the main module, so
``mpservice.*`` resolves to mpserver there from the program's first line
on.  (``fork`` children inherit the hook with the parent's memory.)
"""

from __future__ import annotations

import multiprocessing.spawn
import os
from collections.abc import Callable
from typing import Any

__all__ = ['hook_spawn', 'PREPARATION_KEY']

#: The entry of multiprocessing's preparation data that installs the hook in
#: the child (``prepare()`` ignores entries it does not know).
PREPARATION_KEY = 'mpserver_install'

#: The name under which ``ForkServer.ensure_running`` asks for the preparation data.
_FORK_SERVER = 'ignore'

#: The directory that holds the mpserver package (``.../mpserver/..``).
_HOME = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What the child runs when it unpickles a _ChildInstall.  It imports this very
# mpserver (``home`` first on sys.path for that import only, since the child's
# path is not yet the parent's: prepare() sets it later), then installs.
_CHILD_CODE = """\
import sys
sys.path.insert(0, home)
try:
    from mpserver._compat.install import install
finally:
    sys.path.remove(home)
install()
"""


class _ChildInstall:
    """Pickled into the preparation data; unpickled, it has run ``install()``.

    It reduces to ``exec`` of :data:`_CHILD_CODE` — a builtin, which the child
    can call before it can import anything of mpserver's — with its own
    namespace (not the globals of multiprocessing's unpickling frame).
    """

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, dict[str, str]]]:
        return exec, (_CHILD_CODE, {'home': _HOME})


def hook_spawn() -> None:
    """Makes the children of multiprocessing's ``spawn`` and ``forkserver``
    methods run ``install()`` before they import the main module.  Idempotent."""
    original = multiprocessing.spawn.get_preparation_data
    if getattr(original, '__mpserver__', False):
        return

    def get_preparation_data(name: str) -> dict[str, Any]:
        data = original(name)
        data[PREPARATION_KEY] = _ChildInstall()
        if name == _FORK_SERVER:
            # The fork server is a fresh interpreter that reads only a few
            # entries of this data (not ours).  CPython releases newer than
            # 3.13.0 make it import the main script from this path itself,
            # before any child exists and without the hook, and its children
            # would inherit that import.  Without the path it preloads nothing
            # (as 3.13.0 and older do): each child imports the script after
            # installing the hook.
            data.pop('init_main_from_path', None)
        return data

    get_preparation_data.__mpserver__ = True  # type: ignore[attr-defined]
    get_preparation_data.__wrapped__ = original  # type: ignore[attr-defined]
    get_preparation_data.__doc__ = original.__doc__
    multiprocessing.spawn.get_preparation_data = get_preparation_data
