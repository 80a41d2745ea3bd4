"""Runs the C++ engine's stress tests, plain and under ASan+UBSan and TSan."""

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / 'cpp' / 'run_sanitizers.sh'


@pytest.mark.skipif(shutil.which('g++') is None, reason='needs g++ to build the C++ tests')
def test_engine_under_sanitizers(tmp_path):
    proc = subprocess.run(['bash', str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # three builds, each reporting every test ok
    for name in ('ring mpmc: ok', 'window + collector: ok', 'timeouts: ok', 'completion queue: ok',
                 'ensemble router (fail_fast=1): ok', 'ensemble router (fail_fast=0): ok',
                 'claims: ok', 'recover producer: ok', 'recover consumer: ok',
                 'collector on corrupt ring: ok', 'guardian teardown: ok'):
        assert out.count(name) == 3, out
