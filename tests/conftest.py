import gc
import os
import sys

import pytest

# Worker processes re-import the test Worker classes from ``_backends`` by
# module name; they inherit the parent's sys.path, so make sure this directory
# is on it regardless of pytest's import mode.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import _backends  # noqa: E402

BACKEND_NAMES = ['mpservice', 'mpserver']


@pytest.fixture(params=BACKEND_NAMES, ids=BACKEND_NAMES)
def backend(request) -> _backends.Backend:
    name = request.param
    b = _backends.BACKENDS.get(name)
    if b is None:
        err = _backends.IMPORT_ERRORS.get(name)
        pytest.fail(
            f'backend {name!r} cannot be imported: {type(err).__name__}: {err}',
            pytrace=False,
        )
    return b


@pytest.fixture(autouse=True)
def _collect_garbage_between_tests():
    """Run the garbage collector after every test, in the main thread.

    mpservice registers finalizers that join threads of its finished worker
    processes.  Left to a random GC, such a finalizer can run inside the
    bootstrap of a *new* thread while CPython holds its thread-shutdown lock,
    and the join then deadlocks (seen as a hang in ``Thread.start`` under
    ``mpservice.mpserver.Server.__enter__``).  Collecting here, at a quiet
    point, keeps that garbage from piling up.
    """
    yield
    gc.collect()


def pytest_collection_modifyitems(config, items):
    """Run the Ray tests (tests/test_ray.py) after every other test.

    A Ray cluster leaves state in the test process (its driver's threads,
    signal handlers and file descriptors) that ``ray.shutdown`` does not all
    undo; no other test should run under it."""
    items.sort(key=lambda item: item.nodeid.startswith('tests/test_ray.py') or '/test_ray.py' in item.nodeid)
