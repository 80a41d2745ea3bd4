"""Fuzzes the HTTP front's translation layer (cpp/http_message.hpp) with atheris.

    PYTHONPATH=python python tests/fuzz/fuzz_http.py -max_total_time=600   # the long run
    PYTHONPATH=python python tests/fuzz/fuzz_http.py -atheris_runs=50000   # what the suite runs

Two entry points, the code the front runs:

* ``_core.decode_request_record``: never crashes; ``None`` or a record that
  re-encodes (``_core.encode_request_record``) to exactly the input bytes
  (decode accepts exactly what encode produces).
* ``_core.http_answer(flags, payload)``: never raises for any 32-bit flags
  and payload; the status is in 200..599, the content type one of the
  front's, an error body is a JSON object {"error", "message"} (valid JSON
  even when the worker's crash report was not UTF-8), and each kind of
  result gets the answer http_message.hpp promises (checked against a model
  written from that header comment).

Half the inputs are built to look like the real thing (a record with
plausible lengths, then maybe one length or byte changed, cut or extended;
an HttpHead with a real body kind; a guardian crash report with its 0x1f
separators) so mutations explore the checks rather than bouncing off the
magic.  As in fuzz_frames.py, coverage feedback comes from the Python
harness only (the core is built with gcc).

Not reachable from here: split_target and HttpRoutes (not exposed by the
bindings; the front's own tests drive them over sockets).
"""

from __future__ import annotations

import json
import struct
import sys

import atheris
from mpserver import _core

FIXED = struct.Struct('<4sIIIIQ')  # magic, method, path, query, header count, body length
PAIR = struct.Struct('<II')
HEAD = struct.Struct('<HBB')  # HttpHead (cpp/wire.hpp): status, body kind, reserved
assert HEAD.size == _core.HTTP_HEAD_BYTES

OCTETS = 'application/octet-stream'
TEXT = 'text/plain; charset=utf-8'
JSON = 'application/json'
METRICS = 'text/plain; version=0.0.4; charset=utf-8'  # GET /metrics (http_front.cpp)
CONTENT_TYPES = {OCTETS, TEXT, JSON, METRICS}
KINDS = {0: OCTETS, 1: TEXT, 2: JSON}  # HttpBody

F = _core.Flag
HTTP, ERROR, CRASH, RAW = int(F.HTTP), int(F.ERROR), int(F.CRASH), int(F.RAW)
NOT_RAW = int(F.OBJECT) | int(F.ENSEMBLE) | int(F.OOB)
FLAG_BITS = [int(getattr(F, n)) for n in dir(F) if n.isupper()]
CRASH_KINDS = [b'process', b'servlet', b'thread', b'dropped', b'']


def encode(method: bytes, path: bytes, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The request record, written from http_message.hpp's layout."""
    out = bytearray(FIXED.pack(b'MPRQ', len(method), len(path), len(query), len(headers), len(body)))
    out += method + path + query
    for name, value in headers:
        out += PAIR.pack(len(name), len(value)) + name + value
    return bytes(out + body)


@atheris.instrument_func
def record_from(fdp: atheris.FuzzedDataProvider) -> bytes:
    fields = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 24)) for _ in range(3)]
    headers = [
        (fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16)), fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 32)))
        for _ in range(fdp.ConsumeIntInRange(0, 5))
    ]
    rec = bytearray(encode(*fields, headers, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))))
    how = fdp.ConsumeIntInRange(0, 5)
    if how == 1:  # one length field says something else
        at = fdp.PickValueInList([4, 8, 12, 16, 20])
        size = 8 if at == 20 else 4
        top = 2 ** (size * 8) - 1
        value = fdp.PickValueInList([0, 1, 2**31, 2**32 - 1, top, fdp.ConsumeInt(size)])
        rec[at : at + size] = (value & top).to_bytes(size, 'little')
    elif how == 2 and rec:  # cut short
        del rec[fdp.ConsumeIntInRange(0, len(rec) - 1) :]
    elif how == 3:  # trailing bytes
        rec += fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 8)) or b'\0'
    elif how == 4 and rec:  # one byte changed anywhere
        rec[fdp.ConsumeIntInRange(0, len(rec) - 1)] = fdp.ConsumeIntInRange(0, 255)
    return bytes(rec)


