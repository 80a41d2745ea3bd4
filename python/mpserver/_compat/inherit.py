"""A process that mpserver starts runs :func:`~mpserver.install` when its parent did.

``install()`` sets :data:`ENV_VAR` in the environment, which every process
started afterwards inherits: worker processes (``_worker.child``) and the
uvicorn processes of ``mpserver.http`` call :func:`inherit` first thing, so
that ``mpservice`` names resolve to mpserver there too.  (The processes the
program itself starts with multiprocessing: ``_compat/spawned.py``.)
"""

from __future__ import annotations

import os

from mpserver._compat import ENV_VAR

__all__ = ['inherit']


def inherit() -> None:
    """Runs ``install()`` in this process if the process that started it had."""
    if os.environ.get(ENV_VAR) == '1':
        # Imported only here: the import hook needs importlib's abstract
        # classes (~13 ms, 29 modules), which a process that does not use
        # the hook should not pay for.
        from mpserver._compat.install import install

        install()
