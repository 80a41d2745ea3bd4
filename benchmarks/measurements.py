"""How bench.py measures: one function per kind of workload, each driving a
fresh ``Server`` on one backend and returning the row values of one round.

``workloads.py`` lists the workloads (which function, with which arguments,
gives which rows); these functions are the measuring itself.  Each takes the
backend name and the run's :class:`workloads.Sizes`, checks the results it
got (count, and for payloads the contents), and raises rather than report a
number from a broken path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from _bench_workers import BACKENDS, BURN, ECHO, PARITY
from harness import HERE, burn_loops, percentile

if TYPE_CHECKING:
    from workloads import Sizes

STREAM_WARMUP_ITEMS = 256
KB = 1_000
MB = 1_000_000
#: Bytes streamed to estimate a backend's payload rate before the timed stream.
PAYLOAD_WARMUP_BYTES = 64 * MB  # both backends reach their steady state (heap, buffers)
PAYLOAD_WARMUP_MIN_ITEMS = 8
CPU_BOUND_PROCS = 2
ENTER_SCRIPT = os.path.join(HERE, '_enter.py')


def _drain(results: Iterable) -> int:
    count = 0
    for _ in results:
        count += 1
    return count


def _make_server(backend: str, *, cpus: int, batch_size: int = 0, shape: str = 'process'):
    """A Server on ``backend`` running the Echo worker in one of these shapes:
    ``process`` (one ProcessServlet), ``pipeline`` (Process -> Thread -> Process),
    ``ensemble`` (an EnsembleServlet of two ProcessServlets) or ``switch`` (a
    SwitchServlet over two ProcessServlets, routing by ``x % 2``)."""
    mod = BACKENDS[backend]
    echo = ECHO[backend]

    def proc():
        return mod.ProcessServlet(echo, cpus=cpus, batch_size=batch_size)

    if shape == 'process':
        servlet = proc()
    elif shape == 'pipeline':
        servlet = mod.SequentialServlet(proc(), mod.ThreadServlet(echo, batch_size=batch_size), proc())
    elif shape == 'ensemble':
        servlet = mod.EnsembleServlet(proc(), proc())
    elif shape == 'switch':
        servlet = PARITY[backend](proc(), proc())
    else:
        raise ValueError(f'unknown shape {shape!r}')
    return mod.Server(servlet)


def stream_throughput(
    backend: str,
    sizes: Sizes,
    *,
    cpus: int,
    batch_size: int,
    generator: bool = False,
    shape: str = 'process',
) -> tuple[float]:
    n = sizes.stream_items
    with _make_server(backend, cpus=cpus, batch_size=batch_size, shape=shape) as server:
        _drain(server.stream(range(STREAM_WARMUP_ITEMS)))
        data = (i for i in range(n)) if generator else range(n)
        start = time.perf_counter()
        count = _drain(server.stream(data))
        elapsed = time.perf_counter() - start
    if count != n:
        raise RuntimeError(f'{backend}: stream returned {count} results for {n} items')
    return (n / elapsed,)


def call_latency(backend: str, sizes: Sizes) -> tuple[float, float]:
    latencies_ns = []
    with _make_server(backend, cpus=1) as server:
        for i in range(sizes.call_warmup):
            server.call(i % 100)
        for i in range(sizes.call_count):
            start = time.perf_counter_ns()
            server.call(i % 100)
            latencies_ns.append(time.perf_counter_ns() - start)
    latencies_ns.sort()
    return percentile(latencies_ns, 50) / 1e3, percentile(latencies_ns, 99) / 1e3


def concurrent_calls(backend: str, sizes: Sizes) -> tuple[float, float]:
    """``sizes.threads`` threads each make ``calls_per_thread`` calls, all released at once."""
    nthreads, per = sizes.threads, sizes.calls_per_thread
    latencies: list[list[int]] = [[] for _ in range(nthreads)]
    errors: list[BaseException] = []
    with _make_server(backend, cpus=2) as server:
        for i in range(sizes.call_warmup):
            server.call(i % 100)
        barrier = threading.Barrier(nthreads + 1)

        def caller(k: int) -> None:
            out, call, clock = latencies[k], server.call, time.perf_counter_ns
            barrier.wait()
            try:
                for i in range(per):
                    start = clock()
                    call(i % 100)
                    out.append(clock() - start)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(nthreads)]
        for t in threads:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f'{backend}: {len(errors)} calling thread(s) failed') from errors[0]
    merged = sorted(v for lat in latencies for v in lat)
    if len(merged) != nthreads * per:
        raise RuntimeError(f'{backend}: {len(merged)} of {nthreads * per} calls returned')
    return len(merged) / elapsed, percentile(merged, 99) / 1e3


def _payload(kind: str, size: int):
    """A fresh random payload: ``bytes``, or a writable numpy uint8 array."""
    raw = os.urandom(size)
    if kind == 'bytes':
        return raw
    import numpy as np

    return np.frombuffer(bytearray(raw), np.uint8)


def _check_echo(backend: str, x, y) -> None:
    """Raise unless ``y`` is a correct echo of ``x`` (type, length and contents)."""
    if type(y) is not type(x) or len(y) != len(x):
        raise RuntimeError(
            f'{backend}: echo of a {type(x).__name__} of {len(x):,} bytes came back as '
            f'{type(y).__name__} of length {len(y) if hasattr(y, "__len__") else "?"}'
        )
    if type(x) is bytes:
        same = x == y
    else:
        import numpy as np

        same = x.dtype == y.dtype and np.array_equal(x, y)
    if not same:
        raise RuntimeError(f'{backend}: echo of a {type(x).__name__} came back with other contents')


def payload_throughput(backend: str, sizes: Sizes, *, kind: str, size: int) -> tuple[float]:
    """MB/s of echoing one payload, streamed as a list of the same object n times.

    A short warm-up stream estimates this backend's rate; n is then chosen so
    that the timed stream moves ``payload_bytes`` (``payload_bytes_large`` for
    16 MB items) or lasts about ``payload_seconds``, whichever is less.
    """
    x = _payload(kind, size)
    with _make_server(backend, cpus=1) as server:
        n0 = max(PAYLOAD_WARMUP_MIN_ITEMS, min(1_000, PAYLOAD_WARMUP_BYTES // size))
        start = time.perf_counter()
        _drain(server.stream([x] * n0))
        rate = n0 / (time.perf_counter() - start)
        cap = sizes.payload_bytes_large if size >= 16 * MB else sizes.payload_bytes
        n = max(sizes.payload_min_items, min(cap // size, int(rate * sizes.payload_seconds)))
        data = [x] * n
        first = None
        count = short = 0
        start = time.perf_counter()
        for y in server.stream(data):
            if first is None:
                first = y
            if len(y) != size:
                short += 1
            count += 1
        elapsed = time.perf_counter() - start
    if count != n or short:
        raise RuntimeError(f'{backend}: {count} results for {n} items, {short} of the wrong length')
    _check_echo(backend, x, first)
    return (n * size / elapsed / MB,)


def enter_first_call(backend: str, sizes: Sizes, *, cpus: int) -> tuple[float]:
    """Seconds from ``Server.__enter__`` to the first result, measured by
    ``_enter.py`` in a fresh interpreter that imports only ``backend`` (its
    workers import that script, as they would a user's)."""
    out = subprocess.run(
        [sys.executable, ENTER_SCRIPT, backend, str(cpus)],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    ).stdout
    return (float(out.strip().splitlines()[-1]),)


def cpu_bound(backend: str, sizes: Sizes) -> tuple[float, float, float]:
    """Throughput of the Burn worker with 2 processes, and its efficiency vs the ideal.

    The ideal is both workers computing all the time: efficiency = the
    seconds the workers spent inside ``burn`` (each call measures and returns
    its own) / (2 × the stream's wall time).  What is lost is the serving:
    waiting for work, taking items, sending results.  The third value is one
    call's time inside the workers (for reference: on this 2-core VM, two
    busy processes each run ~10% slower than one alone).  The same ``loops``
    (calibrated once per run) goes to both backends.
    """
    loops = burn_loops()
    mod = BACKENDS[backend]
    n = sizes.cpu_items
    with mod.Server(mod.ProcessServlet(BURN[backend], cpus=CPU_BOUND_PROCS, loops=loops)) as server:
        _drain(server.stream(range(4 * CPU_BOUND_PROCS)))
        start = time.perf_counter()
        busy = count = 0
        for seconds in server.stream(range(n)):
            busy += seconds
            count += 1
        elapsed = time.perf_counter() - start
    if count != n:
        raise RuntimeError(f'{backend}: stream returned {count} results for {n} items')
    return n / elapsed, 100 * busy / (CPU_BOUND_PROCS * elapsed), busy / n * 1e3
