"""A small service: CPU-bound hashing on every core, a batched step, and a thread step.

Run:  python examples/hello_service.py
"""

import hashlib
import os
import time

from mpserver import ProcessServlet, Server, ThreadServlet, Worker, make_worker


class Digest(Worker):
    """CPU-bound step: hash a text many times."""

    def __init__(self, rounds=2000, **kwargs):
        super().__init__(**kwargs)
        self.rounds = rounds

    def call(self, text):
        h = text.encode()
        for _ in range(self.rounds):
            h = hashlib.sha256(h).digest()
        return h.hex()[:16]


class Greeter(Worker):
    """Batched step: formats a whole batch at once."""

    def call(self, names):
        return [f'Hello, {n}!' for n in names]


def main():
    ncpu = os.cpu_count() or 1
    with Server(ProcessServlet(Digest, cpus=list(range(ncpu)), rounds=2000)) as server:
        print('digest of "mpserver":', server.call('mpserver'))
        t0 = time.perf_counter()
        digests = list(server.stream(f'item-{i}' for i in range(2000)))
        dt = time.perf_counter() - t0
        print(f'{len(digests)} digests on {ncpu} worker processes in {dt:.2f} s; first: {digests[:3]}')

    with Server(ProcessServlet(Greeter, batch_size=32)) as server:
        for y in server.stream(['world', 'mpserver', 'batching']):
            print(y)

    with Server(ThreadServlet(make_worker(str.upper), num_threads=2)) as server:
        print(server.call('threads work too'))


if __name__ == '__main__':
    main()
