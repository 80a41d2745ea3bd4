"""The whole service replicated per node: one Ray actor per node runs an
mpserver Server behind its native HTTP front (docs/ray.md).

A load balancer (nginx, HAProxy, a cloud one) spreads requests over the
URLs that ``start()`` returns.  Run ``python examples/ray_http_per_node.py``
(a local Ray instance unless ``RAY_ADDRESS`` names a cluster).
"""

from __future__ import annotations

from typing import Any

from mpserver import ProcessServlet, Server, Worker


class Upper(Worker):
    def call(self, x: bytes) -> bytes:
        return x.upper()


class NodeService:
    """One node's whole service: a Server and its HTTP front on that node."""

    def __init__(self, port: int = 0) -> None:
        self._server = Server(ProcessServlet(Upper))
        self._server.__enter__()
        self._http = self._server.start_http('0.0.0.0', port)

    def url(self) -> str:
        import ray

        util: Any = ray.util
        return f'http://{util.get_node_ip_address()}:{self._http.port}/'

    def stop(self) -> None:
        self._http.stop()
        self._server.__exit__(None, None, None)


def start(nodes: list[dict[str, Any]]) -> tuple[list[Any], list[str]]:
    """One NodeService actor per entry of ``nodes`` (its Ray actor options); returns the actors and their URLs."""
    import ray

    actors = [ray.remote(NodeService).options(**opts).remote() for opts in nodes]
    return actors, ray.get([a.url.remote() for a in actors], timeout=120)


if __name__ == '__main__':
    import urllib.request

    import ray

    ray.init(log_to_driver=False)
    actors, urls = start([{'num_cpus': 0}])
    for url in urls:
        print(url, urllib.request.urlopen(url, data=b'hello').read())
    ray.get([a.stop.remote() for a in actors])
    ray.shutdown()
