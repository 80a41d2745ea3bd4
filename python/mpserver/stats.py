"""Live statistics of a running server: what :meth:`Server.stats` returns.

A snapshot is a frozen tree of dataclasses taken from the core's shared-memory
counters without stopping anyone::

    from mpserver.stats import rates

    before = server.stats()
    time.sleep(1.0)
    after = server.stats()
    print(after.completed - before.completed, 'requests in the last second')
    for path, r in rates(before, after).items():
        print(path, f'{r.items_out_per_s:.0f}/s', r.service_time and r.service_time.quantile(0.99))

* :class:`ServerStats` — the whole server: requests admitted, rejected, timed
  out, cancelled, completed and late since start, the backlog, the request
  latency histogram, and the root :class:`ServletStats`.
* :class:`ServletStats` — one servlet (``path`` ``"0"``, ``"0.1"``, ...):
  its input queue's depth, items in and out, errors, crashes and restarts of
  its workers, its :class:`WorkerStats` and its member servlets.
* :class:`WorkerStats` — one worker slot: its counts and three
  :class:`Histogram`\\ s (batch sizes, queue wait, service time).
* :func:`rates` — what happened per servlet between two snapshots
  (:class:`Rates`).

Counts are cumulative since the server started; histograms use the fixed
bucket bounds :data:`TIME_BOUNDS` (seconds) and :data:`SIZE_BOUNDS` (items),
the same ones ``mpserver.metrics`` exports to Prometheus.  The counters are
updated without synchronisation: a snapshot taken right after a result
arrived may show the answering worker's ``items_out`` a moment behind (the
request-level counts, ``completed`` and ``latency``, are filed before the
caller wakes).
"""

from __future__ import annotations

from mpserver._observe.stats import (
    SIZE_BOUNDS,
    TIME_BOUNDS,
    Histogram,
    Rates,
    ServerStats,
    ServletStats,
    WorkerStats,
    rates,
)

__all__ = [
    'ServerStats',
    'ServletStats',
    'WorkerStats',
    'Histogram',
    'Rates',
    'rates',
    'TIME_BOUNDS',
    'SIZE_BOUNDS',
]
