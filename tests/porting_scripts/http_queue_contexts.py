"""An mpservice HTTP service whose ``worker_contexts`` hold multiprocessing objects.

Usage: python http_queue_contexts.py PORT WORKERS

Each uvicorn process gets a context with its index, a queue, an event and a
shared counter, all made from a spawn context.  Its lifespan bumps the
counter and reports on the queue (with whether the event, set before the
server started, is set); a client thread of this process waits for every
report, then asks the service to stop.  Prints one JSON line.
"""

import contextlib
import json
import multiprocessing
import os
import sys
import threading
import time
import urllib.error
import urllib.request

import mpservice.http
from mpservice.http import start_server, stop_server
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def stop(request):
    await stop_server()
    return PlainTextResponse('stopping')


@contextlib.asynccontextmanager
async def lifespan(app):
    ctx = app.worker_context
    with ctx['counter'].get_lock():
        ctx['counter'].value += 1
    ctx['queue'].put({'index': ctx['index'], 'pid': os.getpid(), 'event': ctx['event'].is_set()})
    yield


app = Starlette(lifespan=lifespan, routes=[Route('/stop', stop, methods=['POST'])])


if __name__ == '__main__':
    port, workers = int(sys.argv[1]), int(sys.argv[2])
    spawn = multiprocessing.get_context('spawn')
    queue, event, counter = spawn.Queue(), spawn.Event(), spawn.Value('i', 0)
    event.set()
    reports = []

    def client():
        for _ in range(workers):
            reports.append(queue.get(timeout=120))
        for _ in range(1200):  # the lifespan runs before uvicorn listens
            try:
                urllib.request.urlopen(f'http://127.0.0.1:{port}/stop', data=b'', timeout=60).read()
                return
            except urllib.error.URLError:
                time.sleep(0.05)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    contexts = [{'index': i, 'queue': queue, 'event': event, 'counter': counter} for i in range(workers)]
    start_server(
        'http_queue_contexts:app' if workers > 1 else app,
        host='127.0.0.1',
        port=port,
        workers=workers,
        worker_contexts=contexts,
    )
    thread.join(60)
    print(
        json.dumps(
            {
                'http': mpservice.http.__name__,
                'indexes': sorted(r['index'] for r in reports),
                'events': [r['event'] for r in reports],
                'other_processes': len({r['pid'] for r in reports} - {os.getpid()}),
                'counter': counter.value,
            }
        )
    )
