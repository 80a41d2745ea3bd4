"""Workers for tests/test_chunking.py (module level, so worker processes can import them)."""

from __future__ import annotations

import json
import os
import time

from mpserver import Worker


def _spin(seconds: float) -> None:
    """Busy for ``seconds`` of wall time, holding the GIL between bytecodes (pure Python)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


class Stamp(Worker):
    """``call(x) -> (x, pid, time it finished)``; the item ``slow`` is busy for ``seconds``."""

    def __init__(self, *, slow: int = -1, seconds: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.slow, self.seconds = slow, seconds

    def call(self, x):
        if x == self.slow:
            _spin(self.seconds)
        return x, os.getpid(), time.monotonic()


class SlowFirst(Worker):
    """``call(x) -> x``; items below ``until`` take ``seconds`` each (asleep)."""

    def __init__(self, *, until: int, seconds: float, **kwargs):
        super().__init__(**kwargs)
        self.until, self.seconds = until, seconds

    def call(self, x):
        if x < self.until:
            time.sleep(self.seconds)
        return x


class Double(Worker):
    def call(self, x):
        return x * 2


class Sleepy(Worker):
    """``call(x) -> x``; the item ``slow`` sleeps ``seconds`` first."""

    def __init__(self, *, slow: int, seconds: float, **kwargs):
        super().__init__(**kwargs)
        self.slow, self.seconds = slow, seconds

    def call(self, x):
        if x == self.slow:
            time.sleep(self.seconds)
        return x


class Picky(Worker):
    """Raises for multiples of 7; returns a lambda (not picklable) for 5; else x + 1."""

    def call(self, x):
        if x % 7 == 0:
            raise ValueError(f'no multiples of seven: {x}')
        if x == 5:
            return lambda: None
        return x + 1


class Appender(Worker):
    """Appends to its input list and returns the new length: inputs must arrive as copies."""

    def call(self, x):
        x.append(None)
        return len(x)


class SelfBatching(Worker):
    """Turns on batching in its own ``__init__`` (the main process cannot see it):
    returns, for each item, (item, size of the batch it came in)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.batch_size = 4

    def call(self, xs):
        return [(x, len(xs)) for x in xs]


class Trail(Worker):
    """``call(x) -> x + 1``; writes each item it starts to trail_dir/<pid>, dies
    (SIGSEGV) when it starts ``poison``."""

    def __init__(self, *, trail_dir: str, poison: int, **kwargs):
        super().__init__(**kwargs)
        self.trail = os.path.join(trail_dir, str(os.getpid()))
        self.poison = poison

    def call(self, x):
        with open(self.trail, 'a') as f:
            f.write(json.dumps(x) + '\n')
        if x == self.poison:
            import ctypes

            ctypes.string_at(0)
        return x + 1
