"""mpserver.metrics: the Prometheus exposition of Server.stats(), checked
exactly against known workloads, and against the metrics table of
docs/monitoring.md (the documentation, metrics.METRICS and what a scrape
shows are one list).  mpserver only: mpservice has no metrics."""

from __future__ import annotations

import asyncio
import math
import os
import re
import threading
import time

import pytest
from mpserver import (
    AsyncServer,
    EnsembleServlet,
    ProcessServlet,
    SequentialServlet,
    Server,
    SwitchServlet,
    ThreadServlet,
    Worker,
    metrics,
)
from mpserver.stats import SIZE_BOUNDS, TIME_BOUNDS
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs', 'monitoring.md')


class Square(Worker):
    def call(self, x):
        return x * x


class Inc(Worker):
    def call(self, x):
        return x + 1


class Add(Worker):
    def call(self, pair):
        return pair[0] + pair[1]


class ByThree(SwitchServlet):
    def switch(self, y):
        return 0 if y % 3 == 0 else 1


def Sum() -> ThreadServlet:
    return ThreadServlet(Add)


def settle(server, n, timeout=30.0):
    """Wait until every servlet has put out ``n`` items: a result's last hop
    is counted just after the result is pushed (see mpserver.stats)."""
    deadline = time.monotonic() + timeout
    while True:
        st = server.stats()
        if all(s.items_out == n for s in st.walk() if s.items_in == n) or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


def scrape(registry) -> dict:
    """``{family name: family}`` of one scrape, parsed back from the text format."""
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def exposed_names(families: dict) -> set[str]:
    """Metric names as written in the exposition (counters with ``_total``)."""
    return {f'{f.name}_total' if f.type == 'counter' else f.name for f in families.values()}


def value(fams, name, **labels) -> float:
    """The one sample ``name`` (as exposed: counters end in ``_total``) with exactly these labels."""
    family = fams[name.removesuffix('_total')]
    found = [s.value for s in family.samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, family.samples)
    return found[0]


def check_histogram(fams, name, labels, count, bounds):
    """Buckets cumulative, one per bound, ending at +Inf == _count == count."""
    samples = [s for s in fams[name].samples if {k: v for k, v in s.labels.items() if k != 'le'} == labels]
    buckets = [s for s in samples if s.name == f'{name}_bucket']
    les = [s.labels['le'] for s in buckets]
    assert les == ['+Inf' if math.isinf(b) else repr(b) for b in bounds]
    values = [s.value for s in buckets]
    assert values == sorted(values), f'{name} buckets are not cumulative: {values}'
    (total,) = [s.value for s in samples if s.name == f'{name}_count']
    assert values[-1] == total == count
    (sum_,) = [s.value for s in samples if s.name == f'{name}_sum']
    assert sum_ >= 0
    return values, sum_


