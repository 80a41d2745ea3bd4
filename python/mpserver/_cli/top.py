"""``python -m mpserver top``: watch a server running in another process.

It finds the servers announced in the channel of ``_observe.announce``, opens
``/proc/<pid>/fd/<fd>`` of each one's meter board and rings (the kernel lets
only the same user, or root, do that), and draws the table of
``_observe.watch`` from their counters.  It reads; it writes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from mpserver import _core
from mpserver._observe import stats as _stats
from mpserver._observe.announce import Entry, directory, servers
from mpserver._observe.layout import Layout
from mpserver._observe.watch import WIDE, render

__all__ = ['main']


# ----------------------------------------------------------------- attaching


def _open(pid: int, fd: int) -> int:
    """A new fd for the memfd behind fd number ``fd`` of process ``pid``."""
    link = f'/proc/{pid}/fd/{fd}'
    target = os.readlink(link)
    if not target.startswith('/memfd:'):
        raise OSError(f'fd {fd} of process {pid} is {target!r}, not a shared-memory file of mpserver')
    return os.open(link, os.O_RDWR | os.O_CLOEXEC)


def _walk(lay: Layout) -> Iterator[Layout]:
    yield lay
    for c in lay.children:
        yield from _walk(c)


class Monitor:
    """Snapshots of an announced server, taken from this process."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self._board = _core.MeterBoard.attach(_open(entry.pid, entry.meter_fd))
        self._layout = Layout.from_json(entry.layout)
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
