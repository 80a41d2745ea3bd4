"""Load: many items, and many callers mixing every kind of request.

Shortened here; the full runs (1e6 items, 60 s) are
``python tests/_load.py`` (see docs/failures.md).  mpserver only: these sizes
would take minutes on mpservice, and mpservice's ``backpressure=False`` can
overshoot ``capacity`` under contention (see docs/semantics.md).
"""

import _load


def test_a_million_items_through_two_batching_workers():
    _load.stream_many(1_000_000)


def test_thirty_two_threads_mixing_calls_streams_timeouts_and_backpressure():
    counts = _load.mixed(seconds=6)
    # Every kind of request really happened, and the capacity turned some away.
    for kind in ('call', 'stream', 'timeout', 'wait', 'turned-away'):
        assert counts.get(kind, 0) > 0, counts
