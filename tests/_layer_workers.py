"""A worker for tests/test_layers.py: this module imports nothing of mpserver but ``Worker``."""

import sys

from mpserver import Worker


class Modules(Worker):
    """Answers with the mpserver modules its process has loaded."""

    def call(self, x):
        return sorted(m for m in sys.modules if m == 'mpserver' or m.startswith('mpserver.'))
