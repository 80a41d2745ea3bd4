"""A server belongs to the process that entered it.

A forked child (``os.fork()``, a fork-context ``multiprocessing.Pool`` or
``ProcessPoolExecutor``) that tries to use its parent's server gets a clear
``RuntimeError`` at once on mpserver; it exits normally, by ``sys.exit`` or
by leaving the ``with`` block; and the parent's server is untouched: its own
requests get their own results, before and after the child is gone.  Each
scenario runs in a fresh interpreter (``tests/_forking.py``) so that a
forked child never runs pytest's machinery and a hang has a deadline.
"""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

# What mpservice 0.16.8 does where it is skipped.
_MPSERVICE_BREAKS = {
    'exit': "after an os.fork() child exits, every later call of the parent's mpservice server times out",
    'leave': "after an os.fork() child leaves the `with` block, the parent's mpservice server times out",
    'stream': "an os.fork() child going on with its parent's mpservice stream hangs",
    'uses': 'mpservice has no async_call, and its calls in an os.fork() child time out',
}


def _run(backend, scenario):
    if backend.name == 'mpservice' and scenario in _MPSERVICE_BREAKS:
        pytest.skip(_MPSERVICE_BREAKS[scenario])
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, '_forking.py'), backend.name, scenario],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check(backend, report):
    # The parent's requests got their own results, and the server still serves.
    assert all(x == y for x, y in report['parent']), report['parent']
    assert report['after'] == [f'after-{i}' for i in range(5)]
    assert report['child_exit'] == 0, 'the forked child did not exit normally (None: it hung)'
    child = report['child']
    if backend.name == 'mpserver':
        assert child[:2] == ['error', 'RuntimeError'], child
        assert 'forked child' in child[2] and str(os.getpid()) not in child[2], child
    else:  # whatever the child got, it was not another request's result
        assert child[0] == 'error' or child[1] in ('FROM-POOL-CHILD', 'FROM-FORKED-CHILD'), child


@pytest.mark.parametrize('scenario', ['pool', 'executor'])
def test_a_fork_context_pool_task_cannot_take_or_give_the_parents_results(backend, scenario):
    _check(backend, _run(backend, scenario))


@pytest.mark.parametrize('scenario', ['exit', 'leave'])
def test_a_forked_child_exits_normally_and_the_parent_keeps_serving(backend, scenario):
    _check(backend, _run(backend, scenario))


def test_a_forked_child_cannot_go_on_with_the_parents_stream(backend):
    report = _run(backend, 'stream')
    _check(backend, report)
    assert report['stream'] == list(range(1, 1000)), 'the parent lost or got foreign items of its stream'


def test_every_use_of_the_parents_server_in_a_forked_child_raises_at_once(backend):
    report = _run(backend, 'uses')
    assert all(x == y for x, y in report['parent']), report['parent']
    assert report['after'] == [f'after-{i}' for i in range(5)]
    assert report['child_exit'] == 0
    kind, uses = report['child']
    assert kind == 'uses'
    for name, (error, says_forked, seconds) in uses.items():
        assert error == 'RuntimeError' and says_forked, (name, error)
        assert seconds < 2, (name, seconds)  # at once, not after a timeout
