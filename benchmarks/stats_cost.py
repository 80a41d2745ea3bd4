"""What ``Server.stats()`` costs: a snapshot of a 20-stage tree.

The issue's target is under 1 ms per snapshot for a 20-stage tree, cheap
enough to call every 100 ms without anyone noticing.  A snapshot is one call
into the core that copies every meter record of the tree, then Python builds
the dataclasses.  Measured on an idle server and on one streaming trivial
items through all 20 stages (the workers then compete for the 2 cores).

Run: ``PYTHONPATH=python python benchmarks/stats_cost.py [--stages 20] [--calls 2000]``
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from _bench_workers import ECHO
from mpserver import ProcessServlet, SequentialServlet, Server, ThreadServlet


def measure(server: Server, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        server.stats()
        out.append((time.perf_counter() - t) * 1e6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--stages', type=int, default=20)
    ap.add_argument('--calls', type=int, default=2000)
    args = ap.parse_args()
    # Half process stages, half thread stages, alternating: both kinds of records.
    echo = ECHO['mpserver']
    stages = [ProcessServlet(echo) if i % 2 == 0 else ThreadServlet(echo) for i in range(args.stages)]
    with Server(SequentialServlet(*stages), capacity=1024) as s:
        s.call(1)
        idle = measure(s, args.calls)
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                for _ in s.stream(range(2000)):
                    pass

        t = threading.Thread(target=load)
        t.start()
        time.sleep(0.5)
        busy = measure(s, args.calls)
        stop.set()
        t.join()
        n = sum(1 for _ in s.stats().walk())
    print(f'| stats() of a {args.stages}-stage tree ({n} servlets) | p50 µs | p99 µs |')
    print('|---|---|---|')
    for name, xs in (('idle server', idle), ('while streaming', busy)):
        xs.sort()
        print(f'| {name} | {statistics.median(xs):.0f} | {xs[int(len(xs) * 0.99)]:.0f} |')


if __name__ == '__main__':
    main()
