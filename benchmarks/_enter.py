"""One start-up measurement, run by bench.py in a fresh interpreter per backend.

    python benchmarks/_enter.py BACKEND WORKERS

Prints the seconds from the start of ``Server(...).__enter__`` with WORKERS
worker processes to the first result of ``server.call``.  A script of its own,
importing only BACKEND, because worker processes import the main script (as
multiprocessing's spawn does): run from bench.py, every worker would also
import both backends, numpy and the whole harness, and start-up would measure
that instead of the server.  This is what a user's script looks like.
"""

import os
import sys
import time

BACKEND = sys.argv[1] if __name__ == '__main__' else os.environ['MPSERVER_BENCH_BACKEND']
os.environ['MPSERVER_BENCH_BACKEND'] = BACKEND  # for the workers' import of this script

if BACKEND == 'mpservice':
    from mpservice.mpserver import ProcessServlet, Server, Worker
elif BACKEND == 'mpserver':
    from mpserver import ProcessServlet, Server, Worker
else:
    raise SystemExit(f'unknown backend {BACKEND!r}')


class Echo(Worker):
    def call(self, x):
        return x


if __name__ == '__main__':
    workers = int(sys.argv[2])
    start = time.perf_counter()
    with Server(ProcessServlet(Echo, cpus=workers)) as server:
        server.call(0)
        elapsed = time.perf_counter() - start
    print(f'{elapsed:.6f}')
