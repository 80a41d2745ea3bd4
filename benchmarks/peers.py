"""mpserver next to what Python ships: an ordered parallel map, side by side in one run.

    python benchmarks/peers.py                 # print the table (~4 minutes on 2 cores)
    python benchmarks/peers.py --write         # the same, and write its section of docs/benchmarks.md
    python benchmarks/peers.py --quick         # smaller sizes, one round: a smoke run
    python benchmarks/peers.py --json run.json # also save the raw results
    python benchmarks/peers.py --from-json run.json --write   # publish a saved run

``--write`` also draws ``docs/img/bench_peers.png`` (matplotlib, the
``bench`` extra; ``--no-plots`` skips it).  ``benchmarks/bench.py --write``
runs this script with ``--write`` as its last step.

Every peer gets 2 worker processes (spawned) and returns results in input
order: mpserver (``Server.stream`` into a ``ProcessServlet``, adaptive
chunking), ``multiprocessing.Pool.imap`` (chunksize 1 and 64),
``concurrent.futures.ProcessPoolExecutor.map`` (chunksize 64), joblib (its
default loky backend, ``batch_size='auto'``) and mpservice 0.16.8; and the
*no-IPC ceiling*: 2 plain processes each running the function over its half
of the items, timed from inside (no pickling, no hand-off, no ordering).

Workloads: a trivial ``x * 2``; the ~1 ms pure-Python item of every
benchmark (``harness.burn``, its loop count calibrated by ``harness.burn_loops``);
1 MB payloads (a distinct ``bytes`` object per item, echoed back); one call
at a time (p50/p99 of a blocking call); and a paced load (one call every
1 ms for a few seconds), for which the CPU time per call of the main
process and of the workers is reported.  Each throughput is the median of
``--rounds`` rounds; peers alternate within a round, so a slow phase of the
machine hits them all.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _peer_work as pw  # noqa: E402
import harness  # noqa: E402
import report  # noqa: E402
from harness import median  # noqa: E402

WRITE_COMMAND = 'python benchmarks/peers.py --write'
MB = 1 << 20


def _ctx():
    return multiprocessing.get_context('spawn')


# ---- peers: each returns a function that maps over items, with its pool warm


class _MpserverLike:
    def __init__(self, module, tag: str, cls: str, **kw):
        self.server = module.Server(module.ProcessServlet(getattr(pw, f'{cls}__{tag}'), cpus=[None, None], **kw))
        self.server.__enter__()

    def map(self, items):
        return self.server.stream(items)

    def call(self, x):
        return self.server.call(x)

    def close(self):
        self.server.__exit__(None, None, None)


def mpserver_peer(cls: str, **kw):
    import mpserver

    return _MpserverLike(mpserver, 'mpserver', cls, **kw)


def mpservice_peer(cls: str, **kw):
    import mpservice.mpserver

    return _MpserverLike(mpservice.mpserver, 'mpservice', cls, **kw)


class _PoolPeer:
    def __init__(self, fn, chunksize: int):
        self.pool = _ctx().Pool(2)
        self.fn, self.chunksize = fn, chunksize

    def map(self, items):
        return self.pool.imap(self.fn, items, chunksize=self.chunksize)

    def call(self, x):
        return self.pool.apply(self.fn, (x,))

    def close(self):
        self.pool.terminate()
        self.pool.join()


class _ExecutorPeer:
    def __init__(self, fn, chunksize: int):
        self.ex = concurrent.futures.ProcessPoolExecutor(2, mp_context=_ctx())
        self.fn, self.chunksize = fn, chunksize

    def map(self, items):
        return self.ex.map(self.fn, items, chunksize=self.chunksize)

    def call(self, x):
        return self.ex.submit(self.fn, x).result()

    def close(self):
        self.ex.shutdown()


class _JoblibPeer:
    def __init__(self, fn):
        import joblib

        self.joblib = joblib
        self.parallel = joblib.Parallel(n_jobs=2, return_as='generator')
        self.fn = fn

    def map(self, items):
        d = self.joblib.delayed(self.fn)
        return self.parallel(d(x) for x in items)

    def close(self):
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)


def _fn(kind: str, loops: int):
    return {'trivial': pw.double, 'cpu': functools.partial(pw.burn_item, loops), 'mb': pw.echo}[kind]


def _cls(kind: str) -> tuple[str, dict]:
    return {'trivial': ('Double', {}), 'cpu': ('Burn', {}), 'mb': ('Echo', {})}[kind]


PEERS = ['mpserver', 'Pool.imap c1', 'Pool.imap c64', 'Executor.map c64', 'joblib', 'mpservice']


def make_peer(name: str, kind: str, loops: int):
    fn = _fn(kind, loops)
    cls, kw = _cls(kind)
    if kind == 'cpu':
        kw = {'loops': loops}
    if name == 'mpserver':
        return mpserver_peer(cls, **kw)
    if name == 'mpservice':
        return mpservice_peer(cls, **kw)
    if name == 'Pool.imap c1':
        return _PoolPeer(fn, 1)
    if name == 'Pool.imap c64':
        return _PoolPeer(fn, 64)
    if name == 'Executor.map c64':
        return _ExecutorPeer(fn, 64)
    if name == 'joblib':
        return _JoblibPeer(fn)
    raise ValueError(name)


def _items(kind: str, n: int) -> list:
    if kind == 'mb':
        # A distinct object per item: a chunk's pickle cannot share one.
        return [bytes([i % 256]) * MB for i in range(n)]
    return list(range(n))


def throughput(peer, items) -> float:
    t0 = time.perf_counter()
    n = 0
    for _ in peer.map(items):
        n += 1
    dt = time.perf_counter() - t0
    assert n == len(items)
    return n / dt


def ceiling(kind: str, loops: int, n: int) -> float:
    """Items/s of 2 plain processes, each running its half, timed from inside.

    The sum of the two processes' rates, not ``n`` over the slower one's
    time: on a shared host one core is often slower than the other for a
    while, and a map that hands items to whichever worker is free (every peer
    here) then beats a fixed split — the sum is what both cores could do."""
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=_ctx()) as ex:
        list(ex.map(pw.ceiling, [kind] * 2, [loops] * 2, [100] * 2))  # warm
        secs = list(ex.map(pw.ceiling, [kind] * 2, [loops] * 2, [n // 2] * 2))
    return sum((n // 2) / s for s in secs)


def latency(peer, calls: int) -> tuple[float, float]:
    for i in range(100):
        peer.call(i)
    times = []
    for i in range(calls):
        t0 = time.perf_counter()
        peer.call(i)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6


def _cpu_seconds(pids: list[int]) -> float:
    return sum(harness.cpu_seconds(pid) for pid in pids)


def paced(peer, seconds: float) -> tuple[float, float]:
    """CPU µs per call of (main process, all workers) under one call every 1 ms."""
    me = os.getpid()
    for i in range(200):
        peer.call(i)
    workers = harness.descendants(me)[1:]
    main0, work0 = _cpu_seconds([me]), _cpu_seconds(workers)
    n = int(seconds * 1000)
    start = time.perf_counter()
    for i in range(n):
        peer.call(i)
        target = start + (i + 1) * 1e-3
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    main1, work1 = _cpu_seconds([me]), _cpu_seconds(workers)
    return (main1 - main0) / n * 1e6, (work1 - work0) / n * 1e6


def run(args) -> dict:
    loops = harness.burn_loops()
    n = {'trivial': args.n_trivial, 'cpu': args.n_cpu, 'mb': args.n_mb}
    results: dict[str, dict[str, list[float]]] = {k: {p: [] for p in PEERS} for k in n}
    ceilings: dict[str, list[float]] = {'trivial': [], 'cpu': []}
    for r in range(args.rounds):
        for kind in n:
            items = _items(kind, n[kind])
            for name in PEERS:
                if kind == 'mb' and name == 'Pool.imap c1':
                    continue  # the same as c64 for 1 MB items: pickling dominates
                peer = make_peer(name, kind, loops)
                try:
                    throughput(peer, items[: max(50, len(items) // 20)])  # warm
                    results[kind][name].append(throughput(peer, items))
                finally:
                    peer.close()
                print(f'round {r + 1} {kind:8} {name:18} {results[kind][name][-1]:12,.0f} items/s', flush=True)
                if name == 'mpserver' and kind in ceilings:
                    # Right after mpserver: the machine's speed drifts on a
                    # shared host, and the target is their ratio.
                    ceilings[kind].append(ceiling(kind, loops, n[kind]))
                    print(
                        f'round {r + 1} {kind:8} {"no-IPC ceiling":18} {ceilings[kind][-1]:12,.0f} items/s', flush=True
                    )
    lat: dict[str, tuple[float, float]] = {}
    pace: dict[str, tuple[float, float]] = {}
    for name in ('mpserver', 'Pool.imap c1', 'Executor.map c64', 'mpservice'):
        peer = make_peer(name, 'trivial', loops)
        try:
            lat[name] = latency(peer, args.calls)
            if name in ('mpserver', 'mpservice'):
                pace[name] = paced(peer, args.paced_seconds)
        finally:
            peer.close()
        print(f'latency {name:18} p50 {lat[name][0]:8.1f} us  p99 {lat[name][1]:8.1f} us', flush=True)
    return {'n': n, 'loops': loops, 'results': results, 'ceilings': ceilings, 'latency': lat, 'paced': pace}


def tables(run: dict) -> tuple[str, str]:
    res, ceil = run['results'], run['ceilings']
    names = {
        'trivial': 'trivial `x * 2`, items/s',
        'cpu': '~1 ms pure-Python item, items/s',
        'mb': '1 MB payloads, items/s',
    }
    head = '| workload | ' + ' | '.join(PEERS) + ' | no-IPC ceiling |\n|---|' + '---|' * (len(PEERS) + 1) + '\n'
    rows = []
    for kind, label in names.items():
        cells = [f'{median(res[kind][p]):,.0f}' if res[kind][p] else '—' for p in PEERS]
        c = f'{median(ceil[kind]):,.0f}' if kind in ceil and ceil[kind] else '—'
        rows.append(f'| {label} | ' + ' | '.join(cells) + f' | {c} |')
    lat = run['latency']
    cells = [f'{lat[p][0]:.0f} / {lat[p][1]:.0f}' if p in lat else '—' for p in PEERS]
    rows.append('| one call at a time, p50 / p99 µs | ' + ' | '.join(cells) + ' | — |')
    main = head + '\n'.join(rows) + '\n'

    # The median of the rounds' ratios: each round's pair ran seconds
    # apart at most, so a slow phase of the machine cancels out.
    paired = harness.paired_ratio

    def ratio(kind, a, b):
        return paired(res[kind][a], res[kind][b])

    pace = run['paced']
    targets = [
        ('trivial stream ≥ 1.5× Pool.imap(chunksize=64)', ratio('trivial', 'mpserver', 'Pool.imap c64'), 1.5),
        ('trivial stream ≥ 10× mpservice', ratio('trivial', 'mpserver', 'mpservice'), 10.0),
        (
            '~1 ms stream ≥ 1.0× ProcessPoolExecutor.map(chunksize=64)',
            ratio('cpu', 'mpserver', 'Executor.map c64'),
            1.0,
        ),
        ('~1 ms stream ≥ 0.97 of the no-IPC ceiling', paired(res['cpu']['mpserver'], ceil['cpu']), 0.97),
    ]
    out = ['| target | measured | met |', '|---|---|---|']
    for label, v, bar in targets:
        out.append(f'| {label} | {v:.2f} | {"yes" if v >= bar else "**no**"} |')
    p50, p99 = lat['mpserver']
    out.append(f'| one call at a time: p50 ≤ 10 µs | {p50:.1f} µs | {"yes" if p50 <= 10 else "**no**"} |')
    out.append(f'| one call at a time: p99 ≤ 30 µs | {p99:.1f} µs | {"yes" if p99 <= 30 else "**no**"} |')
    (m_main, m_work), (s_main, s_work) = pace['mpserver'], pace['mpservice']
    ok = m_main + m_work <= s_main + s_work
    out.append(
        f'| paced load (a call every 1 ms): CPU per call ≤ mpservice | mpserver {m_main:.0f} + {m_work:.0f} µs '
        f'(main + workers) vs mpservice {s_main:.0f} + {s_work:.0f} µs | {"yes" if ok else "**no**"} |'
    )
    return main, '\n'.join(out) + '\n'


PLOT_FILE = 'bench_peers.png'
PLOT_KINDS = {'trivial': 'trivial x * 2', 'cpu': '~1 ms pure Python', 'mb': '1 MB payloads'}


def plot(data: dict, outdir: str) -> str:
    """Grouped bars: items/s of every peer per workload (median, min-max
    whiskers over the rounds), the no-IPC ceiling as a dashed line; log scale."""
    panels = []
    for kind, title in PLOT_KINDS.items():
        ceil = data['ceilings'].get(kind)
        bars = [(p, data['results'][kind][p]) for p in PEERS if data['results'][kind][p]]
        panels.append(report.Panel(title, bars, ('no-IPC ceiling', median(ceil)) if ceil else None))
    title = f'Ordered parallel map, 2 worker processes, medians of {data["rounds"]} rounds'
    return report.plot_bars(panels, PEERS, title, 'items/s (log scale)', outdir, PLOT_FILE)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    harness.add_run_options(
        p,
        rounds=3,
        quick_rounds=1,
        quick='smaller sizes (and one round): a smoke run',
        write='write the peers section of docs/benchmarks.md and the plot',
    )
    args = harness.parse_run_options(p)
    scale = 0.2 if args.quick else 1.0
    args.n_trivial = int(300_000 * scale)
    args.n_cpu = int(2000 * scale)
    args.n_mb = int(300 * scale)
    args.calls = int(5000 * scale)
    args.paced_seconds = 3.0 * scale
    if args.from_json:
        data = harness.load_json(args.from_json)
    else:
        data = run(args)
        data.update(rounds=args.rounds, calls=args.calls, paced_seconds=args.paced_seconds, setup=_setup())
    if args.json:
        harness.save_json(args.json, data)
    main_table, target_table = tables(data)
    print()
    print(main_table)
    print(target_table)
    if args.write:
        body = (
            f'<!-- generated by benchmarks/peers.py (regenerate: {WRITE_COMMAND}); edits between the '
            'peers:begin/end markers are overwritten -->\n\n'
            f'{data["setup"]}; 2 worker processes '
            f'for every peer; medians of {data["rounds"]} rounds ({data["n"]["trivial"]:,} trivial items, '
            f'{data["n"]["cpu"]:,} items of ~1 ms ({data["loops"]:,} loops), {data["n"]["mb"]} payloads of 1 MB); '
            f'{data["calls"]:,} single calls; {data["paced_seconds"]:.0f} s of paced calls.  A target ratio '
            "is the median of the rounds' ratios (the ceiling runs right after mpserver in each round).\n\n"
            f'{main_table}\n{target_table}'
        )
        if not args.no_plots:
            plot(data, harness.IMG_DIR)
            body += f'\n![Ordered parallel map: items/s per peer and workload](img/{PLOT_FILE})\n'
        report.replace_region(harness.DOCS_PAGE, 'peers', body, required=True)
    return 0


def _setup() -> str:
    return f'{harness.now()}; {harness.cpu_model()}, {os.cpu_count()} cores, Python {harness.python_version()}'


if __name__ == '__main__':
    sys.exit(main())
