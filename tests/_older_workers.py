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
