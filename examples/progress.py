"""A progress bar over a stream: tqdm counts results as they come out.

Run:  python examples/progress.py      (needs tqdm: pip install tqdm)

``server.stream(data)`` is a generator: it yields each result, in input
order, as soon as it is ready, so wrapping it in ``tqdm`` advances the bar
once per finished item.  A generator has no length, so pass ``total``.  The
bar goes to stderr; the results are the stream's, unchanged.
"""

import time

from mpserver import ProcessServlet, Server, Worker
from tqdm import tqdm


class Slow(Worker):
    """Takes a little while per item, so that the bar has something to show."""

    def call(self, x):
        time.sleep(0.002)
        return x * x


if __name__ == '__main__':
    n = 500
    with Server(ProcessServlet(Slow, cpus=2)) as server:
        total = 0
        for y in tqdm(server.stream(range(n)), total=n, desc='squares', unit='item'):
            total += y
    print(total == sum(x * x for x in range(n)))
