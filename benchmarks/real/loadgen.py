"""An open-loop HTTP load generator: a fixed arrival rate that does not slow down when the server does.

Request ``i`` is due at ``start + i / rate``.  A task for it is started at that
time, whatever happened to the requests before it: it takes an idle keep-alive
connection from the pool or opens a new one (up to ``max_connections``; past
that it waits for one), sends the body, and reads the response.  Its latency
is counted from the time it was **due**, not from when it was sent, so a
server that falls behind, or a generator that is late, shows as latency
(no coordinated omission).  A request that takes longer than ``timeout`` is
given up (its connection closed) and counted as a timeout.

Debian has no ``wrk2`` (checked with ``apt-cache policy wrk2``), hence this
module; ``tests/test_real_models.py`` checks it against a local server that
sleeps a known time, and against one that serves one request at a time
(where an open-loop generator must see the queue grow).

``late`` in the result is how far behind schedule the generator itself
started requests (its own CPU starvation); a run whose p99 lateness is a sizable
part of the latencies measured the generator, and says so.

Standard library only (uvloop if installed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence

TIMEOUT = 'timeout'
CONNECT = 'connect'


@dataclasses.dataclass
class Outcome:
    index: int  # which body (the i-th request used bodies[i % len(bodies)])
    due: float  # seconds after the start of the run
    latency: float  # seconds from due to the end of the response (or to the failure)
    status: int  # HTTP status, 0 if no response
    error: str = ''  # TIMEOUT, CONNECT or the exception's name, if no response
    body: bytes = b''
    late: float = 0.0  # seconds between due and the request's task starting


@dataclasses.dataclass
class Run:
    rate: float
    seconds: float
    outcomes: list[Outcome]
    wall: float  # from the first due time to the last response

    def latencies(self, ok: Callable[[Outcome], bool] | None = None) -> list[float]:
        return sorted(o.latency for o in self.outcomes if (ok or _is_2xx)(o))


def _is_2xx(o: Outcome) -> bool:
    return 200 <= o.status < 300


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one HTTP/1.1 response."""
    head = await reader.readuntil(b'\r\n\r\n')
    lines = head.decode('latin-1').split('\r\n')
    status = int(lines[0].split(' ', 2)[1])
    headers = {}
    for line in lines[1:]:
        if ':' in line:
            k, v = line.split(':', 1)
            headers[k.strip().lower()] = v.strip()
    if 'content-length' in headers:
        body = await reader.readexactly(int(headers['content-length']))
    elif headers.get('transfer-encoding', '').lower() == 'chunked':
        parts = []
        while True:
            size = int((await reader.readuntil(b'\r\n')).split(b';')[0], 16)
            if size == 0:
                await reader.readuntil(b'\r\n')
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b''.join(parts)
    else:
        body = await reader.read()
        return status, body, False
    return status, body, headers.get('connection', '').lower() != 'close'


async def open_loop(
    host: str,
    port: int,
    path: str,
    bodies: Sequence[bytes],
    rate: float,
    seconds: float,
    *,
    timeout: float = 10.0,
    content_type: str = 'application/octet-stream',
    max_connections: int = 2048,
    first_index: int = 0,
) -> Run:
    """Send ``round(rate * seconds)`` requests at ``rate`` per second, bodies in turn."""
    count = max(1, round(rate * seconds))
    idle: list[_Conn] = []
    opened = 0
    freed = asyncio.Condition()
    outcomes: list[Outcome] = []
    prefix = (
        f'POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\nContent-Length: '
    ).encode()

    async def take() -> _Conn:
        nonlocal opened
        async with freed:
            while not idle and opened >= max_connections:
                await freed.wait()
            if idle:
                return idle.pop()
            opened += 1
        try:
            return _Conn(*await asyncio.open_connection(host, port))
        except BaseException:
            async with freed:
                opened -= 1
                freed.notify()
            raise

    async def give(conn: _Conn | None) -> None:
        nonlocal opened
        async with freed:
            if conn is None:
                opened -= 1
            else:
                idle.append(conn)
            freed.notify()

    async def one(i: int, due: float, start: float) -> None:
        late = time.perf_counter() - start - due
        index = first_index + i
        body = bodies[index % len(bodies)]
        conn = None  # a connection this request holds (counted in ``opened``)
        error = ''
        try:
            async with asyncio.timeout(timeout):
                try:
                    conn = await take()
                except OSError:
                    error = CONNECT
                else:
                    conn.writer.write(prefix + str(len(body)).encode() + b'\r\n\r\n' + body)
                    status, data, keep = await _read_response(conn.reader)
        except TimeoutError:
            error = TIMEOUT
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
            error = type(e).__name__
        latency = time.perf_counter() - start - due
        if error:
            outcomes.append(Outcome(index, due, latency, 0, error, late=late))
            keep = False
        else:
            outcomes.append(Outcome(index, due, latency, status, body=data, late=late))
        if conn is not None:
            if not keep:
                conn.close()
            await give(conn if keep else None)

    tasks = []
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    for i in range(count):
        due = i / rate
        delay = start + due - time.perf_counter()
        # When behind, still yield, so that the requests already started make progress.
        await asyncio.sleep(max(delay, 0))
        tasks.append(loop.create_task(one(i, due, start)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    for conn in idle:
        conn.close()
    outcomes.sort(key=lambda o: o.due)
    return Run(rate, seconds, outcomes, wall)


def run(*args, **kwargs) -> Run:
    """:func:`open_loop` on a fresh event loop (uvloop's when it is installed)."""
    try:
        import uvloop

        return uvloop.run(open_loop(*args, **kwargs))
    except ImportError:
        return asyncio.run(open_loop(*args, **kwargs))
