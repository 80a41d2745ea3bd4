"""A short fuzzing run of the frame decoder and the composite parser (the
long run is documented in tests/fuzz/fuzz_frames.py).  Skipped where atheris
has no wheel (it is in the test extra for CPython < 3.12)."""

import os
import subprocess
import sys

import pytest


def test_frame_decoder_survives_fuzzing():
    pytest.importorskip('atheris')
    import mpserver

    script = os.path.join(os.path.dirname(__file__), 'fuzz', 'fuzz_frames.py')
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [os.path.dirname(os.path.dirname(mpserver.__file__)), os.environ.get('PYTHONPATH', '')]
        ),
    )
    proc = subprocess.run(
        [sys.executable, script, '-atheris_runs=50000', '-seed=1'], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'Done 50000' in proc.stderr, proc.stderr[-2000:]
