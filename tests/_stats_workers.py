"""Workers for tests/test_stats.py (mpserver only): each tells the test what
it saw, so counts read from the core's meters can be checked exactly."""

from __future__ import annotations

import os
import time

from mpserver import EnsembleServlet, SwitchServlet, Worker  # noqa: F401 - SwitchServlet for Parity


class Double(Worker):
    def call(self, x):
        return x * 2


class Fails(Worker):
    """Raises for odd inputs."""

    def call(self, x):
        if x % 2:
            raise ValueError(f'odd {x}')
        return x


class BatchSeen(Worker):
    """Returns, for each item, (pid, a number identifying the batch, its size)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.batches = 0

    def call(self, xs):
        self.batches += 1
        return [(os.getpid(), self.batches, len(xs)) for _ in xs]


class Sleeps(Worker):
    """Sleeps x seconds (a float), returns x."""

    def call(self, x):
        time.sleep(x)
        return x


class Dies(Worker):
    """Dies (os._exit) on the input 'die'; returns anything else."""

    def call(self, x):
        if x == 'die':
            os._exit(3)
        return x


class Parity(SwitchServlet):
    def switch(self, x):
        return x % 2
