"""Payloads between processes: bytes, numpy arrays, bytearrays, containers.

mpserver chooses one of three encodings per value (``mpserver._wire.codec``): a
value that is exactly ``bytes`` travels raw (FLAG_RAW); a value whose
protocol-5 pickle has out-of-band buffers of at least 64 KiB (numpy arrays,
PickleBuffers) travels as a directory + the pickle + the buffers
(FLAG_OOB, ``cpp/oob_message.hpp``); anything else is an ordinary pickle.
Large messages are copied straight from the ring into the receiving object,
results reach the caller without another copy, and messages larger than a
ring (8 MiB) are split into frames.

The tests in the first part run on both backends (``backend`` fixture) and
check what a user sees: values come back equal and of the same type, a
``bytes`` subclass stays that subclass, and numpy arrays are writable (in the
worker and in the caller) whenever the array sent was writable.  Sizes cover
both sides of the 64 KiB threshold and a payload larger than a ring.  The
last part checks mpserver's codec directly (no servers).

Workers (``backend.w.Inspect`` etc.) and the helpers ``describe_payload``,
``build_payload`` and ``MyBytes`` live in ``_backends`` so that worker
processes can re-import them.  Servers of stateless workers are shared by the
tests of this module (``servers`` fixture) to keep the run short; tests of
errors and of composed servlets start their own.
"""

import asyncio
import contextlib
import pickle
import random
import struct

import numpy as np
import pytest
from _backends import MyBytes, build_payload, describe_payload

KiB = 1 << 10
MB = 1_000_000
SIZES = [0, 100, 64 * KiB - 1, 64 * KiB, MB, 20 * MB]
SIZE_IDS = ['0B', '100B', '64KiB-1', '64KiB', '1MB', '20MB']
T = 120  # per-item timeout: generous, the machine is shared (never a timing assertion)


# ---------------------------------------------------------------- shared servers

# Worker processes of each shared server.
SHARED_CPUS = {'Echo': 2, 'AddOneInPlace': 2, 'Build': 2, 'Inspect': 1, 'InspectEcho': 1}


class SharedServers:
    """Servers of stateless workers (Echo, Inspect, ...), started on first use
    and shared by the tests of this module: one per backend and worker.
    Starting worker processes would otherwise dominate the run time.  Echo,
    AddOneInPlace and Build run 2 worker processes, so streams through them
    also complete out of order and are put back in order."""

    def __init__(self, stack):
        self._stack = stack
        self._servers = {}

    def use(self, b, worker):
        key = (b.name, worker)
        if key not in self._servers:
            servlet = b.ProcessServlet(getattr(b.w, worker), cpus=SHARED_CPUS[worker])
            self._servers[key] = self._stack.enter_context(b.Server(servlet))
        return contextlib.nullcontext(self._servers[key])


@pytest.fixture(scope='module')
def servers():
    with contextlib.ExitStack() as stack:
        yield SharedServers(stack)


# ---------------------------------------------------------------- helpers


def pattern(n, seed=0) -> bytes:
    """``n`` deterministic bytes, distinct per seed."""
    return build_payload('bytes', n, seed)


def assert_bytes(got, want, path='value'):
    assert type(got) is type(want), f'{path}: got {type(got).__name__}, want {type(want).__name__}'
    assert len(got) == len(want), f'{path}: length {len(got)} != {len(want)}'
    if got != want:
        diff = np.flatnonzero(np.frombuffer(got, np.uint8) != np.frombuffer(want, np.uint8))
        pytest.fail(f'{path}: {len(diff)} bytes differ, first at offset {diff[0]}')


def assert_array(got, want, path='value', *, writable=None):
    """``got`` equals ``want`` (dtype, shape, values); F-order is kept; the
    result is writable if ``want`` is (or as ``writable`` says)."""
    assert type(got) is np.ndarray, f'{path}: got {type(got).__name__}, want ndarray'
    assert got.dtype == want.dtype, f'{path}: dtype {got.dtype} != {want.dtype}'
    assert got.shape == want.shape, f'{path}: shape {got.shape} != {want.shape}'
    if not np.array_equal(got, want):
        bad = np.flatnonzero((got != want).ravel())
        pytest.fail(f'{path}: {len(bad)} elements differ, first at flat index {bad[0]}')
    if want.flags.f_contiguous and not want.flags.c_contiguous:
        assert got.flags.f_contiguous, f'{path}: a Fortran-ordered array lost its order'
    if writable is None:
        writable = bool(want.flags.writeable)
    if writable:
        assert got.flags.writeable, f'{path}: received array is read-only (the input was writable)'


