"""``python -m mpserver top``: watch a server running in another process.

The channel
-----------
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
import logging
import os
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _core, _stats

if TYPE_CHECKING:
    import argparse

__all__ = ['announce', 'withdraw', 'directory', 'servers', 'main']

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


def announce(meter: Any, layout: _stats.Layout, capacity: int) -> str | None:
    """Write this server's file; returns its path (for :func:`withdraw`), or
    ``None`` when disabled or the file could not be written (logged)."""
    if os.environ.get('MPSERVER_TOP', '1') == '0':
        return None
    try:
        import json

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
    import json

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


# ----------------------------------------------------------------- attaching


def _open(pid: int, fd: int) -> int:
    """A new fd for the memfd behind fd number ``fd`` of process ``pid``."""
    link = f'/proc/{pid}/fd/{fd}'
    target = os.readlink(link)
    if not target.startswith('/memfd:'):
        raise OSError(f'fd {fd} of process {pid} is {target!r}, not a shared-memory file of mpserver')
    return os.open(link, os.O_RDWR | os.O_CLOEXEC)


def _walk(lay: _stats.Layout) -> Iterator[_stats.Layout]:
    yield lay
    for c in lay.children:
        yield from _walk(c)


class Monitor:
    """Snapshots of an announced server, taken from this process."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self._board = _core.MeterBoard.attach(_open(entry.pid, entry.meter_fd))
        self._layout = _stats.Layout.from_json(entry.layout)
        for node in _walk(self._layout):
            if node.ring_fd >= 0:
                node.ring = _core.Ring.attach(_open(entry.pid, node.ring_fd))

    def stats(self) -> _stats.ServerStats:
        """A snapshot, as :meth:`Server.stats` takes it in the server's process."""
        return _stats.snapshot(self._board, self._layout)

    def title(self) -> str:
        e = self.entry
        up = int(time.time() - e.started)
        h, rest = divmod(up, 3600)
        m, s = divmod(rest, 60)
        uptime = f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'
        return f'pid {e.pid} · server {e.number} · up {uptime} · {_command(e.pid)}'


def _command(pid: int, width: int = 60) -> str:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            argv = f.read().rstrip(b'\0').split(b'\0')
    except OSError:
        return '?'
    text = ' '.join(a.decode(errors='replace') for a in argv)
    return text if len(text) <= width else text[: width - 1] + '…'


# ----------------------------------------------------------------- the command

USAGE = 'python -m mpserver top [PID] [--interval S] [--once]'


def _parser() -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(
        prog='python -m mpserver top',
        description=(
            'Show the live statistics of mpserver servers running in another process of this user: '
            'every servlet and worker, with rates over the refresh interval.  Without PID: the servers '
            'of the only process running any, or a list of those processes.'
        ),
    )
    p.add_argument('pid', nargs='?', type=int, help='the process running the server(s)')
    p.add_argument('--interval', type=float, default=1.0, metavar='S', help='seconds between refreshes (default: 1)')
    p.add_argument('--once', action='store_true', help='print one table (rates over one interval) and exit')
    return p


def main(argv: list[str]) -> int:
    """Runs the command; returns the exit status (0, or 1 when there is no server to show)."""
    args = _parser().parse_args(argv)
    if not args.interval > 0:
        _parser().error(f'--interval must be > 0, got {args.interval}')
    from rich.console import Console

    from ._watch import WIDE

    # Not a terminal (a pipe, a file): wide enough that labels are not folded.
    wide = sys.stdout.isatty() or 'COLUMNS' in os.environ
    console = Console(file=sys.stdout, width=None if wide else WIDE)
    found = servers(args.pid)
    if not found:
        who = f'process {args.pid}' if args.pid is not None else 'any process of this user'
        sys.stderr.write(
            f'python -m mpserver top: no running mpserver server found in {who} '
            f'(servers announce themselves in {directory()}; MPSERVER_TOP=0 turns that off)\n'
        )
        return 1
    pids = sorted({e.pid for e in found})
    if args.pid is None and len(pids) > 1:
        _list(console, found)
        return 0
    monitors = []
    for e in found:
        try:
            monitors.append(Monitor(e))
        except (OSError, RuntimeError) as err:
            sys.stderr.write(f'python -m mpserver top: cannot read server {e.number} of process {e.pid}: {err}\n')
    if not monitors:
        return 1
    if args.once:
        return _once(console, monitors, args.interval)
    return _live(console, monitors, args.interval)


def _list(console: Any, found: list[Entry]) -> None:
    from rich.table import Table

    table = Table(title='running mpserver servers (python -m mpserver top PID)', box=None, title_justify='left')
    for col in ('pid', 'server', 'started', 'servlet', 'command'):
        table.add_column(col, overflow='fold')
    for e in found:
        started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e.started))
        table.add_row(str(e.pid), str(e.number), started, str(e.layout.get('label')), _command(e.pid))
    console.print(table)


def _frames(monitors: list[Monitor], before: dict[str, _stats.ServerStats]) -> Any:
    """The view of every monitored server; ``before`` (by file) holds each
    one's previous snapshot and is updated."""
    from rich.console import Group

    from ._watch import render

    parts = []
    for m in monitors:
        after = m.stats()
        parts.append(render(after, before.get(m.entry.path), m.title()))
        before[m.entry.path] = after
    return Group(*parts)


def _once(console: Any, monitors: list[Monitor], interval: float) -> int:
    before: dict[str, _stats.ServerStats] = {}
    _frames(monitors, before)
    time.sleep(interval)
    console.print(_frames(monitors, before))
    return 0


def _live(console: Any, monitors: list[Monitor], interval: float) -> int:
    from rich.live import Live

    before: dict[str, _stats.ServerStats] = {}
    try:
        with Live(_frames(monitors, before), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                monitors = [m for m in monitors if m.entry.alive]
                if not monitors:
                    break
                live.update(_frames(monitors, before), refresh=True)
    except KeyboardInterrupt:
        return 0
    console.print('the server stopped', style='dim')
    return 0
