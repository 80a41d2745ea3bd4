"""Chaos: worker processes SIGKILLed every ~0.5 s while a batching 3-stage
pipeline streams items and other threads call the same server.

Shortened here (about 25 s); the full run is
``PYTHONPATH=python python tests/_chaos.py --items 1000000`` (see
docs/failures.md).  mpserver only, not the two-backend fixture: mpservice
0.16.8 hangs when a worker process dies while serving.  What is checked, and
why each bound holds, is in ``tests/_chaos.py``'s docstring.
"""

import _chaos


def test_killing_workers_every_half_second_loses_nothing_and_leaks_nothing():
    report = _chaos.run(items=1_000_000, seconds=20, kill_every=0.5, call_threads=4, seed=1)
    summary = report.summary()
    # Every check is one line of report.violations: the summary lists them,
    # with what happened (items, kills, crashed items, fds, threads, memory).
    assert report.ok, f'the chaos soak found {report.violation_count} violations:\n{summary}'
    # The soak really was chaotic and really was served, or it proved nothing.
    assert report.kills >= 10, f'too few kills to mean anything:\n{summary}'
    assert report.crashed_items + report.calls_crashed > 0, f'no item ever crashed:\n{summary}'
    assert report.items > 10_000 and report.calls_ok > 100, f'too little was served:\n{summary}'
