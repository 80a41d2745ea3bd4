"""Draws docs/img/watch.svg: the live view of a real server, as a picture.

Run from the repository root (needs rich):

    PYTHONPATH=python python docs/make_watch_svg.py

Starts a three-stage server (a batching process stage, an ensemble of two
thread stages, a thread stage), streams through it for a few seconds with
a few calls timing out, and renders the table ``Server.watch()`` draws
(``mpserver._observe.watch.render``) from two snapshots one second apart into an SVG
with rich's recording console.
"""

from __future__ import annotations

import io
import os
import threading
import time

from mpserver import (
    EnsembleServlet,
    ProcessServlet,
    SequentialServlet,
    Server,
    ServerBacklogFull,
    ThreadServlet,
    TimeoutError,
    Worker,
)
from mpserver._observe.watch import render
from rich.console import Console

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'img', 'watch.svg')


class Embed(Worker):
    """A batching stage: a little work per batch, a little per item."""

    def call(self, xs):
        time.sleep(0.002 + 0.0002 * len(xs))
        return [float(x) for x in xs]


class Score(Worker):
    def call(self, x):
        time.sleep(0.0002)
        return x * 0.5


class Rank(Worker):
    def call(self, x):
        time.sleep(0.0003)
        return -x


class Merge(Worker):
    def call(self, pair):
        return pair[0] + pair[1]


def load(server: Server, stop: threading.Event) -> None:
    while not stop.is_set():
        for _ in server.stream(range(100)):
            pass


def timeouts(server: Server, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            server.call(1, timeout=0.0005)
        except (TimeoutError, ServerBacklogFull):
            pass
        time.sleep(0.2)


def main() -> None:
    tree = SequentialServlet(
        ProcessServlet(Embed, cpus=2, batch_size=16, batch_wait_time=0.002),
        EnsembleServlet(ThreadServlet(Score), ThreadServlet(Rank)),
        ThreadServlet(Merge),
    )
    stop = threading.Event()
    with Server(tree, capacity=256) as server:
        threads = [threading.Thread(target=f, args=(server, stop)) for f in (load, load, timeouts)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        before = server.stats()
        time.sleep(1.0)
        after = server.stats()
        stop.set()
        for t in threads:
            t.join()
    console = Console(record=True, width=112, file=io.StringIO(), force_terminal=True)
    console.print(render(after, before, f'mpserver · pid {os.getpid()}'))
    console.save_svg(OUT, title='server.watch()')
    print(f'wrote {OUT}')


if __name__ == '__main__':
    main()
