"""Main-process memory over a long stream: RSS sampled while 1,000,000 items stream.

    PYTHONPATH=python python benchmarks/rss.py [--backend mpserver] [--items N] [--every K] [--json]

Streams ``range(items)`` of small ints through ``Server(ProcessServlet(Echo,
cpus=2, batch_size=64))`` and reads the main process's resident set size
(``VmRSS``, and its ``RssAnon`` and ``RssShmem`` parts, from
``/proc/self/status``) once the server is up and after a short warm-up
stream, then every ``every`` results.  A serving path that keeps
something per item (a ledger entry, a future, a cached buffer) shows up as a
steady climb; a flat line means the memory per item in flight is recycled.

``bench.py --write`` (or ``bench.py --rss``) runs this script in a fresh
interpreter per backend, so the figures are not mixed with what other
workloads left behind, and reads its ``--json`` output.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time

from _bench_workers import BACKENDS, ECHO

ITEMS = 1_000_000
EVERY = 100_000
CPUS = 2
BATCH_SIZE = 64
WARMUP_ITEMS = 1_000


#: Fields of /proc/self/status that are sampled, in kB there, reported in MB.
FIELDS = ('VmRSS', 'RssAnon', 'RssShmem')


def memory_mb() -> list[float]:
    """This process's VmRSS, RssAnon and RssShmem in MB (10**6 bytes), from /proc/self/status.

    VmRSS = RssAnon (the heap: Python objects, buffers) + RssFile (mapped
    files) + RssShmem (shared memory that this process touched, e.g. mpserver's
    rings: a ring's pages count once the data has gone round it).
    """
    found = {}
    with open('/proc/self/status') as f:
        for line in f:
            name, _, rest = line.partition(':')
            if name in FIELDS:
                found[name] = int(rest.split()[0]) * 1024 / 1e6
    return [found[name] for name in FIELDS]


def measure(backend: str, items: int = ITEMS, every: int = EVERY) -> dict:
    """Stream ``items`` small ints on ``backend``; return the RSS samples and timing.

    Returns ``{'backend', 'items', 'seconds', 'samples': [[items done, VmRSS,
    RssAnon, RssShmem], ...]}`` (MB); the first sample (0 items) is taken
    after the server started and a ``WARMUP_ITEMS`` warm-up stream ran.
    """
    mod = BACKENDS[backend]
    servlet = mod.ProcessServlet(ECHO[backend], cpus=CPUS, batch_size=BATCH_SIZE)
    samples: list[list[float]] = []
    with mod.Server(servlet) as server:
        for _ in server.stream(range(WARMUP_ITEMS)):
            pass
        gc.collect()
        samples.append([0, *memory_mb()])
        done = 0
        start = time.perf_counter()
        for _ in server.stream(range(items)):
            done += 1
            if done % every == 0:
                samples.append([done, *memory_mb()])
        seconds = time.perf_counter() - start
    if done != items:
        raise RuntimeError(f'{backend}: stream returned {done} results for {items} items')
    return {'backend': backend, 'items': items, 'seconds': seconds, 'samples': samples}


def markdown_table(results: list[dict]) -> str:
    """``items done | VmRSS | RssAnon | RssShmem`` per backend, for results sampled at the same points."""
    head = ' | '.join(f'{r["backend"]} {field} (MB)' for r in results for field in FIELDS)
    lines = [f'| items done | {head} |', '| ---: |' + ' ---: |' * (len(results) * len(FIELDS))]
    for i, sample in enumerate(results[0]['samples']):
        cells = ' | '.join(f'{v:.1f}' for r in results for v in r['samples'][i][1:])
        lines.append(f'| {int(sample[0]):,} | {cells} |')
    return '\n'.join(lines)


def growth_mb(result: dict) -> tuple[int, float]:
    """``(items, MB)``: VmRSS growth over the second half of the stream.

    The first half is left out on purpose: it fills the allocator's pools and
    touches the pages of the shared-memory rings once (they count in VmRSS
    once the data has gone round them), which is not per-item growth.  A leak
    of even 2 bytes per item shows up as 1 MB over 500,000 items.
    """
    samples = result['samples']
    last = samples[-1]
    half = min(samples, key=lambda s: abs(s[0] - last[0] / 2))
    return int(last[0] - half[0]), last[1] - half[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--backend', choices=sorted(BACKENDS), default='mpserver')
    parser.add_argument('--items', type=int, default=ITEMS)
    parser.add_argument('--every', type=int, default=EVERY)
    parser.add_argument('--json', action='store_true', help='print the result as JSON')
    args = parser.parse_args(argv)
    result = measure(args.backend, args.items, args.every)
    if args.json:
        json.dump(result, sys.stdout)
        print()
        return
    print(markdown_table([result]))
    print()
    items, growth = growth_mb(result)
    print(
        f'{args.items:,} items in {result["seconds"]:.1f} s; '
        f'VmRSS growth over the last {items:,} items: {growth:+.1f} MB'
    )


if __name__ == '__main__':
    main()
