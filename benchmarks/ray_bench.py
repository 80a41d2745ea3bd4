"""RayServlet against the same servlet served locally and against a plain Ray actor pool.

    PYTHONPATH=$PWD/python python benchmarks/ray_bench.py            # print the table
    PYTHONPATH=$PWD/python python benchmarks/ray_bench.py --quick    # fewer items

A two-node Ray cluster is started on this machine with Ray's own test
utility (``ray.cluster_utils.Cluster``, one CPU per node), so every node
shares this machine's cores.  Work per item: ``trivial`` (``x + 1``) and
``1ms``, the ~1 ms pure-Python item of every benchmark (``harness.burn``,
its loop count calibrated once in the driver by ``harness.burn_loops`` and
given to every worker and actor).  Peers, each with two workers in all:

* ``local``: ``Server(ProcessServlet(W, cpus=2))`` (the replicas' capacity);
* ``ray-1``: ``RayServlet(ProcessServlet(W, cpus=2))``, one replica;
* ``ray-2``: ``RayServlet(ProcessServlet(W, cpus=1), num_replicas=2)``;
* ``pool``: ``ray.util.ActorPool([A.remote(), A.remote()]).map`` with the same work.

Each figure is the best of ``--rounds`` streams of the items (items/s, and
the per-item time that is the inverse of it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import harness
from harness import burn
from mpserver import ProcessServlet, Server, Worker


class Trivial(Worker):
    def call(self, x: int) -> int:
        return x + 1


class Milli(Worker):
    def __init__(self, *, loops: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loops = loops

    def call(self, x: int) -> int:
        burn(self.loops)
        return x


class PoolActor:
    def __init__(self, loops: int) -> None:
        self.loops = loops

    def trivial(self, x: int) -> int:
        return x + 1

    def milli(self, x: int) -> int:
        burn(self.loops)
        return x


def _best(run: Any, n: int, rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        run(n)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def _served(servlet: Any, n: int, rounds: int) -> float:
    with Server(servlet, capacity=1024) as server:
        list(server.stream(range(200)))  # warm up

        def run(k: int) -> None:
            assert sum(1 for _ in server.stream(range(k))) == k

        return _best(run, n, rounds)


def _pooled(pool: Any, method: str, n: int, rounds: int) -> float:
    def submit(a: Any, v: int) -> Any:
        return getattr(a, method).remote(v)

    list(pool.map(submit, range(50)))  # warm up
    return _best(lambda k: list(pool.map(submit, range(k))), n, rounds)


def main() -> None:
    import ray
    from mpserver.ray import RayServlet
    from ray.cluster_utils import Cluster
    from ray.util import ActorPool

    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    harness.add_run_options(p, rounds=3, quick_rounds=1, quick='fewer items (and one round)', write=None)
    args = harness.parse_run_options(p)
    rounds = args.rounds
    loops = harness.burn_loops()
    harness.log(f'1ms item: {loops:,} loops')
    sizes = {'trivial': 2000 if args.quick else 20000, '1ms': 400 if args.quick else 3000}
    pool_sizes = {'trivial': 500 if args.quick else 3000, '1ms': 400 if args.quick else 3000}

    here = os.path.dirname(os.path.abspath(__file__))
    os.environ['PYTHONPATH'] = os.pathsep.join([here, *sys.path])
    mb = 200 * 1024 * 1024
    cluster = Cluster(
        initialize_head=True,
        head_node_args={'num_cpus': 1, 'object_store_memory': mb, 'include_dashboard': False},
    )
    cluster.add_node(num_cpus=1, object_store_memory=mb)
    ray.init(address=cluster.address, log_to_driver=False, logging_level='warning')
    try:
        rows = []
        for work, cls in (('trivial', Trivial), ('1ms', Milli)):
            n = sizes[work]
            kw = {'loops': loops} if cls is Milli else {}
            res = {
                'local': _served(ProcessServlet(cls, cpus=2, **kw), n, rounds),
                'ray-1': _served(
                    RayServlet(ProcessServlet(cls, cpus=2, **kw), ray_actor_options={'num_cpus': 1}), n, rounds
                ),
                'ray-2': _served(
                    RayServlet(ProcessServlet(cls, cpus=1, **kw), num_replicas=2, ray_actor_options={'num_cpus': 1}),
                    n,
                    rounds,
                ),
            }
            actor = ray.remote(num_cpus=1)(PoolActor)
            actors = [actor.remote(loops) for _ in range(2)]
            res['pool'] = _pooled(
                ActorPool(actors), 'trivial' if work == 'trivial' else 'milli', pool_sizes[work], rounds
            )
            for a in actors:
                ray.kill(a)
            rows.append((work, res))
    finally:
        ray.shutdown()
        cluster.shutdown()

    print('| work | peer | items/s | µs per item | vs ActorPool.map | vs local (capacity) |')
    print('|---|---|---:|---:|---:|---:|')
    for work, res in rows:
        for peer, rate in res.items():
            print(
                f'| {work} | {peer} | {rate:,.0f} | {1e6 / rate:,.1f} | '
                f'{rate / res["pool"]:.1f}x | {rate / res["local"]:.2f} |'
            )


if __name__ == '__main__':
    import ray_bench  # the classes must be importable by name (Ray's workers and the replicas' workers)

    ray_bench.main()
