"""Prometheus metrics of a running server (``pip install 'mpserver[metrics]'``).

::

    import prometheus_client
    from mpserver import metrics

    with Server(servlet) as server:
        metrics.register(server)            # on prometheus_client.REGISTRY
        prometheus_client.start_http_server(9100)
        ...

:func:`register` adds a *custom collector* to a ``prometheus_client``
registry: nothing is counted in Python on the data path.  Each scrape takes
one :meth:`Server.stats` snapshot (the core's shared-memory counters, see
:mod:`mpserver.stats`) and turns it into metric families, so every number of
one scrape comes from the same instant.  A server that is not running
(before ``with``, after it, or in a forked child) exports nothing, and the
scrape succeeds.

:data:`METRICS` lists every metric, with its type, labels and meaning; the
table in ``docs/monitoring.md`` is the same list (a test holds them, and the
exposition, equal).  Names carry the registry prefix (``mpserver`` unless
given): counters end in ``_total``, time histograms in ``_seconds``, the
batch-size histogram in ``_items``.  Labels:

``servlet``
    The servlet's path in the tree: ``"0"`` is the servlet given to the
    server, ``"0.1"`` its second member, and so on.
``label``
    How errors name the servlet, e.g. ``ProcessServlet(Square)``.
``worker``
    The worker's name, e.g. ``Square-process-0`` (a restarted process keeps
    its slot's name and counts).
``member``
    A switch's member, by path.

A compound servlet's counts are its members' (a sequence takes in what its
first stage takes), so summing a per-servlet metric over all servlets counts
items more than once; sum per-worker metrics instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

try:
    import prometheus_client
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.metrics_core import (
        Metric as Family,
    )
    from prometheus_client.registry import CollectorRegistry
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "mpserver.metrics needs prometheus_client: pip install 'mpserver[metrics]' (or prometheus_client>=0.17)"
    ) from e

from mpserver._observe.stats import Histogram, ServerStats, ServletStats, WorkerStats

__all__ = ['METRICS', 'Metric', 'Collector', 'register', 'unregister', 'families']


class _HasStats(Protocol):
    def stats(self) -> ServerStats: ...


# Scopes: what one sample is about, and the labels that name it.
_LABELS: dict[str, tuple[str, ...]] = {
    'server': (),
    'servlet': ('servlet', 'label'),
    'worker': ('servlet', 'label', 'worker'),
    'ensemble': ('servlet', 'label'),
    'switch': ('servlet', 'label', 'member'),
}


@dataclass(frozen=True)
class Metric:
    """One exported metric (its name without the registry prefix)."""

    name: str
    """E.g. ``requests_completed_total``; exported as ``<prefix>_<name>``."""
    type: str
    """``'counter'``, ``'gauge'`` or ``'histogram'``."""
    scope: str
    """What one sample is about: ``'server'``, ``'servlet'``, ``'worker'``, ``'ensemble'`` or ``'switch'``."""
    help: str
    value: Callable[[Any], Any] = field(repr=False, compare=False)
    """The sample's value (a number, or a :class:`Histogram`) from its scope's object."""

    @property
    def labels(self) -> tuple[str, ...]:
        """The label names of every sample."""
        return _LABELS[self.scope]


def _c(name: str, scope: str, help: str, value: Callable[[Any], Any]) -> Metric:
    return Metric(name, 'counter', scope, help, value)


def _g(name: str, scope: str, help: str, value: Callable[[Any], Any]) -> Metric:
    return Metric(name, 'gauge', scope, help, value)


def _h(name: str, scope: str, help: str, value: Callable[[Any], Any]) -> Metric:
    return Metric(name, 'histogram', scope, help, value)


#: Every metric :func:`register` exports, in exposition order.
METRICS: tuple[Metric, ...] = (
    # The server's requests (ServerStats).
    _c('requests_admitted_total', 'server', 'Requests that got into the backlog.', lambda s: s.admitted),
    _c('requests_rejected_total', 'server', 'Requests refused with ServerBacklogFull.', lambda s: s.rejected),
    _c(
        'requests_timed_out_total',
        'server',
        "Requests whose caller's timeout passed before the result came.",
        lambda s: s.timed_out,
    ),
    _c(
        'requests_cancelled_total',
        'server',
        'Requests given up otherwise (asyncio task cancelled, stream left early, Ctrl-C).',
        lambda s: s.cancelled,
    ),
    _c('requests_completed_total', 'server', 'Results delivered to a waiting caller.', lambda s: s.completed),
    _c('requests_late_total', 'server', 'Results that came after their caller had given up.', lambda s: s.late),
    _g('backlog', 'server', 'Requests admitted and not yet finished.', lambda s: s.backlog),
    _g('capacity', 'server', 'Most requests the server holds at once.', lambda s: s.capacity),
    _h(
        'request_latency_seconds',
        'server',
        "Seconds from a request's admission to its result's arrival.",
        lambda s: s.latency,
    ),
    # Every servlet of the tree (ServletStats).
    _g(
        'servlet_queue_depth',
        'servlet',
        "Items waiting in the servlet's input queue (a sequence: its first stage's).",
        lambda s: s.queue_depth,
    ),
    _g('servlet_queue_bytes', 'servlet', 'Bytes those items take in the queue.', lambda s: s.queue_bytes),
    _c('servlet_items_in_total', 'servlet', 'Items the servlet took in.', lambda s: s.items_in),
    _c('servlet_items_out_total', 'servlet', 'Results and errors the servlet put out.', lambda s: s.items_out),
    _c('servlet_errors_total', 'servlet', "Errors the servlet's workers produced.", lambda s: s.errors),
    _g('servlet_in_flight', 'servlet', 'Items taken in and not yet put out.', lambda s: s.in_flight),
    # Every worker slot (WorkerStats).
    _c('worker_items_in_total', 'worker', 'Items the worker took off its input queue.', lambda w: w.items_in),
    _c('worker_items_out_total', 'worker', 'Results and errors the worker pushed on.', lambda w: w.items_out),
    _c('worker_errors_total', 'worker', "Errors of the worker's own calls.", lambda w: w.errors),
    _c('worker_passed_total', 'worker', 'Upstream errors the worker passed on untouched.', lambda w: w.passed),
    _c(
        'worker_skipped_total',
        'worker',
        'Items not run because their caller had already given up.',
        lambda w: w.skipped,
    ),
    _c('worker_batches_total', 'worker', 'Calls into user code (one item or one batch).', lambda w: w.batches),
    _c('worker_crashes_total', 'worker', 'Deaths of the worker while serving.', lambda w: w.crashes),
    _c('worker_restarts_total', 'worker', 'Replacements started after a crash.', lambda w: w.restarts),
    _c(
        'worker_item_timeout_kills_total',
        'worker',
        'Kills by the item_timeout watchdog (each is also a crash).',
        lambda w: w.killed,
    ),
    _g('worker_in_flight', 'worker', 'Items the worker holds now.', lambda w: w.in_flight),
    _h('worker_batch_size_items', 'worker', 'Items per call into user code.', lambda w: w.batch_sizes),
    _h(
        'worker_queue_wait_seconds',
        'worker',
        'Seconds an item waited in the input queue before the worker took it.',
        lambda w: w.queue_wait,
    ),
    _h(
        'worker_service_time_seconds',
        'worker',
        "Seconds from taking an item to pushing its result (a batch's items count the batch's time).",
        lambda w: w.service_time,
    ),
    # Compound servlets.
    _c('ensemble_routed_total', 'ensemble', 'Items an ensemble fanned out to its members.', lambda s: s.routed),
    _c(
        'ensemble_joined_total',
        'ensemble',
        "Results an ensemble assembled from its members' results.",
        lambda s: s.joined,
    ),
    _c(
        'ensemble_late_total',
        'ensemble',
        "Member results that came after their item's result was sent (fail_fast).",
        lambda s: s.late,
    ),
    _c('switch_routed_total', 'switch', 'Items a switch routed to each member.', lambda n: n),
)

_PREFIX = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*\Z')


def _samples(stats: ServerStats, scope: str) -> Iterator[tuple[list[str], Any]]:
    """(label values, scope object) for every sample of ``scope``."""
    if scope == 'server':
        yield [], stats
        return
    for s in stats.walk():
        if scope == 'servlet':
            yield [s.path, s.label], s
        elif scope == 'worker':
            w: WorkerStats
            for w in s.workers:
                yield [s.path, s.label, w.name], w
        elif scope == 'ensemble':
            if s.joined is not None:
                yield [s.path, s.label], s
        elif scope == 'switch' and s.routed_to:
            c: ServletStats
            for c, n in zip(s.children, s.routed_to, strict=True):
                yield [s.path, s.label, c.path], n


def _le(bound: float) -> str:
    """A bucket's ``le`` label, as Prometheus clients write it."""
    return '+Inf' if math.isinf(bound) else repr(float(bound))


