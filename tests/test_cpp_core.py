"""Runs the C++ engine's unit and stress tests (Catch2), plain and under
ASan+UBSan and TSan.  Needs g++ and Catch2 v2 headers (Debian: catch2)."""

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / 'cpp' / 'run_sanitizers.sh'


@pytest.mark.skipif(shutil.which('g++') is None, reason='needs g++ to build the C++ tests')
def test_engine_under_sanitizers(tmp_path):
    proc = subprocess.run(['bash', str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=1500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    # three builds, each with every test case passing
    assert out.count('All tests passed') == 3, out[-6000:]
    for name in ('ring mpmc: ok', 'window + collector: ok', 'timeouts: ok', 'completion queue: ok',
                 'ensemble router (fail_fast=1): ok', 'ensemble router (fail_fast=0): ok',
                 'claims: ok', 'recover producer: ok', 'recover consumer: ok',
                 'collector on corrupt ring: ok', 'guardian teardown: ok'):
        assert out.count(name) == 3, name
