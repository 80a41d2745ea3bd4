"""Workers of the native HTTP front's tests (tests/test_http_front.py).

Worker processes import this module by name, so everything lives at module
level.  The ``*_servlet`` functions are what ``python -m mpserver serve``
loads in the CLI tests.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from mpserver import HttpRequest, ProcessServlet, ThreadServlet, Worker


class Echo(Worker):
    """The body as it came, or what a command in the body asks for."""

    def call(self, x: bytes) -> Any:
        if x == b'boom':
            raise ValueError('boom!')
        if x == b'json':
            return {'a': [1, 2], 'b': None, 'c': 'é'}
        if x == b'text':
            return 'héllo'
        if x == b'number':
            return 42
        if x == b'object':
            return object()  # not JSON
        if x == b'pid':
            return str(os.getpid())
        if x.startswith(b'sleep:'):
            time.sleep(float(x[6:]))
            return b'slept'
        if x == b'die':
            os.kill(os.getpid(), signal.SIGKILL)
        return x


class Upper(Worker):
    def call(self, x: Any) -> Any:
        if x == b'fail-first':
            raise KeyError('first stage')
        return x.upper() if isinstance(x, bytes) else x


class Tag(Worker):
    """A later stage: wraps what the previous stage made."""

    def call(self, x: Any) -> Any:
        return {'tagged': x.decode() if isinstance(x, bytes) else x}


class Sum(Worker):
    """Batches of up to 4 bodies; each answered with its batch's size."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(batch_size=4, batch_wait_time=0.05, **kw)

    def call(self, xs: list[bytes]) -> list[Any]:
        return [{'body': x.decode(), 'batch': len(xs)} for x in xs]


class Info(Worker):
    """What a whole-request route's worker sees."""

    def call(self, r: HttpRequest) -> Any:
        assert isinstance(r, HttpRequest), type(r)
        return {
            'method': r.method,
            'path': r.path,
            'query': r.query,
            'headers': dict(r.headers),
            'body': r.text(),
            'type': type(r.body).__name__,
        }


class SlowStart(Worker):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        time.sleep(float(os.environ.get('MPSERVER_TEST_SLOW_START', '2')))

    def call(self, x: bytes) -> bytes:
        return x


TESTS_CONSTANT = 3  # not a servlet (the CLI's error test)


def echo_servlet() -> ProcessServlet:
    return ProcessServlet(Echo, cpus=[0])


def routes() -> dict[str, Any]:
    return {'/echo': ProcessServlet(Echo), '/upper': ThreadServlet(Upper)}
