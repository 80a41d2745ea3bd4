"""Workers of the RayServlet tests (tests/test_ray.py).

Ray's worker processes and the replicas' own worker processes import this
module by name, so everything lives at module level.
"""

from __future__ import annotations

import os
import time
from typing import Any

from mpserver import Worker


class AddOne(Worker):
    def call(self, x: int) -> int:
        return x + 1


class Double(Worker):
    def call(self, x: int) -> int:
        if x == -1:
            raise ValueError('minus one is not welcome')
        return x * 2


class Where(Worker):
    """The value, with the pid of the process that served it."""

    def call(self, x: Any) -> Any:
        return (x, os.getpid())


class BatchSize(Worker):
    """Each item with the size of the batch it was served in."""

    def call(self, xs: list[int]) -> list[tuple[int, int]]:
        return [(x, len(xs)) for x in xs]


class Sum(Worker):
    """A numpy array's sum and the array doubled."""

    def call(self, x: Any) -> Any:
        return float(x.sum()), x * 2


class Slow(Worker):
    def call(self, x: int) -> int:
        time.sleep(0.05)
        return x


class Nap(Worker):
    def call(self, x: int) -> int:
        time.sleep(1.0)
        return x