def _family(metric: Metric, prefix: str) -> Family:
    name = f'{prefix}_{metric.name}'
    labels = list(metric.labels)
    if metric.type == 'counter':
        return CounterMetricFamily(name, metric.help, labels=labels)
    if metric.type == 'gauge':
        return GaugeMetricFamily(name, metric.help, labels=labels)
    unit = metric.name.rsplit('_', 1)[1]  # seconds, items
    return HistogramMetricFamily(name, metric.help, labels=labels, unit=unit)


def families(stats: ServerStats, prefix: str = 'mpserver') -> list[Family]:
    """The metric families of one snapshot, one per entry of :data:`METRICS`
    (a family with no sample when nothing in the tree has that scope, e.g.
    the ensemble metrics of a server without an ensemble)."""
    out = []
    for m in METRICS:
        fam = _family(m, prefix)
        for labels, obj in _samples(stats, m.scope):
            v = m.value(obj)
            if isinstance(fam, HistogramMetricFamily):
                assert isinstance(v, Histogram)
                buckets = [(_le(b), float(c)) for b, c in zip(v.bounds, v.cumulative(), strict=True)]
                fam.add_metric(labels, buckets, v.sum)
            else:
                assert isinstance(fam, (CounterMetricFamily, GaugeMetricFamily))
                fam.add_metric(labels, float(v))
        out.append(fam)
    return out


