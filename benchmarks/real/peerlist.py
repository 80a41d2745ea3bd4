"""The peers ``real_models.py`` serves the workloads with: how each is installed, started and asked.

A peer's config is a file in ``peers/`` (its server, with the workload of
``work.py``); its packages are ``requirements/<venv>.txt``, installed by
``real_models.py`` into ``~/.cache/mpserver/real-models/<venv>``.  mpserver's
two fronts and the FastAPI baseline share the ``base`` venv (none of them
pins what another needs); every other peer has its own, because their pins
of pydantic, starlette and fastapi conflict.
"""

from __future__ import annotations

import dataclasses
import uuid

from benchmarks.real import work

HOST = '127.0.0.1'
BOUNDARY = 'mpserver-real-models-' + uuid.UUID(int=35).hex


@dataclasses.dataclass(frozen=True)
class Peer:
    key: str
    label: str
    venv: str  # requirements/<venv>.txt, ~/.cache/mpserver/real-models/<venv>
    path: str  # the URL path of the model
    health: str  # GET this until 200: ready
    module: str = ''  # peers/<module>.py, run as a script with WORKLOAD --host H --port P
    workloads: tuple[str, ...] = work.WORKLOADS
    multipart_images: bool = False  # W1's PNG goes as a multipart upload (the peer takes no raw body)
    #: The processes that hold a model have this in their command line ('' = every process
    #: below the root that holds at least half the largest PSS of the tree).
    worker_marker: str = ''

    def command(self, python: str, workload: str, port: int) -> list[str]:
        if self.key == 'mpserver-native':
            attr = workload.replace('-', '_')
            argv = [python, '-m', 'mpserver', 'serve', f'benchmarks.real.peers.mpserver_native:{attr}']
            return [*argv, '--host', HOST, '--port', str(port), '--capacity', '1024']
        return [python, f'benchmarks/real/peers/{self.module}.py', workload, '--host', HOST, '--port', str(port)]

    def body(self, workload: str, body: bytes) -> tuple[bytes, str]:
        """(body, content type) of one request to this peer."""
        if workload != 'ocr':
            return body, 'application/json'
        if not self.multipart_images:
            return body, 'image/png'
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; filename="page.png"\r\n'
            'Content-Type: image/png\r\n\r\n'
        ).encode()
        return head + body + f'\r\n--{BOUNDARY}--\r\n'.encode(), f'multipart/form-data; boundary={BOUNDARY}'


PEERS = (
    Peer('mpserver-native', 'mpserver native front', 'base', '/', '/readyz'),
    Peer('mpserver-asgi', 'mpserver + uvicorn', 'base', '/', '/readyz', 'mpserver_asgi'),
    Peer('fastapi', 'FastAPI + ProcessPoolExecutor', 'base', '/predict', '/readyz', 'fastapi_pool'),
    Peer('mosec', 'mosec', 'mosec', '/inference', '/', 'mosec_peer'),
    Peer('litserve', 'LitServe', 'litserve', '/predict', '/health', 'litserve_peer', multipart_images=True),
    Peer('rayserve', 'Ray Serve', 'rayserve', '/', '/-/healthz', 'rayserve_peer', worker_marker='ServeReplica'),
    Peer('bentoml', 'BentoML', 'bentoml', '/predict', '/readyz', 'bentoml_peer', multipart_images=True),
)
BY_KEY = {p.key: p for p in PEERS}
#: Peers with no config yet, and why (reported as skipped).
NOT_CONFIGURED = {
    'mlserver': 'no config yet: MLServer speaks the V2 inference protocol (tensors in JSON), '
    'so the same request bodies need an adapter runtime; left for a later session',
}
