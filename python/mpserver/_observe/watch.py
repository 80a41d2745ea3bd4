"""The live view: a table of every servlet and worker, redrawn from snapshots.

:meth:`Server.watch` runs a :class:`Watch` (a daemon thread drawing with
``rich.live.Live``) in the server's own process; ``python -m mpserver top``
draws the same table (:func:`render`) for a server in another process (see
``_cli/top.py``).  Both take a :class:`ServerStats` snapshot per interval and
show rates over the interval (between consecutive snapshots): items in and
out per second, mean batch size and service-time quantiles of the interval,
next to the cumulative errors, crashes and restarts.

Needs ``rich`` (``pip install 'mpserver[view]'``).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import IO

try:
    from rich.console import Console, Group, RenderableType
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the live view (Server.watch, python -m mpserver top) needs rich: pip install 'mpserver[view]' (or rich>=13)"
    ) from e

from mpserver._observe.stats import Histogram, Rates, ServerStats, ServletStats, WorkerStats, rates

__all__ = ['Watch', 'render']

_log = logging.getLogger('mpserver')

_NONE = '–'

#: Columns of the view when it is not drawn on a terminal (nor $COLUMNS set).
WIDE = 160


def _seconds(x: float) -> str:
    if math.isnan(x):
        return _NONE
    if x < 1e-3:
        return f'{x * 1e6:.0f} µs'
    if x < 1.0:
        return f'{x * 1e3:.1f} ms'
    return f'{x:.2f} s'


def _rate(x: float | None) -> str:
    if x is None:
        return _NONE
    return f'{x:,.1f}' if x < 10 else f'{x:,.0f}'


def _bytes(n: int) -> str:
    if n < 1000:
        return f'{n} B'
    x = float(n)
    for unit in ('kB', 'MB', 'GB'):
        x /= 1000
        if x < 1000 or unit == 'GB':
            break
    return f'{x:.1f} {unit}'


def _interval(after: Histogram | None, before: Histogram | None) -> Histogram | None:
    """Observations made between two snapshots (all of them without a first one)."""
    if after is None:
        return None
    return after - before if before is not None else after


def _quantiles(h: Histogram | None) -> tuple[str, str]:
    if h is None or h.count == 0:
        return _NONE, _NONE
    return _seconds(h.quantile(0.5)), _seconds(h.quantile(0.99))


def _mean(h: Histogram | None) -> str:
    return _NONE if h is None or h.count == 0 else f'{h.mean:.1f}'


def _server_line(after: ServerStats, before: ServerStats | None) -> Text:
    lat = _interval(after.latency, before.latency if before is not None else None)
    p50, p99 = _quantiles(lat)
    done = None
    if before is not None:
        done = (after.completed - before.completed) / (after.taken_at - before.taken_at)
    line = Text()
    line.append('backlog ', style='dim')
    line.append(f'{after.backlog}/{after.capacity}')
    line.append('  ·  ', style='dim')
    line.append(_rate(done))
    line.append(' requests/s', style='dim')
    line.append('  ·  latency p50 ', style='dim')
    line.append(p50)
    line.append(' p99 ', style='dim')
    line.append(p99)
    line.append('  ·  ', style='dim')
    line.append(f'{after.completed:,}')
    line.append(' completed', style='dim')
    for name, n in (('rejected', after.rejected), ('timed out', after.timed_out), ('cancelled', after.cancelled)):
        if n:
            line.append(f'  {n:,}', style='yellow')
            line.append(f' {name}', style='dim')
    return line


def _counts(errors: int, crashes: int, restarts: int) -> tuple[Text, Text]:
    err = Text(f'{errors:,}', style='red' if errors else '')
    cr = Text(f'{crashes}/{restarts}', style='red' if crashes else '')
    return err, cr


def _servlet_row(s: ServletStats, r: Rates | None, depth: int) -> list[RenderableType]:
    name = Text('  ' * depth)
    name.append(s.path, style='dim')
    name.append(' ')
    name.append(s.label, style='bold')
    queue = f'{s.queue_depth:,}' + (f' ({_bytes(s.queue_bytes)})' if s.queue_bytes else '')
    rin: float | None = None
    rout: float | None = None
    if r is not None:
        rin, rout, times, sizes = r.items_in_per_s, r.items_out_per_s, r.service_time, r.batch_sizes
    else:  # the first frame: no rates, histograms since start
        times, sizes = s.merged('service_time'), s.merged('batch_sizes')
    p50, p99 = _quantiles(times)
    return [
        name,
        queue,
        _rate(rin),
        _rate(rout),
        f'{s.in_flight:,}',
        _mean(sizes),
        p50,
        p99,
        *_counts(s.errors, s.crashes, s.restarts),
    ]


def _worker_row(w: WorkerStats, old: WorkerStats | None, dt: float | None, depth: int) -> list[RenderableType]:
    name = Text('  ' * depth + '· ')
    name.append(w.name)
    rin = rout = None
    if old is not None and dt:
        rin, rout = (w.items_in - old.items_in) / dt, (w.items_out - old.items_out) / dt
    p50, p99 = _quantiles(_interval(w.service_time, old.service_time if old is not None else None))
    sizes = _interval(w.batch_sizes, old.batch_sizes if old is not None else None)
    return [
        name,
        '',
        _rate(rin),
        _rate(rout),
        f'{w.in_flight:,}',
        _mean(sizes),
        p50,
        p99,
        *_counts(w.errors, w.crashes, w.restarts),
    ]


def render(after: ServerStats, before: ServerStats | None = None, title: str | None = None) -> RenderableType:
    """The view of one snapshot: a line about the server's requests, then a
    table with a row per servlet (indented by depth) and per worker.

    Rates, batch-size means and service-time quantiles are over the interval
    since ``before`` (over the server's life without it; rates need it).
    Errors, crashes and restarts are totals since the server started."""
    dt = after.taken_at - before.taken_at if before is not None else None
    old = {s.path: s for s in before.walk()} if before is not None else {}
    per = rates(before, after) if before is not None and after.taken_at > before.taken_at else {}
    table = Table(box=None, padding=(0, 0, 0, 1), pad_edge=False, header_style='bold', expand=False)
    table.add_column('servlet / worker', overflow='fold')
    for col in ('queue', 'in/s', 'out/s', 'in flight', 'batch', 'p50', 'p99', 'errors', 'crash/rst'):
        table.add_column(col, justify='right', no_wrap=True)

    def add(s: ServletStats, depth: int) -> None:
        p = old.get(s.path)
        table.add_row(*_servlet_row(s, per.get(s.path), depth))
        olds = {w.index: w for w in p.workers} if p is not None else {}
        for w in s.workers:
            table.add_row(*_worker_row(w, olds.get(w.index), dt, depth + 1), style='dim' if not w.items_in else '')
        for c in s.children:
            add(c, depth + 1)

    add(after.servlet, 0)
    parts: list[RenderableType] = []
    if title:
        parts.append(Text(title, style='bold cyan'))
    parts += [_server_line(after, before), table]
    return Group(*parts)


class Watch:
    """A live view of a running server, drawn by a daemon thread.

    Made by :meth:`Server.watch`.  Every ``interval`` seconds the thread takes
    a snapshot and redraws (:func:`render`).  :meth:`stop` draws a last
    frame with the numbers of that moment and ends the view; the server calls
    it first thing when it stops, so the last frame shows everything the
    server did and the terminal is back to normal before the program goes
    on.  Use it as a context manager to stop it at the end of a block.  It
    never raises into the program: a drawing error ends the view (logged at
    DEBUG on the ``mpserver`` logger), and so does a snapshot that fails
    because the server is gone.

    On a terminal the table is redrawn in place.  On anything else (a file,
    ``io.StringIO``, a pipe) nothing is written until the view stops, and
    then the last frame once.
    """

    def __init__(
        self,
        stats: Callable[[], ServerStats],
        interval: float = 1.0,
        *,
        file: IO[str] | None = None,
        title: str | None = None,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
            raise ValueError(f'interval must be a number of seconds > 0, got {interval!r}')
        self._stats = stats
        self._interval = float(interval)
        self._title = title
        # rich resolves a missing file to sys.stdout; the view goes to stderr
        # (like a progress bar), so a program's output stays clean.
        self._console = Console(file=file if file is not None else sys.stderr)
        if not self._console.is_terminal and 'COLUMNS' not in os.environ:
            self._console.width = WIDE  # a file: no screen to fit, labels unfolded
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name='mpserver-watch', daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the view is still being drawn."""
        return self._thread.is_alive()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Draw a last frame and end the view (waits up to ``timeout`` seconds
        for the thread).  Idempotent; safe after the server stopped."""
        self._stopping.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _snapshot(self) -> ServerStats | None:
        try:
            return self._stats()
        except RuntimeError:  # the server stopped
            return None

    def _run(self) -> None:
        try:
            before = self._snapshot()
            if before is None:
                return
            with Live(
                render(before, None, self._title),
                console=self._console,
                auto_refresh=False,
                # The view runs in a thread of someone else's program: it
                # does not swap sys.stdout / sys.stderr under it.
                redirect_stdout=False,
                redirect_stderr=False,
            ) as live:
                while True:
                    stopping = self._stopping.wait(self._interval)
                    after = self._snapshot()
                    if after is None:
                        break
                    live.update(render(after, before, self._title), refresh=True)
                    before = after
                    if stopping:
                        break
        except Exception:  # noqa: BLE001 - the view must never take the program down
            _log.debug('the live view ended by an error', exc_info=True)
