"""A pipeline whose heavy middle stage runs on a Ray cluster (docs/ray.md).

Run it with ``python examples/ray_pipeline.py``: without a cluster address it
starts a local Ray instance; set ``RAY_ADDRESS`` to use a running cluster.
"""

from __future__ import annotations

from typing import Any

from mpserver import ProcessServlet, SequentialServlet, Server, ThreadServlet, Worker
from mpserver.ray import RayServlet


class Parse(Worker):
    def call(self, x: str) -> list[float]:
        return [float(v) for v in x.split(',')]


class Score(Worker):
    """The heavy step: runs in worker processes on the replicas' nodes."""

    def call(self, xs: list[float]) -> float:
        return sum(v * v for v in xs)


class Format(Worker):
    def call(self, y: float) -> str:
        return f'{y:.1f}'


def build(num_replicas: int = 2, **ray_actor_options: Any) -> SequentialServlet:
    return SequentialServlet(
        ThreadServlet(Parse),
        RayServlet(ProcessServlet(Score, cpus=1), num_replicas=num_replicas, ray_actor_options=ray_actor_options),
        ThreadServlet(Format),
    )


if __name__ == '__main__':
    import ray

    ray.init(log_to_driver=False)
    with Server(build(num_cpus=0)) as server:
        print(list(server.stream(['1,2', '3,4', '5,6'])))
    ray.shutdown()
