"""How a running server announces itself to ``python -m mpserver top`` (``_observe.top``).

Every running :class:`Server` announces itself with a small JSON file,
``<dir>/<pid>-<n>.json`` (``n`` counts the servers a process has started),
written when the server starts and removed when it stops.  ``<dir>`` is
``$XDG_RUNTIME_DIR/mpserver`` when ``XDG_RUNTIME_DIR`` is set, else
``/tmp/mpserver-<uid>``; it is created with mode 0700, and a directory that
is not the user's own, or is open to others, is neither written nor read.
The file (mode 0600, written to a temporary name and renamed into place, so
a reader never sees half of it) holds what another process needs to read
the server's counters (``_stats.py``): the fd number of the meter board in
the server's process, the servlet tree as ``Layout.to_json()`` (with each
input ring's fd number), the capacity, when and by which Python and
mpserver it was started, and the process's start time (to tell a reused pid
from the server's).

``top`` opens ``/proc/<pid>/fd/<fd>`` of the board and of each ring: the
kernel lets only the same user (or root) do that, so the channel gives
nobody anything the user's own ptrace rights do not.  The board and the
rings are mapped read-only in spirit: ``top`` reads counters and ring
depths and writes nothing.  A file whose process is gone (killed before it
could clean up) is removed by the next server that starts or ``top`` that
looks; a server still running at interpreter exit withdraws its file then.

``MPSERVER_TOP=0`` in a server's environment stops it from announcing
itself.  Announcing never stops a server from starting: a failure is logged
on the ``mpserver`` logger and the server goes on without it.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import stat
import sys
import time
from dataclasses import dataclass
from typing import Any

from mpserver import _core
from mpserver._observe.layout import Layout

__all__ = ['Entry', 'announce', 'withdraw', 'directory', 'servers']

_log = logging.getLogger('mpserver')

#: Version of the file's contents.
FORMAT = 1

_numbers = itertools.count()
#: Files this process announced and has not withdrawn: path -> pid.
_mine: dict[str, int] = {}


def directory() -> str:
    """Where running servers announce themselves (see the module docstring)."""
    runtime = os.environ.get('XDG_RUNTIME_DIR')
    if runtime:
        return os.path.join(runtime, 'mpserver')
    return os.path.join('/tmp', f'mpserver-{os.getuid()}')


def _safe_directory(path: str, create: bool) -> bool:
    """Whether ``path`` is a directory of this user that nobody else can
    write to or read (made with mode 0700 if missing and ``create``)."""
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        _log.warning(
            '%s is not a private directory of this user (uid %d, mode 0700): '
            'servers are not announced there, and `python -m mpserver top` does not read it',
            path,
            os.getuid(),
        )
        return False
    return True


def _proc_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), ``None`` if it is gone."""
    try:
        with open(f'/proc/{pid}/stat', 'rb') as f:
            data = f.read()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces and parentheses.
    return int(data[data.rindex(b')') + 2 :].split()[19])


# ----------------------------------------------------------------- announcing


def announce(meter: Any, layout: Layout, capacity: int) -> str | None:
    """Write this server's file; returns its path (for :func:`withdraw`), or
    ``None`` when disabled or the file could not be written (logged)."""
    if os.environ.get('MPSERVER_TOP', '1') == '0':
        return None
    try:
        folder = directory()
        if not _safe_directory(folder, create=True):
            return None
        _sweep(folder)
        pid = os.getpid()
        name = f'{pid}-{next(_numbers)}.json'
        entry = {
            'format': FORMAT,
            'pid': pid,
            'proc_start': _proc_start(pid),
            'started': time.time(),
            'capacity': capacity,
            'meter_fd': meter.fd,
            'layout': layout.to_json(),
            'python': sys.version.split()[0],
            'mpserver': _core.__version__,
        }
        path = os.path.join(folder, name)
        tmp = os.path.join(folder, f'.{name}.tmp')
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, 'w', encoding='utf-8') as f:
                json.dump(entry, f)
            os.rename(tmp, path)
        except BaseException:
            _unlink(tmp)
            raise
        if not _mine:
            atexit.register(_withdraw_at_exit)
        _mine[path] = pid
        return path
    except OSError as e:
        _log.debug('this server is not announced to `python -m mpserver top`: %s', e)
    except Exception:  # noqa: BLE001 - announcing must never stop a server from starting
        _log.warning('this server is not announced to `python -m mpserver top`', exc_info=True)
    return None


def withdraw(path: str | None) -> None:
    """Remove the file :func:`announce` wrote (never raises)."""
    if path is not None:
        _mine.pop(path, None)
        _unlink(path)


def _withdraw_at_exit() -> None:
    # A server still running when the interpreter exits (never left its
    # ``with``) is gone all the same.  A forked child inherits this handler
    # and the parent's paths: it removes only files of its own pid.
    for path, pid in list(_mine.items()):
        if pid == os.getpid():
            withdraw(path)


def _sweep(folder: str) -> None:
    """Remove the files of processes that are gone (killed before they could
    withdraw), so that the directory does not fill up between runs of ``top``.
    By name alone: a reused pid is told apart by ``servers()``."""
    for name in os.listdir(folder):
        pid = name.lstrip('.').split('-', 1)[0]
        if pid.isdigit() and not os.path.exists(f'/proc/{pid}'):
            _unlink(os.path.join(folder, name))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# ----------------------------------------------------------------- finding


@dataclass
class Entry:
    """One announced server, as its file says."""

    path: str
    pid: int
    number: int
    started: float
    capacity: int
    meter_fd: int
    layout: dict[str, Any]
    mpserver: str

    @property
    def alive(self) -> bool:
        """Whether the file is still there (the server has not stopped)."""
        return os.path.exists(self.path)


def servers(pid: int | None = None) -> list[Entry]:
    """The servers announced in :func:`directory` (of process ``pid`` only,
    if given), oldest first.  Files of dead processes are removed."""
    folder = directory()
    if not os.path.isdir(folder) or not _safe_directory(folder, create=False):
        return []
    out = []
    for name in os.listdir(folder):
        if not name.endswith('.json') or name.startswith('.'):
            continue
        path = os.path.join(folder, name)
        try:
            with open(path, encoding='utf-8') as f:
                d = json.load(f)
            if d.get('format') != FORMAT:
                _log.debug('%s: a file of another format (%r), skipped', path, d.get('format'))
                continue
            number = int(name[:-5].rsplit('-', 1)[1])
            e = Entry(
                path, int(d['pid']), number, d['started'], d['capacity'], d['meter_fd'], d['layout'], d['mpserver']
            )
            stale = _proc_start(e.pid) != d['proc_start']
        except FileNotFoundError:  # the server stopped meanwhile
            continue
        except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
            _log.debug('%s: unreadable, skipped (%s)', path, err)
            continue
        if stale:  # the process is gone (or its pid was reused)
            _unlink(path)
            continue
        if pid is None or e.pid == pid:
            out.append(e)
    out.sort(key=lambda e: (e.started, e.pid, e.number))
    return out