def test_a_scrape_shows_exact_counts_of_a_known_workload():
    n = 300
    registry = CollectorRegistry()
    tree = SequentialServlet(ProcessServlet(Square, cpus=2), ThreadServlet(Inc))
    with Server(tree, capacity=64) as server:
        collector = metrics.register(server, registry)
        assert list(server.stream(range(n))) == [x * x + 1 for x in range(n)]
        st = settle(server, n)
        fams = scrape(registry)
    assert (value(fams, 'mpserver_requests_admitted_total'), value(fams, 'mpserver_requests_completed_total')) == (n, n)
    for name in ('rejected', 'timed_out', 'cancelled', 'late'):
        assert value(fams, f'mpserver_requests_{name}_total') == 0
    assert (value(fams, 'mpserver_backlog'), value(fams, 'mpserver_capacity')) == (0, 64)
    check_histogram(fams, 'mpserver_request_latency_seconds', {}, n, TIME_BOUNDS)

    servlets = {
        '0': 'SequentialServlet',
        '0.0': 'ProcessServlet(Square)',
        '0.1': 'ThreadServlet(Inc)',
    }
    for path, label in servlets.items():
        at = {'servlet': path, 'label': label}
        assert value(fams, 'mpserver_servlet_items_in_total', **at) == n
        assert value(fams, 'mpserver_servlet_items_out_total', **at) == n
        assert value(fams, 'mpserver_servlet_errors_total', **at) == 0
        assert value(fams, 'mpserver_servlet_in_flight', **at) == 0
        assert value(fams, 'mpserver_servlet_queue_depth', **at) == 0

    workers = {s.path: [w.name for w in s.workers] for s in st.walk()}
    assert workers == {'0': [], '0.0': ['Square-process-0', 'Square-process-1'], '0.1': ['Inc-thread-0']}
    for path in ('0.0', '0.1'):
        at = {'servlet': path, 'label': servlets[path]}
        names = workers[path]
        per = {w: value(fams, 'mpserver_worker_items_in_total', worker=w, **at) for w in names}
        assert sum(per.values()) == n
        for w in names:
            wat = dict(at, worker=w)
            assert value(fams, 'mpserver_worker_items_out_total', **wat) == per[w]
            assert value(fams, 'mpserver_worker_batches_total', **wat) == per[w]  # no batching: one item a call
            for name in ('errors', 'passed', 'skipped', 'crashes', 'restarts', 'item_timeout_kills'):
                assert value(fams, f'mpserver_worker_{name}_total', **wat) == 0
            sizes, total = check_histogram(fams, 'mpserver_worker_batch_size_items', wat, per[w], SIZE_BOUNDS)
            assert sizes[0] == per[w] and total == per[w]  # every batch of one item
            check_histogram(fams, 'mpserver_worker_queue_wait_seconds', wat, per[w], TIME_BOUNDS)
            check_histogram(fams, 'mpserver_worker_service_time_seconds', wat, per[w], TIME_BOUNDS)

    # No ensemble or switch here: their families are there, without samples.
    for name in ('ensemble_routed', 'ensemble_joined', 'ensemble_late', 'switch_routed'):
        assert fams[f'mpserver_{name}'].samples == []
    metrics.unregister(collector)
    assert generate_latest(registry) == b''


def test_ensemble_and_switch_count_what_they_route():
    n = 200
    registry = CollectorRegistry()
    tree = SequentialServlet(
        EnsembleServlet(ThreadServlet(Square), ThreadServlet(Inc)),  # [x*x, x+1]
        ThreadServlet(Add),  # y = x*x + x + 1
        ByThree(ThreadServlet(Inc), ThreadServlet(Square)),  # y+1 if 3 divides y, else y*y
    )
    ys = [x * x + x + 1 for x in range(n)]
    with Server(tree) as server:
        metrics.register(server, registry)
        assert list(server.stream(range(n))) == [y + 1 if y % 3 == 0 else y * y for y in ys]
        settle(server, n)
        fams = scrape(registry)
    ens = {'servlet': '0.0', 'label': 'EnsembleServlet'}
    assert value(fams, 'mpserver_ensemble_routed_total', **ens) == n
    assert value(fams, 'mpserver_ensemble_joined_total', **ens) == n
    assert value(fams, 'mpserver_ensemble_late_total', **ens) == 0
    sw = {'servlet': '0.2', 'label': 'ByThree'}
    threes = sum(1 for y in ys if y % 3 == 0)
    assert 0 < threes < n
    assert value(fams, 'mpserver_switch_routed_total', member='0.2.0', **sw) == threes
    assert value(fams, 'mpserver_switch_routed_total', member='0.2.1', **sw) == n - threes
    assert value(fams, 'mpserver_servlet_items_in_total', **sw) == n
    for member, label in (('0.0.0', 'ThreadServlet(Square)'), ('0.0.1', 'ThreadServlet(Inc)')):
        assert value(fams, 'mpserver_servlet_items_in_total', servlet=member, label=label) == n


# ----------------------------------------------------------------- one list


def docs_table() -> dict[str, tuple[str, tuple[str, ...], str]]:
    """The metrics table of docs/monitoring.md: ``{name: (type, labels, meaning)}``."""
    with open(DOCS, encoding='utf-8') as f:
        text = f.read()
    rows = re.findall(r'^\| `(mpserver_\w+)` \| (\w+) \| ([^|]*) \| (.*) \|$', text, re.M)
    assert rows, 'no metrics table found in docs/monitoring.md'
    table = {}
    for name, type_, labels, meaning in rows:
        assert name not in table, f'{name} is twice in the table'
        table[name] = (type_, tuple(re.findall(r'`(\w+)`', labels)), meaning.strip())
    return table


