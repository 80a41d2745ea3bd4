"""Load scenarios for mpserver, shared by the test suite (short runs) and the
command line (full runs):

    PYTHONPATH=python python tests/_load.py --seconds 60 --items 1000000

* ``stream_many``: ``items`` inputs streamed through 2 batching worker
  processes; every result must come back once, in order.
* ``mixed``: 32 threads for ``seconds`` mixing ``call``, ``stream``, calls that
  time out and calls turned away by back-pressure, against a small capacity;
  every outcome must be the right one, nothing may hang, and ``backlog`` must
  return to 0.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _backends import get_backend


def stream_many(items: int) -> None:
    b = get_backend('mpserver')
    with b.Server(b.ProcessServlet(b.w.Crash, cpus=2, batch_size=64)) as server:
        expected = 0
        for y in server.stream(range(items)):
            if y != 2 * expected:
                raise AssertionError(f'item {expected}: got {y!r}')
            expected += 1
    if expected != items:
        raise AssertionError(f'{expected} results for {items} items')


def mixed(seconds: float, threads: int = 32, capacity: int = 64) -> dict:
    """Returns counts per outcome; raises AssertionError on any wrong outcome."""
    b = get_backend('mpserver')
    import mpserver

    counts: dict[str, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def count(kind):
        with lock:
            counts[kind] = counts.get(kind, 0) + 1

    def run(seed, server):
        rng = random.Random(seed)
        while time.monotonic() < stop:
            kind = rng.choice(['call', 'call', 'stream', 'timeout', 'full', 'wait'])
            try:
                if kind == 'call':
                    x = rng.randrange(1000)
                    if server.call(x, timeout=60) != 2 * x:
                        errors.append(f'call {x}')
                elif kind == 'stream':
                    xs = [rng.randrange(1000) for _ in range(rng.randrange(1, 60))]
                    if list(server.stream(xs, timeout=60)) != [2 * x for x in xs]:
                        errors.append('stream')
                elif kind == 'timeout':
                    try:
                        server.call(('sleep', 0.3), timeout=0.05)
                        kind = 'timeout-not-hit'  # the item was quick after all: fine
                    except mpserver.TimeoutError:
                        pass
                elif kind == 'full':
                    x = rng.randrange(1000)
                    if server.call(x, backpressure=True, timeout=60) != 2 * x:
                        errors.append(f'full {x}')
                else:
                    x = rng.randrange(1000)
                    if server.call(x, backpressure=False, timeout=60) != 2 * x:
                        errors.append(f'wait {x}')
            except mpserver.ServerBacklogFull as e:
                # call()'s default is backpressure=True: being turned away at
                # capacity is a right outcome, except for callers that wait.
                if kind in ('wait', 'stream'):
                    errors.append(f'{kind}: {e}')
                kind = 'turned-away'
            except Exception as e:  # noqa: BLE001 - anything else is a failure
                errors.append(f'{kind}: {type(e).__name__}: {e}')
            count(kind)

    with b.Server(b.ProcessServlet(b.w.Crash, cpus=2), capacity=capacity) as server:
        ts = [threading.Thread(target=run, args=(i, server), daemon=True) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(seconds + 120)
        if any(t.is_alive() for t in ts):
            raise AssertionError('a caller thread hung')
        deadline = time.monotonic() + 30
        while server.backlog and time.monotonic() < deadline:
            time.sleep(0.05)
        if server.backlog:
            raise AssertionError(f'backlog stuck at {server.backlog}')
    if errors:
        raise AssertionError(f'{len(errors)} wrong outcomes, e.g. {errors[:5]}')
    return counts


def main(argv=None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--seconds', type=float, default=60.0, help='length of the mixed run (default 60)')
    p.add_argument('--items', type=int, default=1_000_000, help='items for the stream run (default 1e6)')
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    stream_many(args.items)
    print(f'stream_many: {args.items} items in order, none lost or duplicated ({time.perf_counter() - t0:.1f} s)')
    print('mixed:', mixed(args.seconds))


if __name__ == '__main__':
    main()
