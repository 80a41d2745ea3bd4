"""What every peer's config shares: the worker count and the command-line options.

Every peer is started by ``benchmarks/real_models.py`` as a command in its own
venv, with the environment it sets (``OMP_NUM_THREADS=1`` and the rest of
:data:`benchmarks.real.work.THREAD_ENV`, and :data:`WORKERS_ENV`).
"""

from __future__ import annotations

import argparse
import os

from benchmarks.real import work

WORKERS_ENV = 'MPSERVER_REAL_WORKERS'


def workers() -> int:
    """Worker processes per model (per stage for a pipeline): one per core unless the runner says otherwise."""
    return int(os.environ.get(WORKERS_ENV) or os.cpu_count() or 1)


def parse(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument('workload', choices=work.WORKLOADS)
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, required=True)
    return p.parse_args()