def table_row(m) -> str:
    labels = ', '.join(f'`{x}`' for x in m.labels) or '–'
    return f'| `mpserver_{m.name}` | {m.type} | {labels} | {m.help} |'


def test_the_docs_table_is_metrics_METRICS():
    documented = docs_table()
    listed = {f'mpserver_{m.name}': (m.type, m.labels, m.help) for m in metrics.METRICS}
    assert len(listed) == len(metrics.METRICS), 'a metric is listed twice'
    expected = '\n'.join(table_row(m) for m in metrics.METRICS)
    assert documented == listed, (
        f'docs/monitoring.md and mpserver.metrics.METRICS differ; the rows should be:\n{expected}'
    )
    assert list(documented) == list(listed), 'the table is not in the order of METRICS'


def test_a_scrape_exposes_exactly_the_documented_metrics():
    registry = CollectorRegistry()
    tree = SequentialServlet(
        ProcessServlet(Square),
        EnsembleServlet(ThreadServlet(Inc), ThreadServlet(Inc)),
        Sum(),
        ByThree(ThreadServlet(Inc), ThreadServlet(Inc)),
    )
    with Server(tree) as server:
        metrics.register(server, registry)
        server.call(1)
        fams = scrape(registry)
    documented = docs_table()
    assert exposed_names(fams) == set(documented)
    for name, (type_, labels, _meaning) in documented.items():
        family = fams[name.removesuffix('_total')]
        assert family.type == type_, name
        assert family.samples, f'{name}: no sample (this tree has every kind of servlet)'
        for s in family.samples:
            assert set(s.labels) - {'le'} == set(labels), (name, s.labels)


# ----------------------------------------------------------------- lifecycle


def test_a_server_that_is_not_running_exports_nothing():
    registry = CollectorRegistry()
    server = Server(ThreadServlet(Inc))
    collector = metrics.register(server, registry)  # before start: allowed
    assert generate_latest(registry) == b''
    with server:
        assert server.call(1) == 2
        assert b'mpserver_requests_completed_total 1.0' in generate_latest(registry)
    assert generate_latest(registry) == b''  # stopped: nothing, no exception
    metrics.unregister(collector)
    metrics.unregister(collector)  # twice: nothing happens


def test_async_server():
    registry = CollectorRegistry()

    async def main():
        async with AsyncServer(ThreadServlet(Inc)) as server:
            metrics.register(server, registry, prefix='svc')
            assert [await server.call(x) for x in range(5)] == [1, 2, 3, 4, 5]
            assert server.stats().completed == 5
            return scrape(registry)

    fams = asyncio.run(main())
    assert value(fams, 'svc_requests_completed_total') == 5
    assert value(fams, 'svc_servlet_items_in_total', servlet='0', label='ThreadServlet(Inc)') == 5
    assert generate_latest(registry) == b''


def test_prefixes():
    registry = CollectorRegistry()
    a, b = Server(ThreadServlet(Inc)), Server(ThreadServlet(Inc))
    metrics.register(a, registry)
    with pytest.raises(ValueError, match='Duplicated'):
        metrics.register(b, registry)  # the same names twice
    metrics.register(b, registry, prefix='other')
    with a, b:
        a.call(1)
        b.call(1)
        b.call(2)
        fams = scrape(registry)
    assert value(fams, 'mpserver_requests_completed_total') == 1
    assert value(fams, 'other_requests_completed_total') == 2
    for bad in ('', '1abc', 'a-b', 'a b'):
        with pytest.raises(ValueError, match='prefix'):
            metrics.register(a, registry, prefix=bad)


def test_scrapes_while_the_server_stops_never_fail():
    """A scrape racing the server's shutdown gives a whole snapshot or nothing."""
    registry = CollectorRegistry()
    errors: list[BaseException] = []
    stop = threading.Event()

    def scraper():
        while not stop.is_set():
            try:
                generate_latest(registry)
            except BaseException as e:  # noqa: BLE001 - collected for the assertion
                errors.append(e)

    for _ in range(5):
        server = Server(ThreadServlet(Inc))
        collector = metrics.register(server, registry)
        t = threading.Thread(target=scraper)
        with server:
            t.start()
            list(server.stream(range(50)))
        time.sleep(0.01)
        stop.set()
        t.join()
        stop.clear()
        metrics.unregister(collector)
    assert errors == []
