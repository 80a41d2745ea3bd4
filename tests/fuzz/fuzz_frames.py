"""Fuzzes the frame decoder and the ensemble composite parser with atheris.

    PYTHONPATH=python python tests/fuzz/fuzz_frames.py -max_total_time=600   # the long run
    PYTHONPATH=python python tests/fuzz/fuzz_frames.py -atheris_runs=20000   # what the suite runs

Each input is laid into a fresh ring as raw bytes (as if a broken producer
had written them) and consumed; and parsed as an ensemble composite.  The only
acceptable outcomes are messages read or ``RingCorrupt`` / a malformed-
composite verdict: any other exception, a crash or a hang is a bug.

Half the inputs are built to look like real frames (valid framing bits,
plausible lengths) from the fuzzer's bytes, so mutations explore the checks
themselves rather than bouncing off the first one.  The C++ core is built
with gcc, so coverage feedback comes from the Python harness only; the
structure-aware generation makes up for part of that.
"""

from __future__ import annotations

import struct
import sys

import atheris
from mpserver import _core

FIRST, LAST, ABORT = 1, 2, 4
HEADER = struct.Struct('<IIQQQq')  # len, flags, id, total, aux, stamp


@atheris.instrument_func
def frames_from(fdp: atheris.FuzzedDataProvider) -> bytes:
    out = bytearray()
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        length = fdp.ConsumeIntInRange(0, 20000)
        flags = fdp.PickValueInList([FIRST | LAST, FIRST, LAST, 0, ABORT | LAST, fdp.ConsumeInt(4)])
        total = fdp.PickValueInList([length, length * 2, 0, fdp.ConsumeInt(8) & (2**64 - 1)])
        ident = fdp.ConsumeIntInRange(0, 3)
        out += HEADER.pack(length & 0xFFFFFFFF, flags & 0xFFFFFFFF, ident, total, 0, 0)
        body = fdp.ConsumeBytes(min(length, 64))
        out += body.ljust((length + 7) & ~7, b'\0')
    return bytes(out)


@atheris.instrument_func
def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    raw = frames_from(fdp) if fdp.ConsumeBool() else fdp.ConsumeBytes(70000)
    try:
        _core._fuzz_frames(raw)
    except _core.RingCorrupt:
        pass
    parts, ok = _core._fuzz_composite(raw[:4096] if fdp.ConsumeBool() else data)
    assert parts >= 0 and ok in (True, False)


def main(argv: list[str]) -> None:
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == '__main__':
    main(sys.argv)