def assert_same(got, want, path='value'):
    """Deep equality that also requires the same types all the way down
    (bytes stays bytes, bytearray stays bytearray, a subclass stays itself)
    and writable arrays wherever the input array was writable."""
    assert type(got) is type(want), f'{path}: got {type(got).__name__}, want {type(want).__name__}'
    if isinstance(want, np.ndarray):
        assert_array(got, want, path)
    elif isinstance(want, (bytes, bytearray)):
        assert_bytes(got, want, path)
        if hasattr(want, '__dict__'):
            assert got.__dict__ == want.__dict__, f'{path}: attributes {got.__dict__} != {want.__dict__}'
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), f'{path}: length {len(got)} != {len(want)}'
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f'{path}[{i}]')
    elif isinstance(want, dict):
        assert list(got) == list(want), f'{path}: keys {list(got)} != {list(want)}'
        for k in want:
            assert_same(got[k], want[k], f'{path}[{k!r}]')
    else:
        assert got == want, f'{path}: {got!r} != {want!r}'


def as_received(x):
    """The value a worker should see for ``x``: pickling makes a
    non-contiguous array contiguous (C order)."""
    if isinstance(x, np.ndarray) and not (x.flags.c_contiguous or x.flags.f_contiguous):
        return np.ascontiguousarray(x)
    if isinstance(x, (list, tuple)):
        return type(x)(as_received(v) for v in x)
    if isinstance(x, dict):
        return {k: as_received(v) for k, v in x.items()}
    return x


def plus(x, k):
    """``x + k`` computed in place on a copy, as a worker does it: keeps a 0-d
    array an array (``x + k`` would give a numpy scalar) and keeps the order."""
    y = x.copy(order='K')
    y += k
    return y


def add_one(x):
    """What AddOneInPlace returns for ``x``."""
    return plus(x, 1) if isinstance(x, np.ndarray) else x


