"""Live statistics of a running server, read from the core's meter board.

The C++ core counts everything on the data path into shared memory
(``cpp/meter.hpp``): each worker counts what it takes and answers, the
collector counts results, routers count what they route, the guardian counts
crashes and restarts.  Nothing here runs per item: :func:`snapshot` copies
the counters out (one crossing into C++ for the whole tree) and builds
:class:`ServerStats`, a frozen tree of dataclasses mirroring the servlet tree.

A server describes its tree once, at start, as a ``layout.Layout`` (which
meter records and which input ring belong to which servlet and worker).
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mpserver import _core
from mpserver._observe.layout import Layout, WorkerLayout

__all__ = [
    'Histogram',
    'WorkerStats',
    'ServletStats',
    'ServerStats',
    'Rates',
    'rates',
]

_W = _core.METER_WORDS
_WORKER, _SERVER, _ROUTER, _KEPT = _W['worker'], _W['server'], _W['router'], _W['kept']
_OWN, _KEPT_AT = 0, 16
_SIZES_AT = 24
_WAITS_AT = _SIZES_AT + _core.SIZE_BUCKETS + 1
_TIMES_AT = _WAITS_AT + _core.TIME_BUCKETS + 1
assert _TIMES_AT + _core.TIME_BUCKETS + 1 == _core.RECORD_WORDS, 'record layout out of step with cpp/meter.hpp'

#: Upper bounds of the time buckets, in seconds (the last bucket is +Inf).
TIME_BOUNDS: tuple[float, ...] = (*(b / 1e9 for b in _core.TIME_BOUNDS_NS), math.inf)
#: Upper bounds of the batch-size buckets, in items (the last bucket is +Inf).
SIZE_BOUNDS: tuple[float, ...] = (*(float(1 << i) for i in range(_core.SIZE_BUCKETS - 1)), math.inf)


@dataclass(frozen=True)
class Histogram:
    """A histogram with fixed buckets, as Prometheus keeps them.

    ``counts[i]`` is the number of observations in bucket ``i``: greater
    than ``bounds[i-1]`` and at most ``bounds[i]`` (the last bound is
    infinity).  ``sum`` is the total of all observations (seconds for times,
    items for batch sizes).
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        """Number of observations."""
        return sum(self.counts)

    @property
    def mean(self) -> float:
        """Mean observation (``nan`` when there is none)."""
        n = self.count
        return self.sum / n if n else math.nan

    def cumulative(self) -> list[int]:
        """Observations at most each bound (Prometheus ``_bucket`` values)."""
        out, acc = [], 0
        for c in self.counts:
            acc += c
            out.append(acc)
        return out

    def quantile(self, q: float) -> float:
        """An estimate of the ``q``-quantile (0 <= q <= 1), interpolated
        linearly inside its bucket; ``nan`` without observations.  Within the
        last (unbounded) bucket the estimate is that bucket's lower bound."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f'quantile must be within [0, 1], got {q!r}')
        n = self.count
        if n == 0:
            return math.nan
        rank = q * n
        cum = self.cumulative()
        i = bisect.bisect_left(cum, rank)
        i = min(i, len(cum) - 1)
        lo = self.bounds[i - 1] if i > 0 else 0.0
        hi = self.bounds[i]
        if math.isinf(hi):
            return lo
        below = cum[i - 1] if i > 0 else 0
        inside = self.counts[i]
        return lo + (hi - lo) * ((rank - below) / inside if inside else 0.0)

    def __sub__(self, other: Histogram) -> Histogram:
        """The observations made between two snapshots."""
        return Histogram(
            self.bounds, tuple(a - b for a, b in zip(self.counts, other.counts, strict=True)), self.sum - other.sum
        )

    def __add__(self, other: Histogram) -> Histogram:
        return Histogram(
            self.bounds, tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)), self.sum + other.sum
        )


def _histogram(words: Sequence[int], at: int, buckets: int, bounds: tuple[float, ...], scale: float) -> Histogram:
    return Histogram(bounds, tuple(words[at : at + buckets]), words[at + buckets] * scale)


@dataclass(frozen=True)
class WorkerStats:
    """What one worker (a process or a thread) of a servlet has done since the
    server started.  A restarted worker process continues its predecessor's
    counts (counts belong to the worker's slot)."""

    name: str
    """The worker's process or thread name, e.g. ``Square-process-0``."""
    index: int
    kind: str
    """``'process'`` or ``'thread'``."""
    pid: int | None
    """The process serving this slot now (``None`` for a thread, or while a dead process is replaced)."""
    items_in: int
    """Items taken off the servlet's input queue (including upstream errors passed on, and skipped items)."""
    items_out: int
    """Results and errors pushed on."""
    errors: int
    """Errors this worker produced (exceptions of ``preprocess``/``call``, undecodable inputs)."""
    passed: int
    """Items that arrived as an upstream error and were passed on untouched."""
    skipped: int
    """Items not run because their caller had already given up."""
    batches: int
    """Calls into user code (one item, or one batch)."""
    crashes: int
    """Deaths of this worker while serving (killed, crashed, stopped by an exception)."""
    restarts: int
    """Replacements started after a crash."""
    killed: int
    """Kills by the ``item_timeout`` watchdog (each also counts as a crash)."""
    batch_sizes: Histogram
    """Items per call into user code."""
    queue_wait: Histogram
    """Seconds an item waited in the input queue before this worker took it."""
    service_time: Histogram
    """Seconds from taking an item to pushing its result (a batch's items all count the batch's time)."""

    @property
    def in_flight(self) -> int:
        """Items this worker holds right now."""
        return max(0, self.items_in - self.items_out)


@dataclass(frozen=True)
class ServletStats:
    """One servlet of the tree.  Counts of a compound servlet are those of its
    members: a sequence takes in what its first stage takes and puts out what
    its last stage puts out; an ensemble or a switch counts at its router."""

    path: str
    """Position in the tree: ``"0"`` (root), ``"0.1"`` (its second member), ..."""
    kind: str
    """The servlet's class name: ``'ProcessServlet'``, ``'SequentialServlet'``, a SwitchServlet subclass's, ..."""
    label: str
    """How errors name the servlet, e.g. ``ProcessServlet(Square)``."""
    queue_depth: int
    """Items waiting in the servlet's input queue now (a sequence: its first stage's)."""
    queue_bytes: int
    """Bytes those items take in the queue's ring."""
    items_in: int
    items_out: int
    errors: int
    crashes: int
    restarts: int
    workers: tuple[WorkerStats, ...] = ()
    children: tuple[ServletStats, ...] = ()
    routed: int | None = None
    """Ensemble: items fanned out to the members.  Switch: items routed to any member."""
    joined: int | None = None
    """Ensemble: results assembled from the members' results."""
    late: int | None = None
    """Ensemble: member results that came after their item's result was sent (``fail_fast``)."""
    routed_to: tuple[int, ...] = ()
    """Switch: items routed to each member (whether or not a worker took them yet), in member order."""

    @property
    def in_flight(self) -> int:
        """Items taken in and not yet answered (inside this servlet's workers or members)."""
        return max(0, self.items_in - self.items_out)

    def merged(self, which: str) -> Histogram | None:
        """A histogram (``'batch_sizes'``, ``'queue_wait'`` or ``'service_time'``)
        summed over this servlet's own workers (``None`` for a compound servlet)."""
        hs = [getattr(w, which) for w in self.workers]
        if not hs:
            return None
        out: Histogram = hs[0]
        for h in hs[1:]:
            out = out + h
        return out

    def walk(self) -> Iterator[ServletStats]:
        """This servlet and every servlet below it, depth first, in member order."""
        yield self
        for c in self.children:
            yield from c.walk()


@dataclass(frozen=True)
class ServerStats:
    """A snapshot of a running server (:meth:`Server.stats`)."""

    taken_at: float
    """``time.monotonic()`` when the snapshot was taken."""
    capacity: int
    backlog: int
    """Requests admitted and not yet finished (as ``Server.backlog``)."""
    admitted: int
    """Requests that got into the backlog."""
    rejected: int
    """Requests refused with :class:`ServerBacklogFull`."""
    timed_out: int
    """Requests whose caller's timeout passed before the result came."""
    cancelled: int
    """Requests given up otherwise: an asyncio task cancelled, a stream left early, Ctrl-C."""
    completed: int
    """Results delivered to a waiting caller."""
    late: int
    """Results that came after their caller had given up."""
    latency: Histogram
    """Seconds from admission to the result's arrival, per delivered request."""
    servlet: ServletStats
    """The root of the servlet tree."""

    def walk(self) -> Iterator[ServletStats]:
        """Every servlet of the tree, depth first."""
        return self.servlet.walk()

    def find(self, path: str) -> ServletStats:
        """The servlet at ``path`` (e.g. ``"0.1"``); raises ``KeyError``."""
        for s in self.walk():
            if s.path == path:
                return s
        raise KeyError(f'no servlet at path {path!r}')


# ----------------------------------------------------------------- snapshot


def snapshot(board: Any, layout: Layout) -> ServerStats:
    """Reads every counter of the server (record 0) and of the tree ``layout``
    describes, in one call into the core, and builds the snapshot."""
    records = [0, *layout.records()]
    words = dict(zip(records, board.read_many(records), strict=True))
    taken = time.monotonic()
    root = _servlet(layout, words)
    s = words[0]
    own = _SERVER
    return ServerStats(
        taken_at=taken,
        capacity=s[own['capacity']],
        backlog=max(0, s[own['admitted']] - s[own['freed']] - s[own['freed_late']]),
        admitted=s[own['admitted']],
        rejected=s[own['rejected']],
        timed_out=s[own['timed_out']],
        cancelled=s[own['cancelled']],
        completed=s[own['filed']],
        late=s[own['late']],
        latency=_histogram(s, _TIMES_AT, _core.TIME_BUCKETS, TIME_BOUNDS, 1e-9),
        servlet=root,
    )


def _worker(w: WorkerLayout, index: int, words: Sequence[int]) -> WorkerStats:
    own, kept = _WORKER, _KEPT
    pid = words[own['pid']]
    return WorkerStats(
        name=w.name,
        index=index,
        kind=w.kind,
        pid=pid or None,
        items_in=words[own['in_']],
        items_out=words[own['out']],
        errors=max(0, words[own['errors']] - words[own['passed']]),
        passed=words[own['passed']],
        skipped=words[own['skipped']],
        batches=words[own['batches']],
        crashes=words[_KEPT_AT + kept['crashes']],
        restarts=words[_KEPT_AT + kept['restarts']],
        killed=words[_KEPT_AT + kept['killed']],
        batch_sizes=_histogram(words, _SIZES_AT, _core.SIZE_BUCKETS, SIZE_BOUNDS, 1.0),
        queue_wait=_histogram(words, _WAITS_AT, _core.TIME_BUCKETS, TIME_BOUNDS, 1e-9),
        service_time=_histogram(words, _TIMES_AT, _core.TIME_BUCKETS, TIME_BOUNDS, 1e-9),
    )


def _entry_ring_pushed(lay: Layout) -> int:
    """Messages ever pushed into the ring where ``lay``'s servlet takes its input."""
    while lay.ring is None and lay.children:  # a sequence: its first stage's
        lay = lay.children[0]
    return int(lay.ring.pushed) if lay.ring is not None else 0


def _servlet(lay: Layout, words: dict[int, Sequence[int]]) -> ServletStats:
    children = tuple(_servlet(c, words) for c in lay.children)
    workers = tuple(_worker(w, i, words[w.record]) for i, w in enumerate(lay.workers))
    ring = lay.ring
    depth = ring.depth if ring is not None else 0
    nbytes = ring.bytes_used if ring is not None else 0
    crashes = sum(w.crashes for w in workers) + sum(c.crashes for c in children)
    restarts = sum(w.restarts for w in workers) + sum(c.restarts for c in children)
    extra: dict[str, Any] = {}
    if workers or not children:
        items_in = sum(w.items_in for w in workers)
        items_out = sum(w.items_out for w in workers)
        errors = sum(w.errors for w in workers)
    elif lay.router is not None:  # an ensemble: counted at its router
        r = words[lay.router]
        routed, joined = r[_ROUTER['routed']], r[_ROUTER['joined']]
        items_in, items_out = routed, joined
        errors = sum(c.errors for c in children)
        extra = {'routed': routed, 'joined': joined, 'late': r[_ROUTER['late']]}
    elif lay.ring is not None:  # a switch: what it pushed into each member's input
        routed_to = tuple(_entry_ring_pushed(c) for c in lay.children)
        items_in = sum(routed_to)
        items_out = sum(c.items_out for c in children)
        errors = sum(c.errors for c in children)
        extra = {'routed': items_in, 'routed_to': routed_to}
    else:  # a sequence
        items_in, items_out = children[0].items_in, children[-1].items_out
        errors = sum(c.errors for c in children)
        depth, nbytes = children[0].queue_depth, children[0].queue_bytes
    return ServletStats(
        path=lay.path,
        kind=lay.kind,
        label=lay.label,
        queue_depth=depth,
        queue_bytes=nbytes,
        items_in=items_in,
        items_out=items_out,
        errors=errors,
        crashes=crashes,
        restarts=restarts,
        workers=workers,
        children=children,
        **extra,
    )


# ----------------------------------------------------------------- rates


@dataclass(frozen=True)
class Rates:
    """What happened to one servlet between two snapshots."""

    path: str
    seconds: float
    items_in_per_s: float
    items_out_per_s: float
    errors_per_s: float
    service_time: Histogram | None
    """Service times observed in the interval (merged over workers; ``None`` for compound servlets)."""
    batch_sizes: Histogram | None
    queue_wait: Histogram | None


def rates(before: ServerStats, after: ServerStats) -> dict[str, Rates]:
    """Per-servlet rates between two snapshots of the same server, keyed by path.

    >>> a = server.stats(); time.sleep(1.0); b = server.stats()
    >>> r = rates(a, b)['0']; r.items_out_per_s, r.service_time.quantile(0.99)
    """
    dt = after.taken_at - before.taken_at
    if dt <= 0:
        raise ValueError('the second snapshot must be taken after the first')
    old = {s.path: s for s in before.walk()}
    out: dict[str, Rates] = {}
    for s in after.walk():
        p = old.get(s.path)
        if p is None:
            continue

        def diff(which: str, s: ServletStats = s, p: ServletStats = p) -> Histogram | None:
            a, b = s.merged(which), p.merged(which)
            return a - b if a is not None and b is not None else None

        out[s.path] = Rates(
            s.path,
            dt,
            (s.items_in - p.items_in) / dt,
            (s.items_out - p.items_out) / dt,
            (s.errors - p.errors) / dt,
            diff('service_time'),
            diff('batch_sizes'),
            diff('queue_wait'),
        )
    return out