class Collector:
    """The collector :func:`register` puts on a registry: one
    :meth:`Server.stats` snapshot per scrape (``prometheus_client``'s
    collector protocol: :meth:`collect` and :meth:`describe`)."""

    def __init__(self, server: _HasStats, prefix: str = 'mpserver') -> None:
        if not _PREFIX.match(prefix):
            raise ValueError(f'prefix must be a Prometheus metric name, got {prefix!r}')
        self.server = server
        self.prefix = prefix
        self.registry: CollectorRegistry | None = None

    def collect(self) -> Iterable[Family]:
        """The families of a fresh snapshot; nothing if the server is not running."""
        try:
            stats = self.server.stats()
        except RuntimeError:  # not started, stopped, or this is a forked child
            return []
        return families(stats, self.prefix)

    def describe(self) -> Iterable[Family]:
        """The families without samples, whatever the server's state (the
        registry checks names with it, so registering two servers with one
        prefix on one registry fails at once instead of at scrape time)."""
        return [_family(m, self.prefix) for m in METRICS]


def register(server: _HasStats, registry: CollectorRegistry | None = None, *, prefix: str = 'mpserver') -> Collector:
    """Export ``server``'s statistics (a :class:`Server` or an
    :class:`AsyncServer`) on ``registry`` (``prometheus_client.REGISTRY``
    by default), as the metrics :data:`METRICS` lists with names
    ``<prefix>_<name>``.

    Register before or after the server starts: the collector exports what
    the server has while it runs, and nothing otherwise.  Two servers on one
    registry need different prefixes (``ValueError`` from the registry
    otherwise).  Undo with :func:`unregister`."""
    collector = Collector(server, prefix)
    reg = registry if registry is not None else prometheus_client.REGISTRY
    reg.register(collector)
    collector.registry = reg
    return collector


def unregister(collector: Collector) -> None:
    """Remove ``collector`` from the registry :func:`register` put it on."""
    if collector.registry is not None:
        collector.registry.unregister(collector)
        collector.registry = None
