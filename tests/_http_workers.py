"""Workers of the native HTTP front's hostile-client tests
(tests/test_http_hostile.py).

Worker processes import this module by name, so the worker lives at module
level.
"""

from __future__ import annotations

import time

from mpserver import ProcessServlet, Worker


class Echo(Worker):
    """The request body as it came; ``sleep:SECONDS`` sleeps first and
    answers ``slept``."""

    def call(self, x: bytes) -> bytes:
        if x.startswith(b'sleep:'):
            time.sleep(float(x[6:]))
            return b'slept'
        return x


def echo_servlet() -> ProcessServlet:
    return ProcessServlet(Echo)