@atheris.instrument_func
def check_decode(fdp: atheris.FuzzedDataProvider) -> None:
    raw = record_from(fdp) if fdp.ConsumeBool() else fdp.ConsumeBytes(4096)
    got = _core.decode_request_record(raw)
    if got is None:
        return
    method, path, query, headers, body = got
    assert all(type(x) is bytes for x in (method, path, query, body))
    assert all(type(n) is bytes and type(v) is bytes for n, v in headers)
    assert _core.encode_request_record(method, path, query, headers, body) == raw, raw
    assert encode(method, path, query, headers, body) == raw, raw


@atheris.instrument_func
def payload_from(fdp: atheris.FuzzedDataProvider, flags: int) -> bytes:
    shape = fdp.ConsumeIntInRange(0, 3)
    if shape == 1:  # an HttpHead, maybe with a status or kind out of range, then a body
        status = fdp.PickValueInList(
            [200, 201, 204, 404, 500, 599, 0, 199, 600, 65535, fdp.ConsumeIntInRange(0, 65535)]
        )
        kind = fdp.PickValueInList([0, 1, 2, 3, 255, fdp.ConsumeIntInRange(0, 255)])
        return HEAD.pack(status, kind, fdp.ConsumeIntInRange(0, 255)) + fdp.ConsumeBytes(64)
    if shape == 2:  # a guardian crash report: kind, label, name, index, pid, wait status, note
        fields = [fdp.PickValueInList(CRASH_KINDS)] + [
            fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 12)) for _ in range(fdp.ConsumeIntInRange(0, 8))
        ]
        if len(fields) > 5 and fdp.ConsumeBool():
            fields[5] = str(fdp.PickValueInList([0, 9, 256, 0x7F, 2**31, fdp.ConsumeIntInRange(0, 2**40)])).encode()
        return b'\x1f'.join(fields)
    if shape == 3 and fdp.ConsumeBool():
        return fdp.ConsumeBytes(HEAD.size - 1)  # too short for a head
    return fdp.ConsumeBytes(256)


def worker_answer(flags: int, payload: bytes) -> tuple[int, str] | None:
    """(status, content type) of a response the worker encoded that the
    front passes on as it is, or None."""
    if not flags & HTTP or len(payload) < HEAD.size:
        return None
    status, kind, _ = HEAD.unpack_from(payload)
    return (status, KINDS[kind]) if kind in KINDS and 200 <= status <= 599 else None


def error_status(flags: int, payload: bytes) -> int:
    """The status of the front's own error answer (http_message.hpp)."""
    if flags & HTTP:
        return 500  # a malformed worker response
    if flags & ERROR and flags & CRASH:
        return 503 if payload.startswith(b'dropped\x1f') else 502
    return 500


@atheris.instrument_func
def check_answer(fdp: atheris.FuzzedDataProvider) -> None:
    if fdp.ConsumeBool():
        flags = 0
        for bit in FLAG_BITS:
            if fdp.ConsumeBool():
                flags |= bit
    else:
        flags = fdp.ConsumeIntInRange(0, 2**32 - 1)
    payload = payload_from(fdp, flags)
    status, ctype, body = _core.http_answer(flags, payload)
    assert 200 <= status <= 599, (status, flags, payload)
    assert ctype in CONTENT_TYPES, ctype
    assert type(body) is bytes
    worker = worker_answer(flags, payload)
    if worker:  # the worker's response, as it encoded it
        assert (status, ctype, body) == (*worker, payload[HEAD.size :]), (flags, payload)
    elif not flags & (HTTP | ERROR) and flags & RAW and not flags & NOT_RAW:  # a raw result: 200, its bytes
        assert (status, ctype, body) == (200, OCTETS, payload), (flags, payload)
    else:
        assert (status, ctype) == (error_status(flags, payload), JSON), (status, ctype, flags, payload)
        error = json.loads(body.decode('utf-8'))  # strict: valid UTF-8 JSON even from non-UTF-8 reports
        assert type(error) is dict and set(error) == {'error', 'message'}, error
        assert all(type(v) is str for v in error.values()), error


@atheris.instrument_func
def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        check_decode(fdp)
    else:
        check_answer(fdp)


def main(argv: list[str]) -> None:
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == '__main__':
    main(sys.argv)
