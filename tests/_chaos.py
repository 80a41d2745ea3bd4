"""Chaos soak for mpserver: stream items through a batching 3-stage pipeline
while other threads call the same server and a killer thread SIGKILLs a
random worker process every ``kill_every`` seconds.

    PYTHONPATH=python python tests/_chaos.py --items 1000000

The suite runs a short version (``tests/test_chaos.py``).  mpserver only:
mpservice 0.16.8 hangs when a worker process dies while serving (see
docs/failures.md), so this uses ``mpserver`` directly, not the two-backend
fixture.

The pipeline is ``ProcessServlet(StageA) -> ThreadServlet(StageB) ->
ProcessServlet(StageC)``, both process stages with 2 workers batching
``batch_size`` items.  Each stage appends its letter, so the result for ``x``
is ``(x, 'ABC')``, and a result proves the item passed every stage once, in
order.  What :func:`run` checks (each failure is one line of
``Report.violations``):

* **Stream**: every input gets exactly one outcome, in input order (the
  ``x`` of each ``(x, y)`` pair is the next input: nothing lost, duplicated
  or reordered), and that outcome is ``(x, 'ABC')`` or a
  ``WorkerCrashedError``.  Each item has a timeout, so a hang shows up as a
  ``TimeoutError`` outcome, which is a violation.
* **Calls**: each call by the ``call_threads`` threads returns its right
  result or raises ``WorkerCrashedError``; nothing else (no ``TimeoutError``:
  no hang), and every thread finishes.
* **Crashes are the ones we caused, and only what the dead worker held
  fails**: every ``WorkerCrashedError`` names a pid the killer killed and
  ``SIGKILL``.  A batching worker claims the items of one gathered batch and
  releases them after pushing their results, so it never holds more than
  ``batch_size`` items: at most ``batch_size`` outcomes (stream and calls
  together) may name one killed pid.  That is the guaranteed bound, per kill
  (so ``crashed <= kills * batch_size`` in total).  (A worker killed between
  pushing its results and releasing its claims gives those items a result
  *and* a crash report; the caller sees whichever came first, both fine.)
  No lower bound holds per kill: a kill may land on a worker holding
  nothing (between batches, or still starting after a restart).  So the
  checks are that ``kills > 0``, that the guardian saw every one of them
  (``debug_info()``: ``crashes == restarts == kills``, the budget never
  spent), and that with 10 or more kills at least one item crashed: the
  process stages sleep ``WORK_PER_ITEM`` per item, so they are the
  bottleneck and hold a batch almost all the time (every kill missing
  would mean the soak was not exercising crashes at all).
* **No leak while serving**: open fds, OS threads (``/proc/self/status``,
  so C++ threads count too), Python threads, child processes and the main
  process's memory (private ``RssAnon``, and ``VmRSS``), sampled once after
  a warm-up and again after the last result, grow by no more than generous
  margins (the machine is shared and noisy; restarts happen all the time,
  so a leak per restart would show).
* **Clean teardown**: after the ``with`` block (and a ``gc.collect()``, see
  :func:`_settled_teardown_sample`) no child process is left, and fds and
  threads are back to what they were before the server started.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gc
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator

import mpserver
from mpserver import ProcessServlet, SequentialServlet, Server, ThreadServlet, Worker

# Growth allowed between the warm-up sample and the end (and for teardown).
FD_MARGIN = 16
THREAD_MARGIN = 4
CHILD_MARGIN = 2  # a worker being restarted at the moment of a sample
TEARDOWN_MARGIN = 2  # fds and threads after the server exited, against before it started
ANON_MARGIN_KIB = 32 * 1024
# The rings are shared memory mapped in the main process: their pages count in
# VmRSS once touched, so VmRSS rises until every ring has wrapped once.
RSS_MARGIN_KIB = 64 * 1024

# The process stages "work" (sleep, sparing the CPUs) this long per item: 2
# workers then serve at most about 20,000 items/s, less than the main process
# can feed, so they hold a batch most of the time and a kill usually fails
# items instead of landing on an idle worker.
WORK_PER_ITEM = 0.0001
CALL_TIMEOUT = 60.0  # seconds: a call (or stream item) this late counts as hung
MAX_VIOLATIONS_KEPT = 30


# ----------------------------------------------------------------- the pipeline
# Module level, so worker processes can import them by name (as `_chaos` from
# the test, as `__main__` when this file runs as a script).


class StageA(Worker):
    """``x -> (x, 'A')``, in batches."""

    def call(self, xs):
        time.sleep(WORK_PER_ITEM * len(xs))
        return [(x, 'A') for x in xs]


class StageB(Worker):
    """``(x, s) -> (x, s + 'B')``, one at a time, on a thread of the main process."""

    def call(self, v):
        x, s = v
        return (x, s + 'B')


class StageC(Worker):
    """``(x, s) -> (x, s + 'C')``, in batches."""

    def call(self, vs):
        time.sleep(WORK_PER_ITEM * len(vs))
        return [(x, s + 'C') for x, s in vs]


def expected(x: int) -> tuple[int, str]:
    return (x, 'ABC')


# ----------------------------------------------------------------- measuring


@dataclasses.dataclass
class Sample:
    """What a leak would make grow, in the main process."""

    fds: int
    threads: int  # OS threads (Python's and the C++ core's)
    py_threads: int
    children: int  # child processes, zombies included
    rss_kib: int  # VmRSS: includes the shared-memory rings' pages as they are first touched
    anon_kib: int  # RssAnon: private memory (the Python heap and the C++ core's): where a leak shows

    @classmethod
    def take(cls) -> Sample:
        status = _proc_status()
        return cls(
            fds=len(os.listdir('/proc/self/fd')),
            threads=int(status['Threads']),
            py_threads=threading.active_count(),
            children=len(_children()),
            rss_kib=int(status['VmRSS'].split()[0]),
            anon_kib=int(status['RssAnon'].split()[0]),
        )


def _proc_status() -> dict[str, str]:
    with open('/proc/self/status') as f:
        return dict(line.rstrip('\n').split(':\t', 1) for line in f if ':\t' in line)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of ``pid``, or None if it is gone."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


def _children() -> list[int]:
    me = os.getpid()
    out = []
    for name in os.listdir('/proc'):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None and st[1] == me:
                out.append(int(name))
    return out


def _is_live_child(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] == os.getpid() and st[0] != 'Z'


# ----------------------------------------------------------------- the report


class Violations:
    """Failed checks: counted all, the first MAX_VIOLATIONS_KEPT kept as text."""

    def __init__(self) -> None:
        self.count = 0
        self.examples: list[str] = []
        self._lock = threading.Lock()

    def add(self, msg: str) -> None:
        with self._lock:
            self.count += 1
            if len(self.examples) < MAX_VIOLATIONS_KEPT:
                self.examples.append(msg)


@dataclasses.dataclass
class Report:
    items: int  # inputs fed to the stream (each must have had one outcome)
    seconds: float
    kills: int
    crashed_items: int  # stream outcomes that were WorkerCrashedError
    calls_ok: int
    calls_crashed: int
    guardian_crashes: int  # worker deaths the servers' guardian saw
    guardian_restarts: int
    batch_size: int
    most_crashed_per_kill: int  # outcomes naming the same killed pid, at most
    warm: Sample
    end: Sample
    before_server: Sample
    after_server: Sample
    violation_count: int
    violations: list[str]

    @property
    def ok(self) -> bool:
        return self.violation_count == 0

    def summary(self) -> str:
        w, e, b, a = self.warm, self.end, self.before_server, self.after_server
        lines = [
            f'items {self.items} in {self.seconds:.1f} s ({self.items / max(self.seconds, 1e-9):,.0f} items/s)',
            f'kills {self.kills} (guardian: {self.guardian_crashes} crashes, {self.guardian_restarts} restarts); '
            f'crashed items {self.crashed_items}, at most {self.most_crashed_per_kill} per kill '
            f'(bound: batch_size {self.batch_size})',
            f'calls ok {self.calls_ok}, crashed {self.calls_crashed}',
            f'warm-up -> end: fds {w.fds}->{e.fds}, threads {w.threads}->{e.threads} '
            f'(python {w.py_threads}->{e.py_threads}), children {w.children}->{e.children}, '
            f'rss {w.rss_kib / 1024:.1f}->{e.rss_kib / 1024:.1f} MiB '
            f'(anon {w.anon_kib / 1024:.1f}->{e.anon_kib / 1024:.1f} MiB)',
            f'before -> after the server: fds {b.fds}->{a.fds}, threads {b.threads}->{a.threads}, '
            f'children {b.children}->{a.children}',
        ]
        if self.ok:
            lines.append('all checks passed')
        else:
            lines.append(f'{self.violation_count} violations, e.g.:')
            lines += [f'  {v}' for v in self.violations]
        return '\n'.join(lines)


# ----------------------------------------------------------------- the soak


def run(
    items: int = 1_000_000,
    *,
    seconds: float | None = None,
    kill_every: float = 0.5,
    call_threads: int = 4,
    batch_size: int = 16,
    seed: int = 0,
    warmup_seconds: float | None = None,
) -> Report:
    """Stream ``items`` inputs (fewer if ``seconds`` runs out first) through
    the pipeline under chaos; return what happened and every violated check
    (see the module docstring).  Raises nothing for a failed check.

    ``warmup_seconds`` (default: a tenth of the run, at most 5 s) is when the
    first leak sample is taken: by then rings, threads and pools have reached
    their working size and the first restarts have happened."""
    if warmup_seconds is None:
        warmup_seconds = min(5.0, (seconds or 50.0) / 10)
    return _Soak(items, seconds, kill_every, call_threads, batch_size, seed, warmup_seconds).run()


class _Soak:
    """One run: the threads' shared state, the threads, and the checks."""

    def __init__(
        self,
        items: int,
        seconds: float | None,
        kill_every: float,
        call_threads: int,
        batch_size: int,
        seed: int,
        warmup_seconds: float,
    ) -> None:
        self.items, self.seconds, self.kill_every = items, seconds, kill_every
        self.call_threads, self.batch_size, self.seed = call_threads, batch_size, seed
        self.warmup_seconds = warmup_seconds
        self.violations = Violations()
        self.stop = threading.Event()
        self.lock = threading.Lock()  # guards the four below
        self.killed: set[int] = set()  # every pid sent SIGKILL, added before the kill
        self.kills = 0
        self.crashed_per_pid: collections.Counter[int] = collections.Counter()
        self.calls = {'ok': 0, 'crashed': 0}
        self.fed = 0  # inputs the stream pulled

        # The restart budget must never run out: kills come every ~kill_every
        # seconds, spread over 2 servlets, so a window of 1 s sees only a few.
        budget = {'max_restarts': 1_000_000, 'restart_window': 1.0}
        batching = {'cpus': 2, 'batch_size': batch_size, 'batch_wait_time': 0.001}
        self.victims = (ProcessServlet(StageA, **batching, **budget), ProcessServlet(StageC, **batching, **budget))
        self.pipeline = SequentialServlet(self.victims[0], ThreadServlet(StageB), self.victims[1])

    # ---- the threads

    def killer(self) -> None:
        """SIGKILLs a random live worker of either process stage every
        ``kill_every`` seconds on average (0.5 to 1.5 times that, at random)."""
        rng = random.Random(self.seed)
        while not self.stop.wait(self.kill_every * rng.uniform(0.5, 1.5)):
            # Pids change as workers are restarted: read them afresh each time,
            # and kill only a live child of ours that is one of these workers.
            pids = [p for s in self.victims for p in s.workers if _is_live_child(p)]
            if not pids:
                continue
            pid = rng.choice(pids)
            with self.lock:
                self.killed.add(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            with self.lock:
                self.kills += 1

    def caller(self, server: Server, k: int) -> None:
        """Calls ``server`` until told to stop; checks each outcome."""
        rng = random.Random(self.seed * 1000 + k)
        while not self.stop.is_set():
            x = -rng.randrange(1, 1_000_000)  # negative: never confused with a stream input
            try:
                # backpressure=False: wait for a place while the stream holds the capacity.
                y = server.call(x, timeout=CALL_TIMEOUT, backpressure=False)
            except mpserver.WorkerCrashedError as e:
                self.check_crash(e, f'call({x})')
                with self.lock:
                    self.calls['crashed'] += 1
                continue
            except Exception as e:  # noqa: BLE001 - any other outcome is a violation
                self.violations.add(f'call({x}) raised {type(e).__name__}: {e}')
                continue
            if y != expected(x):
                self.violations.add(f'call({x}) returned {y!r}, expected {expected(x)!r}')
            else:
                with self.lock:
                    self.calls['ok'] += 1

    def inputs(self, deadline: float | None) -> Iterator[int]:
        for x in range(self.items):
            if deadline is not None and time.monotonic() >= deadline:
                return
            self.fed += 1
            yield x

    # ---- the checks

    def check_crash(self, e: mpserver.WorkerCrashedError, what: str) -> None:
        """A crash must be one we caused: a pid we killed, by SIGKILL."""
        with self.lock:
            self.crashed_per_pid[e.pid] += 1
            ours = e.pid in self.killed
        if not ours or e.signal != signal.SIGKILL:
            self.violations.add(f'{what}: a crash we did not cause: pid {e.pid} (ours: {ours}), signal {e.signal}: {e}')

    def check_stream(self, server: Server, t0: float) -> tuple[int, Sample, Sample]:
        """Consumes the stream, checking each outcome; returns the number of
        crashed items and the samples after warm-up and at the end."""
        deadline = t0 + self.seconds if self.seconds is not None else None
        warm_at = t0 + self.warmup_seconds
        warm: Sample | None = None
        next_x = 0
        crashed = 0
        outcomes = server.stream(self.inputs(deadline), return_x=True, return_exceptions=True, timeout=CALL_TIMEOUT)
        for x, y in outcomes:
            if x != next_x:
                kind = 'duplicated or reordered' if x < next_x else 'lost or reordered'
                self.violations.add(f'stream: input {next_x} expected next, got input {x} ({kind})')
            next_x = x + 1
            if isinstance(y, mpserver.WorkerCrashedError):
                crashed += 1
                self.check_crash(y, f'stream item {x}')
            elif y != expected(x):
                what = f'{type(y).__name__}: {y}' if isinstance(y, BaseException) else repr(y)
                self.violations.add(f'stream item {x}: got {what}, expected {expected(x)!r}')
            if warm is None and time.monotonic() >= warm_at:
                warm = Sample.take()
        end = Sample.take()
        if next_x != self.fed:
            self.violations.add(f'stream: {self.fed} inputs fed, but the last outcome was for input {next_x - 1}')
        return crashed, warm or end, end  # warm is None if the run was shorter than the warm-up

    def check_guardian(self, server: Server) -> tuple[int, int]:
        """The guardian saw every kill and restarted every killed worker;
        returns its (crashes, restarts)."""
        health: list[dict] = []
        for _ in range(100):  # it learns of an exit from the supervisor: give the last kill a moment
            stages = server.debug_info()['servlet']['children']
            health = [stages[0], stages[2]]
            if sum(h['crashes'] for h in health) >= self.kills:
                break
            time.sleep(0.1)
        crashes = sum(h['crashes'] for h in health)
        restarts = sum(h['restarts'] for h in health)
        if any(h['failed'] for h in health):
            self.violations.add(f'a servlet ran out of restarts: {health}')
        if crashes != self.kills or restarts != self.kills:
            self.violations.add(f'{self.kills} kills, but the guardian saw {crashes} crashes, made {restarts} restarts')
        return crashes, restarts

    def check_crash_counts(self, crashed: int) -> None:
        if self.kills == 0:
            self.violations.add('no kill was performed: the soak tested nothing')
        over = [(p, n) for p, n in self.crashed_per_pid.items() if n > self.batch_size]
        if over:
            self.violations.add(
                f'more outcomes named one killed worker than it can hold (batch_size {self.batch_size}): '
                f'(pid, outcomes) {over[:5]}'
            )
        if self.kills >= 10 and crashed + self.calls['crashed'] == 0:
            self.violations.add(f'{self.kills} kills and not one crashed item: were the workers loaded at all?')

    def check_growth(self, warm: Sample, end: Sample, before: Sample, after: Sample) -> None:
        for name, margin in (('fds', FD_MARGIN), ('threads', THREAD_MARGIN), ('py_threads', THREAD_MARGIN)):
            a, b = getattr(warm, name), getattr(end, name)
            if b > a + margin:
                self.violations.add(f'leak: {name} grew from {a} (after warm-up) to {b} (at the end), margin {margin}')
        if end.children > warm.children + CHILD_MARGIN:
            self.violations.add(f'leak: child processes grew from {warm.children} to {end.children}')
        for name, margin in (('anon_kib', ANON_MARGIN_KIB), ('rss_kib', RSS_MARGIN_KIB)):
            a, b = getattr(warm, name), getattr(end, name)
            if b > a + margin:
                self.violations.add(
                    f'leak: {name[:-4]} memory grew from {a / 1024:.1f} MiB to {b / 1024:.1f} MiB, '
                    f'margin {margin / 1024:.0f} MiB'
                )
        if after.children > before.children:
            # (Children from before the server — e.g. multiprocessing's
            # resource tracker, started by another test — are not the server's.)
            self.violations.add(
                f'{after.children - before.children} child processes left after the server exited: {_children()}'
            )
        for name in ('fds', 'threads', 'py_threads'):
            a, b = getattr(before, name), getattr(after, name)
            if b > a + TEARDOWN_MARGIN:
                self.violations.add(f'teardown: {name} {a} before the server, {b} after it exited')

    # ---- the run

    def run(self) -> Report:
        before = Sample.take()
        with Server(self.pipeline) as server:
            helpers = [
                threading.Thread(target=self.caller, args=(server, k), name=f'chaos-caller-{k}')
                for k in range(self.call_threads)
            ]
            helpers.append(threading.Thread(target=self.killer, name='chaos-killer'))
            t0 = time.monotonic()
            for t in helpers:
                t.start()
            crashed, warm, end = self.check_stream(server, t0)
            elapsed = time.monotonic() - t0
            self.stop.set()
            for t in helpers:
                t.join(CALL_TIMEOUT + 30)
                if t.is_alive():
                    self.violations.add(f'{t.name} still running {CALL_TIMEOUT + 30:.0f} s after the stream ended')
            crashes, restarts = self.check_guardian(server)
        after = _settled_teardown_sample(before)
        self.check_crash_counts(crashed)
        self.check_growth(warm, end, before, after)
        return Report(
            items=self.fed,
            seconds=elapsed,
            kills=self.kills,
            crashed_items=crashed,
            calls_ok=self.calls['ok'],
            calls_crashed=self.calls['crashed'],
            guardian_crashes=crashes,
            guardian_restarts=restarts,
            batch_size=self.batch_size,
            most_crashed_per_kill=max(self.crashed_per_pid.values(), default=0),
            warm=warm,
            end=end,
            before_server=before,
            after_server=after,
            violation_count=self.violations.count,
            violations=self.violations.examples,
        )


def _settled_teardown_sample(before: Sample, wait: float = 10.0) -> Sample:
    """A sample after the server exited, once children are reaped and threads
    have ended (they may take a moment); the last one if they never do.

    Collects garbage first, so that anything a reference cycle of the test's
    own keeps alive does not count."""
    t_end = time.monotonic() + wait
    while True:
        gc.collect()
        s = Sample.take()
        settled = s.children <= before.children and s.threads <= before.threads and s.fds <= before.fds
        if settled or time.monotonic() >= t_end:
            return s
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--items', type=int, default=1_000_000, help='inputs to stream (default 1e6)')
    p.add_argument('--seconds', type=float, default=None, help='stop feeding after this many seconds (default: no cap)')
    p.add_argument('--kill-every', type=float, default=0.5, help='mean seconds between kills (default 0.5)')
    p.add_argument('--call-threads', type=int, default=4, help='threads making calls meanwhile (default 4)')
    p.add_argument('--seed', type=int, default=0, help='seed of the killer and the callers (default 0)')
    args = p.parse_args(argv)
    report = run(
        args.items,
        seconds=args.seconds,
        kill_every=args.kill_every,
        call_threads=args.call_threads,
        seed=args.seed,
    )
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == '__main__':
    sys.exit(main())
