"""A short fuzzing run of the frame decoder and the composite parser (the
long run is documented in tests/fuzz/fuzz_frames.py).  Skipped where atheris
has no wheel (it is in the test extra for CPython < 3.12)."""

import os
import random
import struct
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


# The HTTP front's translation layer (cpp/http_message.hpp): a short run of
# tests/fuzz/fuzz_http.py (skipped without atheris, as above), and a
# round-trip test of the request record that needs no fuzzer.


def test_http_translation_survives_fuzzing():
    """tests/fuzz/fuzz_http.py: request records and answer_for (cpp/http_message.hpp)."""
    pytest.importorskip('atheris')
    import mpserver

    script = os.path.join(os.path.dirname(__file__), 'fuzz', 'fuzz_http.py')
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


def _random_field(rng: random.Random, longest: int) -> bytes:
    n = rng.choice([0, 1, rng.randrange(longest + 1)])
    return bytes(rng.choice([rng.randrange(256), rng.choice(b'aZ09 :/?%\r\n\0\x1f\xff')]) for _ in range(n))


def _layout(method: bytes, path: bytes, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The request record as http_message.hpp lays it out, written independently."""
    out = struct.pack('<4sIIIIQ', b'MPRQ', len(method), len(path), len(query), len(headers), len(body))
    out += method + path + query
    for name, value in headers:
        out += struct.pack('<II', len(name), len(value)) + name + value
    return out + body


def test_request_records_round_trip_and_reject_every_damaged_copy():
    """encode -> decode gives the fields back (any bytes, empty fields, many
    headers, big bodies); the bytes are the documented layout; every strict
    prefix, a trailing byte or a changed magic decodes to None."""
    from mpserver import _core
    from mpserver._wire.http_request import decode_request

    rng = random.Random(13)
    for i in range(400):
        fields = [_random_field(rng, 40) for _ in range(3)]
        headers = [
            (_random_field(rng, 30), _random_field(rng, 100)) for _ in range(rng.choice([0, 1, rng.randrange(60)]))
        ]
        body = _random_field(rng, 200) if i % 50 else rng.randbytes(rng.randrange(1 << 20))
        rec = _core.encode_request_record(*fields, headers, body)
        assert rec == _layout(*fields, headers, body)
        assert _core.decode_request_record(rec) == (*fields, headers, body)
        req = decode_request(rec)  # what a worker of a whole-request route gets
        assert (req.method, req.path, req.query) == tuple(f.decode('latin-1') for f in fields)
        assert req.raw_headers == [(n.decode('latin-1'), v.decode('latin-1')) for n, v in headers]
        assert req.body == body
        cuts = range(len(rec)) if len(rec) < 2000 else [*range(64), *rng.sample(range(len(rec)), 64)]
        for cut in cuts:
            assert _core.decode_request_record(rec[:cut]) is None, (i, cut)
        assert _core.decode_request_record(rec + b'\0') is None
        assert _core.decode_request_record(b'MPRS' + rec[4:]) is None
