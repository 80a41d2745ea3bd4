"""_core.metrics_text(): the Prometheus exposition of the meters, written in
C++ (cpp/exposition.hpp) for the native HTTP front's GET /metrics, is what
mpserver.metrics.families() gives when prometheus_client writes it — same
families, help, samples, labels and values, byte for byte — and its metrics
table is metrics.METRICS.  mpserver only: mpservice has no meters."""

from __future__ import annotations

import time

import pytest
from _stats_workers import Double, Fails, Parity
from mpserver import (
    EnsembleServlet,
    ProcessServlet,
    SequentialServlet,
    Server,
    ThreadServlet,
    Worker,
    _core,
    metrics,
)
from mpserver._observe import stats as _stats
from mpserver._observe.layout import Layout, WorkerLayout
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families


class Add(Worker):
    def call(self, pair):
        return pair[0] + pair[1]


class _Families:
    """A prometheus_client collector of fixed families (for generate_latest)."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def python_text(board, layout, prefix='mpserver') -> str:
    """What the Python side exposes for the same counters."""
    return generate_latest(_Families(metrics.families(_stats.snapshot(board, layout), prefix))).decode()


def parsed(text: str) -> list:
    """Every family as (name, type, help, [(sample name, labels, value)]), in order."""
    return [
        (f.name, f.type, f.documentation, [(s.name, s.labels, s.value) for s in f.samples])
        for f in text_string_to_metric_families(text)
    ]


def assert_same(cpp: str, py: str) -> None:
    assert parsed(cpp) == parsed(py)
    assert cpp == py  # and byte for byte: order, escaping, float formatting


def idle_text(server, prefix='mpserver', timeout=30.0) -> tuple[str, str]:
    """The C++ and the Python exposition of an idle server: taken when two C++
    scrapes around the Python one agree (a result's last hop is counted just
    after the result is pushed, so counters settle a moment after the call)."""
    run = server._running()
    board, layout = run.meter, run.layout
    deadline = time.monotonic() + timeout
    while True:
        a = _core.metrics_text(board, layout, prefix)
        py = python_text(board, layout, prefix)
        b = _core.metrics_text(board, layout, prefix)
        if (a == b and server.backlog == 0) or time.monotonic() > deadline:
            return b, py
        time.sleep(0.05)


def tree():
    """Process and thread servlets, a sequence, an ensemble and a switch."""
    return SequentialServlet(
        ThreadServlet(Fails),  # odd inputs fail here and are passed on below
        ProcessServlet(Double, cpus=2),
        EnsembleServlet(ThreadServlet(Double), ProcessServlet(Double)),
        ThreadServlet(Add),
        Parity(ThreadServlet(Double), ProcessServlet(Double)),
    )


def test_the_cpp_exposition_is_the_python_one_on_a_live_server():
    n = 200
    with Server(tree(), capacity=64) as server:
        cpp, py = idle_text(server)  # before any traffic: every family, zeros
        assert_same(cpp, py)
        out = list(server.stream(range(n), return_exceptions=True))
        assert sum(isinstance(y, ValueError) for y in out) == n // 2
        cpp, py = idle_text(server)
        assert_same(cpp, py)
        cpp, py = idle_text(server, prefix='svc')
        assert_same(cpp, py)
    fams = {f.name: f for f in text_string_to_metric_families(cpp)}
    assert len(fams) == len(metrics.METRICS)
    completed = [s for s in fams['svc_requests_completed'].samples if s.name == 'svc_requests_completed_total']
    assert [s.value for s in completed] == [n]
    # Every kind of sample is there (this tree has every kind of servlet).
    for m in metrics.METRICS:
        assert fams[f'svc_{m.name.removesuffix("_total")}'].samples, m.name
    assert any(s.value > 0 for s in fams['svc_worker_errors'].samples)
    assert any(s.value > 0 for s in fams['svc_worker_passed'].samples)


def test_metrics_table_is_metrics_METRICS():
    """The C++ table (cpp/exposition.cpp) is a copy of metrics.METRICS; this is its guard."""
    python = [(m.name, m.type, m.scope, m.help) for m in metrics.METRICS]
    cpp = [tuple(row) for row in _core.EXPOSED_METRICS]
    assert cpp == python, 'cpp/exposition.cpp kRows and mpserver.metrics.METRICS differ'


# ----------------------------------------------------------------- a hand-made tree

WEIRD = 'a "quoted" \\ back\nslash'


def hand_made() -> tuple[object, Layout, list]:
    """A board and a layout built by hand: odd names, big counts, every kind of servlet."""
    board = _core.MeterBoard.create(8)
    rings = [_core.Ring.create(1 << 16) for _ in range(4)]
    for _ in range(3):
        rings[2].push(1, int(_core.Flag.RAW), b'x')
    rings[3].push(2, int(_core.Flag.RAW), b'yy')
    w, s = _core.METER_WORDS['worker'], _core.METER_WORDS['server']
    for word, v in ((s['admitted'], 1_234_567), (s['freed'], 1_000_000), (s['capacity'], 10**17), (s['filed'], 7)):
        board.set(0, word, v)
    for record, (i, o, e, p) in {1: (5, 4, 3, 1), 2: (10**6, 10**6, 0, 0), 3: (9, 9, 2, 5)}.items():
        for word, v in zip(('in_', 'out', 'errors', 'passed'), (i, o, e, p), strict=True):
            board.set(record, w[word], v)
    router = _core.METER_WORDS['router']
    for word, v in (('routed', 12), ('joined', 11), ('late', 1)):
        board.set(4, router[word], v)
    L, W = Layout, WorkerLayout
    layout = L(
        '0',
        'SequentialServlet',
        WEIRD,
        children=[
            L('0.0', 'ThreadServlet', f'ThreadServlet({WEIRD})', rings[0], workers=[W(WEIRD, 'thread', 1)]),
            L(
                '0.1',
                'EnsembleServlet',
                'EnsembleServlet',
                rings[1],
                router=4,
                children=[
                    L('0.1.0', 'ProcessServlet', 'ProcessServlet(X)', None, workers=[W('X-process-0', 'process', 2)]),
                    L('0.1.1', 'ThreadServlet', 'ThreadServlet(Y)', None, workers=[W('Y-thread-0', 'thread', 3)]),
                ],
            ),
            L(
                '0.2',
                'Parity',
                'Parity',
                _core.Ring.create(1 << 16),
                children=[
                    L('0.2.0', 'ThreadServlet', 'ThreadServlet(Z)', rings[2], workers=[W('Z-thread-0', 'thread', 5)]),
                    L(
                        '0.2.1',
                        'SequentialServlet',
                        'SequentialServlet',
                        None,
                        children=[L('0.2.1.0', 'T', 'T', rings[3])],
                    ),
                ],
            ),
        ],
    )
    return board, layout, rings


def test_a_hand_made_tree_odd_labels_and_big_counts():
    board, layout, _rings = hand_made()
    cpp = _core.metrics_text(board, layout)
    assert_same(cpp, python_text(board, layout))
    # Label values escaped as the text format wants (\\, \", \n), HELP text too.
    esc = 'a \\"quoted\\" \\\\ back\\nslash'
    assert f'mpserver_servlet_items_in_total{{label="{esc}",servlet="0"}} 5.0\n' in cpp
    assert f'worker="{esc}"' in cpp
    assert 'mpserver_requests_admitted_total 1.234567e+06\n' in cpp  # Go-style exponent from 1e6
    assert 'mpserver_capacity 1e+17\n' in cpp
    assert 'mpserver_backlog 234567.0\n' in cpp
    assert 'mpserver_switch_routed_total{label="Parity",member="0.2.0",servlet="0.2"} 3.0\n' in cpp
    assert 'mpserver_switch_routed_total{label="Parity",member="0.2.1",servlet="0.2"} 1.0\n' in cpp
    assert 'mpserver_request_latency_seconds_bucket{le="2e-06"} 0.0\n' in cpp
    assert 'mpserver_worker_batch_size_items_bucket{label="ProcessServlet(X)",le="1024.0",' in cpp
    # The ring objects live on in the layout only; the exposition holds none after the call.
    assert _core.metrics_text(board, layout) == cpp


def test_a_malformed_layout_is_a_clear_error():
    board, layout, _rings = hand_made()
    L, W = Layout, WorkerLayout
    with pytest.raises(TypeError, match="no attribute 'path'"):
        _core.metrics_text(board, object())
    with pytest.raises(TypeError, match='layout 0: ring must be a _core.Ring'):
        _core.metrics_text(board, L('0', 'ThreadServlet', 'T', 'not a ring'))
    with pytest.raises(TypeError, match='layout 0: label must be a str'):
        _core.metrics_text(board, L('0', 'ThreadServlet', None))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match='worker record must be an int'):
        _core.metrics_text(board, L('0', 'ThreadServlet', 'T', workers=[W('w', 'thread', '1')]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='worker record must be a meter record'):
        _core.metrics_text(board, L('0', 'ThreadServlet', 'T', workers=[W('w', 'thread', -1)]))
    with pytest.raises(IndexError, match=r'servlet 0\.1 \(T\): meter record 99 is not on the board \(8 records\)'):
        _core.metrics_text(board, L('0', 'S', 'S', children=[L('0.1', 'T', 'T', workers=[W('w', 'thread', 99)])]))
    cycle = L('0', 'SequentialServlet', 'S')
    cycle.children.append(cycle)
    with pytest.raises(ValueError, match='a cycle'):
        _core.metrics_text(board, cycle)
    for bad in ('', '1abc', 'a-b', 'a b'):
        with pytest.raises(ValueError, match='prefix'):
            _core.metrics_text(board, layout, bad)
    assert _core.metrics_text(board, layout)  # nothing was harmed
