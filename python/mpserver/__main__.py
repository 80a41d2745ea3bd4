"""``python -m mpserver``: run an mpservice program, unchanged, on mpserver.

::

    python -m mpserver script.py [args...]
    python -m mpserver -m package.module [args...]

work like ``python script.py`` / ``python -m package.module`` (``sys.argv``,
``__name__ == '__main__'``, ``sys.path[0]`` and the exit status are what
Python gives), except that :func:`mpserver.install` runs first: in the
program and in mpserver's worker processes, ``mpservice.mpserver`` is
mpserver and ``mpservice.multiprocessing.remote_exception`` holds mpserver's
remote-exception classes.  Without arguments, or with ``-h``/``--help``, it
prints usage to stderr and exits with status 2.

::

    python -m mpserver top [PID] [--interval S] [--once]

shows the live statistics of servers running in another process (see
``_cli/top.py``).

::

    python -m mpserver serve MODULE:ATTR [--host H] [--port P] [--capacity N] [--timeout S] ...

serves a servlet over HTTP with the native front (see ``_cli/serve.py`` and
``docs/http.md``).  Subcommands take precedence: a script file literally
named ``top`` or ``serve`` runs as ``python -m mpserver ./top``.
"""

from __future__ import annotations

import os
import runpy
import sys

USAGE = """\
usage: python -m mpserver SCRIPT [ARGS...]
       python -m mpserver -m MODULE [ARGS...]
       python -m mpserver top [PID] [--interval S] [--once]
       python -m mpserver serve MODULE:ATTR [--host H] [--port P] [--capacity N] [--timeout S]

Run a program written for mpservice.mpserver on mpserver, unchanged:
'import mpservice.mpserver' gives mpserver (in the program and in its
worker processes), as if the program had called mpserver.install() first.
SCRIPT and MODULE run as in 'python SCRIPT' / 'python -m MODULE'.
'top' shows the live statistics of servers running in another process;
'serve' serves a servlet over HTTP (see 'python -m mpserver serve --help').
(A script named 'top' or 'serve' runs as './top', './serve'.)
"""


def _usage_error(message: str | None = None) -> None:
    if message:
        sys.stderr.write(f'python -m mpserver: {message}\n\n')
    sys.stderr.write(USAGE)
    sys.exit(2)


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ('-h', '--help'):
        _usage_error(None if argv else 'no script or module given')
    first = argv[0]
    if first == 'top':
        from mpserver._cli.top import main as top

        sys.exit(top(argv[1:]))
    if first == 'serve':
        from mpserver._cli.serve import main as serve

        sys.exit(serve(argv[1:]))
    if first.startswith('-m'):
        module = first[2:] or (argv[1] if len(argv) > 1 else '')
        if not module:
            _usage_error('option -m needs a module name')
        args = argv[1:] if first[2:] else argv[2:]
    elif first.startswith('-'):
        _usage_error(f'unknown option {first!r}')

    from mpserver._compat.install import install

    install()
    if first.startswith('-m'):
        # Like ``python -m``: sys.path[0] stays the current directory.
        import importlib.util

        try:
            found = importlib.util.find_spec(module)
        except ImportError:
            found = None
        if found is None:
            sys.stderr.write(f'{sys.executable}: No module named {module}\n')
            sys.exit(1)
        sys.argv = [module, *args]
        runpy.run_module(module, run_name='__main__', alter_sys=True)
        return

    script = first
    if not os.path.exists(script):
        sys.stderr.write(
            f"{sys.executable}: can't open file {os.path.abspath(script)!r}: [Errno 2] No such file or directory\n"
        )
        sys.exit(2)
    sys.argv = list(argv)
    if not getattr(sys.flags, 'safe_path', False):  # -P (Python 3.11+)
        # ``python -m`` put the current directory first; ``python SCRIPT``
        # puts the script's directory there (run_path inserts a directory or
        # zip file itself).
        del sys.path[0]
        if os.path.isfile(script):
            sys.path.insert(0, os.path.dirname(os.path.realpath(script)))
    runpy.run_path(script, run_name='__main__')


if __name__ == '__main__':
    main(sys.argv[1:])
