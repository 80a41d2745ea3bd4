"""Workers written against the older mpservice API (ProcessWorker, ThreadWorker),
at module level so that worker processes can import them by name."""

import os

from mpserver import ProcessWorker, ThreadWorker


class Triple(ProcessWorker):
    def call(self, x):
        return 3 * x


class Affinity(ProcessWorker):
    def call(self, x):
        return sorted(os.sched_getaffinity(0))


class Negate(ThreadWorker):
    def call(self, x):
        return -x


class Cadence(ProcessWorker):
    """Passes mpservice <= 0.12.7's ``batch_size_log_cadence`` to Worker.__init__."""

    def __init__(self, **kwargs):
        super().__init__(batch_size=4, batch_wait_time=0.01, batch_size_log_cadence=100, **kwargs)

    def call(self, xs):
        return [(x, self.batch_size_log_cadence) for x in xs]


class WaitFor(ThreadWorker):
    """Returns its input, a path, once that file exists (bounded wait)."""

    def call(self, path):
        import time

        deadline = time.monotonic() + 60
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.005)
        return path