def array_cases(n):
    """Writable numpy arrays of about ``n`` bytes, by name."""
    u8 = build_payload('array', n, 1)
    f64 = np.arange(n // 8, dtype=np.float64) * 0.25 - 7
    return {
        'u8-1d': u8,
        'f64-1d': f64,
        'f64-2d-C': (np.arange(n // 32 * 4, dtype=np.float64) / 3).reshape(-1, 4),
        'u8-2d-F': np.asfortranarray(u8[: n // 4 * 4].reshape(-1, 4)),
        'f64-2d-F': np.asfortranarray(f64[: n // 32 * 4].reshape(-1, 4)),
        'u8-strided': build_payload('array', 2 * n, 2)[::2],
    }


# ---------------------------------------------------------------- 1. bytes


@pytest.mark.parametrize('n', SIZES, ids=SIZE_IDS)
def test_bytes_echo_call_and_stream(servers, backend, n):
    b = backend
    items = [pattern(n, seed) for seed in range(3 if n > MB else 8)]
    with servers.use(b, 'Echo') as server:
        y = server.call(items[0], timeout=T)
        assert_bytes(y, items[0], 'call')
        out = list(server.stream(items, timeout=T))
    assert len(out) == len(items)
    for i, (y, x) in enumerate(zip(out, items, strict=True)):
        assert_bytes(y, x, f'stream[{i}]')  # equal, type bytes, in input order


@pytest.mark.parametrize('n', SIZES, ids=SIZE_IDS)
def test_worker_receives_bytes_as_bytes(servers, backend, n):
    b = backend
    items = [pattern(n, 1), pattern(n, 2)]
    with servers.use(b, 'Inspect') as server:
        seen = list(server.stream(items, timeout=T))
    assert seen == [describe_payload(x) for x in items]  # ('bytes', n, read-only, crc)


def test_bytes_echo_async_server(backend):
    b = backend
    if b.AsyncServer is None:
        pytest.fail(f'backend {b.name!r} lacks AsyncServer', pytrace=False)
    items = [pattern(MB, 1), pattern(20 * MB, 2), pattern(100, 3), pattern(64 * KiB, 4)]

    async def agen():
        for x in items:
            yield x

    async def main():
        async with b.AsyncServer(b.ProcessServlet(b.w.Echo)) as server:
            called = await asyncio.gather(*(server.call(x, timeout=T) for x in items))
            streamed = [y async for y in server.stream(agen(), timeout=T)]
        return called, streamed

    called, streamed = asyncio.run(main())
    for i, x in enumerate(items):
        assert_bytes(called[i], x, f'call[{i}]')
        assert_bytes(streamed[i], x, f'stream[{i}]')


def test_bytes_echo_server_async_call(backend):
    b = backend
    if not hasattr(b.Server, 'async_call'):
        pytest.skip(f'{b.name} has no Server.async_call (mpservice 0.16.8 moved it to AsyncServer.call)')
    items = [pattern(MB, 5), pattern(20 * MB, 6), pattern(10, 7)]

    async def main(server):
        return await asyncio.gather(*(server.async_call(x, timeout=T) for x in items))

    with b.Server(b.ProcessServlet(b.w.Echo)) as server:
        out = asyncio.run(main(server))
    for i, x in enumerate(items):
        assert_bytes(out[i], x, f'async_call[{i}]')


def test_payloads_around_the_ring_size(servers, backend):
    """Messages just below, at and just above one ring (8 MiB in mpserver),
    raw and out-of-band, arrive whole."""
    b = backend
    ring = 8 << 20
    items = [
        pattern(ring - 1, 1),
        pattern(ring, 2),
        pattern(ring + 1, 3),
        pattern(2 * ring + 7, 4),
        build_payload('array', ring - 256, 5),
        build_payload('array', ring, 6),
        build_payload('array', ring + 1, 7),
        bytearray(pattern(ring, 8)),
    ]
    with servers.use(b, 'Echo') as server:
        out = list(server.stream(items, timeout=T))
    assert len(out) == len(items)
    for i, (x, y) in enumerate(zip(items, out, strict=True)):
        assert_same(y, x, f'item {i} ({len(x)} bytes)')


# ---------------------------------------------------------------- 2. numpy arrays


@pytest.mark.parametrize('n', SIZES, ids=SIZE_IDS)
def test_numpy_arrays_round_trip(servers, backend, n):
    b = backend
    cases = array_cases(n)
    names, arrays = list(cases), list(cases.values())
    with servers.use(b, 'Echo') as server:
        out = list(server.stream(arrays, timeout=T))
        y = server.call(arrays[0], timeout=T)
    assert_array(y, arrays[0], 'call')
    assert len(out) == len(arrays)
    for name, x, y in zip(names, arrays, out, strict=True):
        assert_array(y, x, name)
    for name, x in zip(names, arrays, strict=True):  # sending does not touch the caller's arrays
        assert_array(x, array_cases(n)[name], f'input {name}')


@pytest.mark.parametrize('n', SIZES, ids=SIZE_IDS)
def test_numpy_arrays_arrive_writable_and_can_be_modified_in_place(servers, backend, n):
    b = backend
    cases = array_cases(n)
    names, arrays = list(cases), list(cases.values())
    with servers.use(b, 'Inspect') as server:
        seen = list(server.stream(arrays, timeout=T))
    for name, x, d in zip(names, arrays, seen, strict=False):
        # dtype, shape, order, writable=True, checksum, as seen in the worker
        assert d == describe_payload(as_received(x)), name
    with servers.use(b, 'AddOneInPlace') as server:
        out = list(server.stream(arrays, timeout=T))
    for name, x, y in zip(names, arrays, out, strict=False):
        assert_array(y, plus(x, 1), name)
        y += 1  # the caller may modify the result in place, too
        assert_array(y, plus(plus(x, 1), 1), f'{name} modified by the caller')


def special_arrays():
    rec = np.zeros(MB // 16, dtype=[('a', '<i8'), ('b', '<f4'), ('c', 'u1', (4,))])
    rec['a'] = np.arange(len(rec))
    rec['b'] = 0.5
    rec['c'] = 7
    return {
        '0d-f64': np.array(3.5),
        '0d-u8': np.array(7, dtype=np.uint8),
        'empty-f64': np.empty(0, dtype=np.float64),
        'empty-2d-u8': np.empty((0, 5), dtype=np.uint8),
        'empty-big-dim': np.empty((100_000, 0), dtype=np.float64),
        'bool-1MB': np.arange(MB) % 3 == 0,
        'i32-3d': np.arange(MB // 4, dtype=np.int32).reshape(10, -1, 25),
        'c128-F': np.asfortranarray((np.arange(MB // 16) * (1 + 2j)).reshape(-1, 5)),
        'record-1MB': rec,
        'f32-transposed': np.arange(MB // 4, dtype=np.float32).reshape(-1, 50).T,  # F-contiguous view
        'u8-2d-column-slice': build_payload('array', 2 * MB, 3).reshape(-1, 100)[:, 10:60],  # non-contiguous
    }


def test_numpy_special_arrays(servers, backend):
    """0-d, empty, bool, 3-D, complex Fortran, structured dtype, a transposed
    view and a non-contiguous 2-D slice."""
    b = backend
    cases = special_arrays()
    names, arrays = list(cases), list(cases.values())
    with servers.use(b, 'InspectEcho') as server:
        out = list(server.stream(arrays, timeout=T))
    for name, x, (seen, y) in zip(names, arrays, out, strict=False):
        assert seen == describe_payload(as_received(x)), name
        assert_array(y, x, name)
    numeric = [n for n in names if not n.startswith(('record', 'bool'))]
    with servers.use(b, 'AddOneInPlace') as server:
        out = list(server.stream([cases[n] for n in numeric], timeout=T))
    for name, y in zip(numeric, out, strict=False):
        assert_array(y, plus(cases[name], 1), name)


@pytest.mark.parametrize('n', [100, 64 * KiB, MB, 20 * MB], ids=['100B', '64KiB', '1MB', '20MB'])
def test_read_only_array_round_trips(servers, backend, n):
    """A read-only array comes back equal; whether it arrives writable is not
    specified (mpservice's protocol-4 pickle makes a writable copy; a
    protocol-5 pickle keeps it read-only)."""
    b = backend
    x = build_payload('array', n, 9).reshape(-1, 4) if n % 4 == 0 else build_payload('array', n, 9)
    x.flags.writeable = False
    with servers.use(b, 'InspectEcho') as server:
        seen, y = server.call(x, timeout=T)
        y2 = server.call([x, x], timeout=T)[1]
    assert seen[:4] == describe_payload(x)[:4]  # ndarray, dtype, shape, order
    assert seen[5] == describe_payload(x)[5]  # checksum
    assert_array(y, x, writable=False)
    for i, v in enumerate(y2):
        assert_array(v, x, f'list[{i}]', writable=False)


# ---------------------------------------------------------------- 3. bytearray, containers, PickleBuffer


@pytest.mark.parametrize('n', [0, 100, 64 * KiB, MB, 20 * MB], ids=['0B', '100B', '64KiB', '1MB', '20MB'])
def test_bytearray_and_mixed_containers(servers, backend, n):
    b = backend
    items = [
        bytearray(pattern(n, 5)),
        (b'raw', build_payload('array', n, 6), {'k': bytearray(pattern(n, 7))}, 'text'),
        [pattern(n, 8), b'small', ('nested', pattern(n, 9))],  # bytes inside containers stay bytes
        build_payload('mixed', n, 4),
        [build_payload('array', n, s) for s in range(3)] + [np.arange(10), bytearray(pattern(n, 3))],
        {'a': np.asfortranarray(np.ones((n // 32, 4))), 'b': [bytearray(n), pattern(n, 2)], 'c': None, 'd': 1.5},
    ]
    with servers.use(b, 'InspectEcho') as server:
        out = list(server.stream(items, timeout=T))
    assert len(out) == len(items)
    for i, (x, (seen, y)) in enumerate(zip(items, out, strict=True)):
        assert seen == describe_payload(x), f'item {i} as seen by the worker'
        assert_same(y, x, f'item {i}')


PICKLE_BUFFER_SKIP = (
    'mpservice pickles with protocol 4 (multiprocessing ForkingPickler default) and a '
    'PickleBuffer needs protocol 5: PicklingError in its _onboard_input thread, the call '
    'times out and the server takes no more items'
)


def pickle_buffer_case(n):
    """A container of PickleBuffers, and what it should unpickle as."""
    ro, rw = pattern(n, 1), bytearray(pattern(n, 2))
    x = {'ro': pickle.PickleBuffer(ro), 'rw': [pickle.PickleBuffer(rw)], 'n': n}
    return x, {'ro': ro, 'rw': [rw], 'n': n}


# A PickleBuffer unpickles as the bytes-like object it wraps: bytes for a
# read-only buffer, bytearray for a writable one (what an in-band protocol-5
# pickle gives), whatever its size.


@pytest.mark.parametrize('n', [100, 64 * KiB, MB], ids=['100B', '64KiB', '1MB'])
def test_pickle_buffer_arrives_as_the_object_it_wraps(servers, backend, n):
    b = backend
    if b.name == 'mpservice':
        pytest.skip(PICKLE_BUFFER_SKIP)
    x, want = pickle_buffer_case(n)
    with servers.use(b, 'Inspect') as server:
        seen = server.call(x, timeout=T)
    assert seen == describe_payload(want)


@pytest.mark.parametrize('n', [100, 64 * KiB, MB], ids=['100B', '64KiB', '1MB'])
def test_pickle_buffer_round_trip(servers, backend, n):
    b = backend
    if b.name == 'mpservice':
        pytest.skip(PICKLE_BUFFER_SKIP)
    x, want = pickle_buffer_case(n)
    with servers.use(b, 'Echo') as server:
        y = server.call(x, timeout=T)
    assert_same(y, want)


# ---------------------------------------------------------------- 4. bytes subclasses


@pytest.mark.parametrize('n', [0, 100, 64 * KiB, MB, 20 * MB], ids=['0B', '100B', '64KiB', '1MB', '20MB'])
def test_bytes_subclass_keeps_its_type(servers, backend, n):
    b = backend
    x = MyBytes(pattern(n, 3))
    x.note = f'note {n}'
    items = [x, [x, b'plain'], {'k': x}, MyBytes(pattern(n, 4))]
    with servers.use(b, 'InspectEcho') as server:
        out = list(server.stream(items, timeout=T))
        y = server.call(x, timeout=T)
    assert_same(y[1], x, 'call')
    for i, (x_, (seen, y_)) in enumerate(zip(items, out, strict=False)):
        assert seen == describe_payload(x_), f'item {i} as seen by the worker'
        assert_same(y_, x_, f'item {i}')
    assert y[1].note == x.note


# ---------------------------------------------------------------- 5. composition


@pytest.mark.parametrize('shape', ['PTP', 'PP'])
def test_sequential_pipeline_with_large_payloads(backend, shape):
    """Every AddOneInPlace stage modifies the array it receives in place (so it
    must be writable there); the last stage reports what it received."""
    b = backend
    stages = {'P': lambda: b.ProcessServlet(b.w.AddOneInPlace), 'T': lambda: b.ThreadServlet(b.w.AddOneInPlace)}
    servlet = b.SequentialServlet(*(stages[c]() for c in shape), b.ProcessServlet(b.w.InspectEcho))
    k = len(shape)
    items = [
        pattern(MB, 1),
        build_payload('array', MB, 2),
        np.asfortranarray(np.arange(MB // 8, dtype=np.float64).reshape(-1, 8)),
        build_payload('mixed', MB, 3),
        MyBytes(pattern(MB, 4)),
        bytearray(pattern(MB, 5)),
        pattern(20 * MB, 6),
        build_payload('array', 20 * MB, 7),
        pattern(100, 8),
    ]
    want = [plus(x, k) if isinstance(x, np.ndarray) else x for x in items]
    with b.Server(servlet) as server:
        seen, y = server.call(items[0], timeout=T)
        assert seen == describe_payload(items[0])
        assert_same(y, items[0], 'call')
        out = list(server.stream(items, timeout=T))
    assert len(out) == len(items)
    for i, (w, (seen, y)) in enumerate(zip(want, out, strict=True)):
        assert seen == describe_payload(w), f'item {i} as seen by the last stage'
        assert_same(y, w, f'item {i}')


def ensemble_items():
    return [
        pattern(MB, 1),
        build_payload('array', MB, 2),
        build_payload('mixed', MB, 3),
        bytearray(pattern(MB, 4)),
        pattern(20 * MB, 5),
        build_payload('array', 20 * MB, 6),
        pattern(100, 7),
        np.arange(5.0),
        MyBytes(pattern(MB, 8)),
    ]


def test_ensemble_of_processes_with_large_payloads(backend):
    b = backend
    items = ensemble_items()
    ens = b.EnsembleServlet(b.ProcessServlet(b.w.Echo), b.ProcessServlet(b.w.AddOneInPlace))
    with b.Server(ens) as server:
        y = server.call(items[1], timeout=T)
        out = list(server.stream(items, timeout=T))
    assert isinstance(y, list) and len(y) == 2
    assert_same(y[0], items[1], 'call[0]')
    assert_same(y[1], plus(items[1], 1), 'call[1]')
    assert len(out) == len(items)
    for i, (x, r) in enumerate(zip(items, out, strict=True)):
        assert isinstance(r, list) and len(r) == 2, f'item {i}: {type(r).__name__}'
        assert_same(r[0], x, f'item {i}, member 0')
        assert_same(r[1], add_one(x), f'item {i}, member 1')
        if isinstance(x, np.ndarray):  # the two parts are separate arrays
            r[0][...] = 0
            assert_same(r[1], add_one(x), f'item {i}, member 1 after zeroing member 0')


def test_ensemble_members_build_large_results(backend):
    b = backend
    reqs = [
        ('bytes', MB, 1),
        ('array', MB, 2),
        ('mixed', MB, 3),
        ('bytes', 20 * MB, 4),
        ('array', 20 * MB, 5),
        ('mixed', 100, 6),
        ('bytes', 64 * KiB - 1, 7),
    ]
    ens = b.EnsembleServlet(b.ProcessServlet(b.w.Build), b.ProcessServlet(b.w.Build))
    with b.Server(ens) as server:
        out = list(server.stream(reqs, timeout=T))
    for r, ys in zip(reqs, out, strict=False):
        want = build_payload(*r)
        assert isinstance(ys, list) and len(ys) == 2
        assert_same(ys[0], want, f'{r} member 0')
        assert_same(ys[1], want, f'{r} member 1')


@pytest.mark.parametrize('after', ['P', 'T'])
def test_ensemble_result_passed_to_a_next_stage(backend, after):
    """The ensemble's joined result travels on to a process stage (or is
    decoded for a thread stage): that stage sees the list of both members'
    results, with bytes as bytes and writable arrays."""
    b = backend
    items = ensemble_items()
    nxt = b.ProcessServlet(b.w.InspectEcho) if after == 'P' else b.ThreadServlet(b.w.InspectEcho)
    seq = b.SequentialServlet(b.EnsembleServlet(b.ProcessServlet(b.w.Echo), b.ProcessServlet(b.w.AddOneInPlace)), nxt)
    with b.Server(seq) as server:
        out = list(server.stream(items, timeout=T))
    assert len(out) == len(items)
    for i, (x, (seen, y)) in enumerate(zip(items, out, strict=True)):
        want = [x, add_one(x)]
        assert seen == describe_payload(want), f'item {i} as seen by the next stage'
        assert_same(y, want, f'item {i}')


def test_batching_with_large_items(backend):
    b = backend
    items = []
    for i in range(10):
        items.append(pattern(MB, i) if i % 2 == 0 else build_payload('array', MB, i))
    items[3] = build_payload('mixed', MB, 3)
    items.append(pattern(20 * MB, 10))
    items.append(build_payload('array', 20 * MB, 11))
    with b.Server(b.ProcessServlet(b.w.BatchEcho, batch_size=4, batch_wait_time=0.05)) as server:
        out = list(server.stream(items, timeout=T))
        blen, seen, y = server.call(items[1], timeout=T)
    assert blen == 1 and seen == describe_payload(items[1])
    assert_same(y, items[1], 'call')
    assert len(out) == len(items)
    for i, (x, (blen, seen, y)) in enumerate(zip(items, out, strict=True)):
        assert 1 <= blen <= 4, f'item {i}: batch of {blen}'
        assert seen == describe_payload(x), f'item {i} as seen by the worker'
        assert_same(y, x, f'item {i}')


# ---------------------------------------------------------------- 6. errors


def test_worker_error_on_a_large_input(backend):
    b = backend
    big = pattern(MB, 1)
    with b.Server(b.ProcessServlet(b.w.RaiseIfLarge, limit=MB)) as server:
        with pytest.raises(ValueError, match='payload of 1000000 bytes is too large') as ei:
            server.call(big, timeout=T)
        assert ei.value.args[1] == MB
        assert_bytes(server.call(pattern(100, 2), timeout=T), pattern(100, 2))
        items = [big, pattern(MB - 1, 3), bytearray(pattern(20 * MB, 4)), bytearray(pattern(64 * KiB, 5)), big]
        out = list(server.stream(items, return_exceptions=True, timeout=T))
    assert len(out) == len(items)
    for i in (0, 2, 4):
        assert isinstance(out[i], ValueError), f'item {i}: {out[i]!r:.200}'
        assert out[i].args[1] == len(items[i])
    assert_same(out[1], items[1], 'item 1')
    assert_same(out[3], items[3], 'item 3')


def test_unpicklable_result_does_not_affect_the_next_large_item(backend):
    b = backend
    if b.name == 'mpservice':
        pytest.skip(
            "mpservice's worker process dies when a result cannot be pickled (TypeError in its "
            'result thread): that item and every later one time out, even with return_exceptions'
        )
    items = [
        pattern(MB, 1),
        b'lock',
        pattern(20 * MB, 2),
        build_payload('array', MB, 3),
        b'lock',
        build_payload('mixed', MB, 4),
    ]
    with b.Server(b.ProcessServlet(b.w.LockOnMarker)) as server:
        out = list(server.stream(items, return_exceptions=True, timeout=T))
        with pytest.raises(pickle.PicklingError, match='lock'):
            server.call(b'lock', timeout=T)
        assert_bytes(server.call(pattern(MB, 5), timeout=T), pattern(MB, 5))
    assert len(out) == len(items)
    for i, x in enumerate(items):
        if type(x) is bytes and x == b'lock':
            assert isinstance(out[i], pickle.PicklingError), f'item {i}: {out[i]!r:.200}'
        else:
            assert_same(out[i], x, f'item {i}')


# ---------------------------------------------------------------- 7. many large items in flight


def test_many_large_arrays_in_flight(servers, backend):
    """200 distinct 256 KiB arrays (each filled with its index) through 2 worker
    processes that add 1 in place: every result is its own item's, in order,
    and the caller holds all of them at once (no buffer is reused under it)."""
    b = backend
    n = 200
    items = [np.full(256 * KiB // 8, i, dtype=np.int64) for i in range(n)]
    with servers.use(b, 'AddOneInPlace') as server:
        out = list(server.stream(items, timeout=T))
    assert len(out) == n
    bad = [
        i
        for i, y in enumerate(out)
        if not (type(y) is np.ndarray and y.shape == (256 * KiB // 8,) and y.flags.writeable and (y == i + 1).all())
    ]
    assert not bad, f'{len(bad)} wrong results, first at index {bad[0]}'
    assert all((x == i).all() for i, x in enumerate(items)), "the caller's arrays were modified"


def test_many_large_bytes_in_flight(servers, backend):
    b = backend
    n = 200
    items = [struct.pack('<I', i) * (256 * KiB // 4) for i in range(n)]
    with servers.use(b, 'Echo') as server:
        out = list(server.stream(items, timeout=T))
    assert len(out) == n
    bad = [i for i, (x, y) in enumerate(zip(items, out, strict=True)) if type(y) is not bytes or y != x]
    assert not bad, f'{len(bad)} wrong results, first at index {bad[0]}'


@pytest.mark.parametrize('n', SIZES, ids=SIZE_IDS)
def test_large_results_built_in_the_worker(servers, backend, n):
    """Results made in the worker (not echoes of an input), held together in
    the caller."""
    b = backend
    reqs = [(kind, n, seed) for seed in range(2) for kind in ('bytes', 'array', 'mixed')]
    with servers.use(b, 'Build') as server:
        out = list(server.stream(reqs, timeout=T))
        y = server.call(('array', n, 9), timeout=T)
    assert_same(y, build_payload('array', n, 9), 'call')
    assert len(out) == len(reqs)
    for r, y in zip(reqs, out, strict=True):
        assert_same(y, build_payload(*r), str(r))


# ---------------------------------------------------------------- 8. mpserver's codec


@pytest.fixture(scope='module')
def codec():
    import mpserver._wire.codec as codec

    return codec


def oob_message(head, *buffers) -> bytes:
    """A FLAG_OOB payload laid out as cpp/oob_message.hpp describes."""
    secs = [bytes(head)] + [memoryview(buf).cast('B').tobytes() for buf in buffers]

    def pad(k):
        return b'\0' * ((16 - k % 16) % 16)

    msg = struct.pack('<II', len(secs), 0) + b''.join(struct.pack('<Q', len(s)) for s in secs)
    msg += pad(len(msg))
    for s in secs:
        msg += s + pad(len(s))
    return msg


def test_codec_pickle_chooses_the_encoding(codec):
    FLAG_RAW, FLAG_OOB = codec.FLAG_RAW, codec.FLAG_OOB
    assert codec.OOB_MIN_BYTES == 64 * KiB
    for x in (b'', b'abc', pattern(MB)):
        flags, payload = codec.PickleCodec.encode(x)
        assert flags == FLAG_RAW and payload is x
    # bytes subclasses, bytearrays and small arrays, scalars: a plain pickle
    for x in (
        MyBytes(b'abc'),
        MyBytes(pattern(MB)),
        bytearray(100),
        np.arange(10),
        np.zeros(64 * KiB - 1, np.uint8),
        12345,
        'text',
        None,
        1.5,
        [b'abc', 1],
        (pattern(MB), 'bytes in a container are in-band'),
        np.arange(2 * MB, dtype=np.uint8)[::2],  # a non-contiguous array: numpy pickles a copy in-band
    ):
        flags, payload = codec.PickleCodec.encode(x)
        assert flags == 0 and type(payload) is bytes, f'{type(x).__name__}: {flags}, {type(payload).__name__}'
        assert_same(pickle.loads(payload), x)
    # A bare PickleBuffer over bytes/bytearray stays in-band, so that it still
    # arrives as bytes/bytearray (out of band it would arrive as a memoryview).
    for wrapped in (pattern(MB), bytearray(pattern(MB))):
        flags, payload = codec.PickleCodec.encode([pickle.PickleBuffer(wrapped)])
        assert flags == 0 and type(payload) is bytes
        (got,) = pickle.loads(payload)
        assert type(got) is type(wrapped) and got == wrapped
    # out-of-band: the pickle, then one PickleBuffer per large buffer
    a = build_payload('array', MB, 1)
    f = np.asfortranarray(np.ones((MB // 64, 8)))
    ro = build_payload('array', MB, 2)
    ro.flags.writeable = False
    # (Not asserted: a bytearray.  CPython's pickler writes a bytearray in-band
    # itself (BYTEARRAY8), without offering it to buffer_callback, so even a
    # large one is a plain pickle today; the server tests check its round trip.)
    for x, nbuf in (
        (a, 1),
        (np.zeros(64 * KiB, np.uint8), 1),
        (f, 1),
        (ro, 1),
        ((a, b'raw', np.arange(10), {'k': f}), 2),
    ):
        flags, sections = codec.PickleCodec.encode(x)
        assert flags == FLAG_OOB and type(sections) is tuple, type(x).__name__
        assert type(sections[0]) is bytes and len(sections[0]) < 4 * KiB
        assert len(sections) == 1 + nbuf
        assert all(isinstance(buf, pickle.PickleBuffer) and buf.raw().nbytes >= 64 * KiB for buf in sections[1:])
    assert codec.PickleCodec.encode(ro)[1][1].raw().readonly
    assert not codec.PickleCodec.encode(a)[1][1].raw().readonly


def test_codec_decode_of_an_oob_message(codec):
    """The layout of cpp/oob_message.hpp, built here, is received as one tuple
    of aligned sections (a single crossing into the core) and decodes to the
    value, with writable arrays, from a writable copy or from a read-only
    source (an ensemble part)."""
    values = [
        build_payload('array', MB, 1),
        (build_payload('array', MB, 2), b'raw', bytearray(pattern(MB, 3)), np.arange(10), {'k': 'v'}),
        np.asfortranarray(np.arange(MB // 8, dtype=np.float64).reshape(-1, 8)),
        build_payload('mixed', MB, 4),
    ]
    for i, x in enumerate(values):
        flags, sent = codec.PickleCodec.encode(x)
        assert flags == codec.FLAG_OOB
        msg = oob_message(sent[0], *(buf.raw() for buf in sent[1:]))
        secs = codec._core.oob_sections(msg)
        assert [len(s) for s in secs] == [len(sent[0])] + [buf.raw().nbytes for buf in sent[1:]]
        assert bytes(secs[0]) == sent[0]
        base = np.frombuffer(msg, np.uint8).ctypes.data
        assert all((np.frombuffer(s, np.uint8).ctypes.data - base) % 16 == 0 for s in secs if len(s))
        received = codec._core.receive(flags, msg)  # what a worker or a caller is handed
        assert type(received) is tuple and [len(s) for s in received] == [len(s) for s in secs]
        assert all(isinstance(s, memoryview) and not s.readonly for s in received)
        assert_same(codec.decode(flags, received), x, f'value {i}')


def test_oob_sections_accepts_the_largest_section_count(codec):
    n = 1 << 16
    msg = struct.pack('<II', n, 0) + bytes(8 * n) + bytes(8)  # directory, padded to 16
    secs = codec._core.oob_sections(msg)
    assert len(secs) == n and all(len(s) == 0 for s in secs)


def _corrupt_cases():
    dir1 = struct.pack('<II', 1, 0)
    dir2 = struct.pack('<II', 2, 0)
    return {
        'empty': b'',
        'too-short': b'\x01\x00\x00\x00\x00\x00\x00',
        'no-sections': struct.pack('<II', 0, 0) + bytes(64),
        'huge-count': struct.pack('<II', 0xFFFFFFFF, 0) + bytes(64),
        'count-above-max': struct.pack('<II', (1 << 16) + 1, 0) + bytes(8 * ((1 << 16) + 1) + 16),
        'directory-overruns': struct.pack('<II', 4, 0) + bytes(16),
        'length-overruns': dir1 + struct.pack('<Q', 100) + bytes(10),
        'length-max-u64': dir1 + struct.pack('<Q', (1 << 64) - 1) + bytes(64),
        'length-2^63': dir1 + struct.pack('<Q', 1 << 63) + bytes(64),
        'lengths-wrap-around': dir2 + struct.pack('<QQ', 16, (1 << 64) - 16) + bytes(64),
        'second-overruns': dir2 + struct.pack('<QQ', 16, 1000) + bytes(8 + 16 + 10),
        'padding-past-end': dir2 + struct.pack('<QQ', 1, 0) + bytes(8 + 1),
    }


@pytest.mark.parametrize('name', list(_corrupt_cases()))
def test_oob_sections_rejects_corrupt_payloads(codec, name):
    payload = _corrupt_cases()[name]
    with pytest.raises(ValueError):
        codec._core.oob_sections(payload)
    # The receive path does not raise: it hands the bytes on, and the decoder
    # refuses them, so a corrupt message fails its own item only.
    received = codec._core.receive(codec.FLAG_OOB, payload)
    assert type(received) is not tuple
    with pytest.raises(ValueError, match='corrupt out-of-band message'):
        codec.decode(codec.FLAG_OOB, received)


def test_oob_sections_rejects_unsuitable_buffers(codec):
    msg = oob_message(pickle.dumps(1, 5))
    with pytest.raises(ValueError):
        codec._core.oob_sections(memoryview(msg + msg)[::2])  # not contiguous
    with pytest.raises(ValueError):
        codec._core.oob_sections(memoryview(msg).cast('I'))  # items of 4 bytes
    with pytest.raises((TypeError, ValueError)):
        codec._core.oob_sections(12345)  # no buffer at all


def test_oob_sections_on_every_truncation_and_random_garbage(codec):
    """Never reads outside the payload: every prefix of a valid message that
    cuts into a section is refused; random payloads are refused or give
    sections of exactly the declared lengths."""
    head = codec.PickleCodec.encode(np.zeros(64 * KiB, np.uint8))[1][0]
    msg = oob_message(head, b'x' * 5, b'y' * 21)  # a real pickle head, then 2 short sections
    end = len(msg) - ((16 - 21 % 16) % 16)  # the last section ends here; only padding follows
    for cut in range(len(msg)):
        if cut < end:
            with pytest.raises(ValueError):
                codec._core.oob_sections(msg[:cut])
        else:
            assert [len(s) for s in codec._core.oob_sections(msg[:cut])] == [len(head), 5, 21]
    rng = random.Random(1234)
    accepted = 0
    for _ in range(5000):
        n = rng.choice([0, 1, 2, 3, 5, rng.randrange(1 << 32)])
        lens = [rng.choice([0, 1, 7, 16, 40, rng.randrange(1 << 64)]) for _ in range(min(n, 6))]
        payload = struct.pack('<II', n, 0) + b''.join(struct.pack('<Q', v) for v in lens)
        payload += rng.randbytes(rng.randrange(0, 160))
        payload = payload[: rng.randrange(0, len(payload) + 1)] if rng.random() < 0.3 else payload
        try:
            secs = codec._core.oob_sections(payload)
        except ValueError:
            continue
        accepted += 1
        declared = struct.unpack_from(f'<{len(secs)}Q', payload, 8)
        assert [len(s) for s in secs] == list(declared)
        assert 8 + 8 * len(secs) + sum(declared) <= len(payload)
    assert accepted > 0  # the generator does produce valid messages too
