"""AsyncServer: call, concurrency, errors, timeouts, cancellation,
back-pressure, stream, and compound servlets; also under uvloop.

Every test runs once per backend through the ``backend`` fixture (here via
``ab``, which also checks that the backend has ``AsyncServer``).
"""

import asyncio
import builtins
import json
import pickle
import time

import pytest
from _backends import CustomError


@pytest.fixture
def ab(backend):
    """The backend, provided it has AsyncServer and the composition API."""
    missing = [n for n in ('AsyncServer', 'SequentialServlet', 'EnsembleServlet') if getattr(backend, n) is None]
    if missing:
        pytest.fail(f'backend {backend.name!r} lacks {", ".join(missing)}', pytrace=False)
    return backend


async def wait_until(predicate, timeout=30.0, interval=0.01):
    """Poll ``predicate`` (without blocking the loop) until truthy; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)


async def agen(items, *, pause_every=0):
    for i, x in enumerate(items):
        if pause_every and i % pause_every == 0:
            await asyncio.sleep(0.001)
        yield x


class AsyncNumbers:
    """A plain async iterable (not a generator): each ``async for`` restarts."""

    def __init__(self, n):
        self.n = n

    def __aiter__(self):
        return _AsyncNumbersIterator(self.n)


class _AsyncNumbersIterator:
    def __init__(self, n):
        self.i = 0
        self.n = n

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.i >= self.n:
            raise StopAsyncIteration
        self.i += 1
        await asyncio.sleep(0)
        return self.i - 1


async def collect(aiterator):
    return [y async for y in aiterator]


# ---------------------------------------------------------------- call


@pytest.mark.asyncio
async def test_async_call(ab):
    b = ab
    server = b.AsyncServer(b.ProcessServlet(b.w.Square))
    assert server.capacity == 256
    async with server as s:
        assert s is server
        assert await server.call(7) == 49
        assert await server.call(-3) == 9
        assert [await server.call(i) for i in range(4)] == [0, 1, 4, 9]
        assert server.backlog == 0


@pytest.mark.asyncio
async def test_async_concurrent_calls_with_gather(ab):
    b = ab
    async with b.AsyncServer(b.ProcessServlet(b.w.SlowVarying, cpus=2)) as server:
        results = await asyncio.gather(*(server.call(i) for i in range(40)))
        assert results == [i * 10 for i in range(40)]
        assert server.backlog == 0


@pytest.mark.asyncio
async def test_async_call_reraises_original_exception(ab):
    b = ab
    async with b.AsyncServer(b.ProcessServlet(b.w.FailOn)) as server:
        with pytest.raises(ValueError) as ei:
            await server.call(3)
        with pytest.raises(CustomError) as ci:
            await server.call('custom')
        assert await server.call(4) == 40
        # errors in a gather do not disturb their neighbours
        out = await asyncio.gather(*(server.call(i) for i in (2, 3, 5)), return_exceptions=True)
    assert type(ei.value) is ValueError
    assert str(ei.value) == 'refusing to process 3'
    assert b.is_remote_exception(ei.value)
    assert '_explode_on_purpose' in b.get_remote_traceback(ei.value)
    assert ci.value.args == ('custom failure', 42)
    assert out[0] == 20 and out[2] == 50
    assert type(out[1]) is ValueError


# ---------------------------------------------------------------- timeout, cancellation


@pytest.mark.asyncio
async def test_async_call_timeout_item_stays_in_backlog(ab, tmp_path):
    b = ab
    gate = str(tmp_path / 'gate')
    async with b.AsyncServer(b.ProcessServlet(b.w.Gate)) as server:
        t0 = time.monotonic()
        with pytest.raises(b.TimeoutError) as ei:
            await server.call((gate, 'slow'), timeout=0.3)
        assert time.monotonic() - t0 >= 0.25
        assert isinstance(ei.value, builtins.TimeoutError)
        # the abandoned item is still in the pipeline
        assert server.backlog == 1
        await asyncio.sleep(0.1)
        assert server.backlog == 1
        open(gate, 'w').close()
        assert await wait_until(lambda: server.backlog == 0)
        assert await server.call((gate, 'next')) == 'next'
        assert server.backlog == 0


@pytest.mark.asyncio
async def test_async_cancelled_call(ab, tmp_path):
    """Cancelling the task awaiting ``call`` ends it with CancelledError at
    once; the item keeps counting in ``backlog`` until it leaves the
    pipeline, and its late result goes nowhere."""
    b = ab
    gate = str(tmp_path / 'gate')
    async with b.AsyncServer(b.ProcessServlet(b.w.Gate)) as server:
        task = asyncio.create_task(server.call((gate, 'held'), timeout=60))
        assert await wait_until(lambda: server.backlog == 1)
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=10)
        assert task in done
        assert task.cancelled()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert server.backlog == 1
        open(gate, 'w').close()
        assert await wait_until(lambda: server.backlog == 0)
        assert await server.call((gate, 'after')) == 'after'
        # cancelling via wait_for behaves the same
        with pytest.raises((asyncio.TimeoutError, builtins.TimeoutError)):
            await asyncio.wait_for(server.call((gate + '-other', 'x'), timeout=60), 0.2)
        assert server.backlog == 1
        open(gate + '-other', 'w').close()
        assert await wait_until(lambda: server.backlog == 0)


# ---------------------------------------------------------------- back-pressure


@pytest.mark.asyncio
async def test_async_backpressure(ab, tmp_path):
    b = ab
    gate = str(tmp_path / 'gate')
    async with b.AsyncServer(b.ProcessServlet(b.w.Gate), capacity=2) as server:
        assert server.capacity == 2
        held = [asyncio.create_task(server.call((gate, i), timeout=60)) for i in range(2)]
        assert await wait_until(lambda: server.backlog == 2)

        # backpressure=True (the default): rejected at once, despite a long timeout
        t0 = time.monotonic()
        with pytest.raises(b.ServerBacklogFull) as ei:
            await server.call((gate, 'x'), timeout=60)
        with pytest.raises(b.ServerBacklogFull):
            await server.call((gate, 'x'), backpressure=True, timeout=60)
        assert time.monotonic() - t0 < 20
        assert 'Server is at capacity with 2 items' in str(ei.value)
        assert isinstance(ei.value, RuntimeError)

        # backpressure=False: waits up to `timeout` for a free slot, then gives up
        t0 = time.monotonic()
        with pytest.raises(b.ServerBacklogFull) as ei:
            await server.call((gate, 'y'), backpressure=False, timeout=0.3)
        assert time.monotonic() - t0 >= 0.25
        assert 'Server is at capacity with 2 items' in str(ei.value)
        assert server.backlog == 2
        assert not any(t.done() for t in held)

        open(gate, 'w').close()
        assert await asyncio.gather(*held) == [0, 1]
        assert await wait_until(lambda: server.backlog == 0)
        assert await server.call((gate, 'z'), backpressure=True) == 'z'


@pytest.mark.asyncio
async def test_async_backpressure_false_waits_for_a_free_slot(ab, tmp_path):
    b = ab
    gate = str(tmp_path / 'gate')
    async with b.AsyncServer(b.ProcessServlet(b.w.Gate), capacity=1) as server:
        first = asyncio.create_task(server.call((gate, 'first'), timeout=60))
        assert await wait_until(lambda: server.backlog == 1)
        second = asyncio.create_task(server.call((gate, 'second'), backpressure=False, timeout=60))
        await asyncio.sleep(0.2)
        assert not second.done()
        assert server.backlog == 1
        open(gate, 'w').close()
        assert await first == 'first'
        assert await second == 'second'
        assert await wait_until(lambda: server.backlog == 0)


# ---------------------------------------------------------------- stream


@pytest.mark.asyncio
async def test_async_stream_over_async_generator(ab):
    b = ab
    data = list(range(30))
    async with b.AsyncServer(b.ProcessServlet(b.w.SlowVarying, cpus=2)) as server:
        out = await collect(server.stream(agen(data, pause_every=7)))
        out_x = await collect(server.stream(agen([4, 1, 3]), return_x=True))
        assert await collect(server.stream(agen([]))) == []
        assert server.backlog == 0
    assert out == [x * 10 for x in data]
    assert out_x == [(4, 40), (1, 10), (3, 30)]


@pytest.mark.asyncio
async def test_async_stream_over_async_iterable_with_preprocessor(ab):
    b = ab
    numbers = AsyncNumbers(12)
    async with b.AsyncServer(b.ProcessServlet(b.w.Square, cpus=2)) as server:
        out = await collect(server.stream(numbers))
        # preprocessor feeds x + 1 to the servlet; return_x gives the original x
        out_pre = await collect(server.stream(numbers, preprocessor=lambda x: x + 1, return_x=True))
    assert out == [x * x for x in range(12)]
    assert out_pre == [(x, (x + 1) ** 2) for x in range(12)]


@pytest.mark.asyncio
async def test_async_stream_return_exceptions(ab):
    b = ab
    async with b.AsyncServer(b.ProcessServlet(b.w.FailOn, cpus=2, bad=(3, 7))) as server:
        out = await collect(server.stream(agen(range(10)), return_exceptions=True))
        out_x = await collect(server.stream(agen([2, 3]), return_x=True, return_exceptions=True))
        assert await wait_until(lambda: server.backlog == 0)
    for i, y in enumerate(out):
        if i in (3, 7):
            assert type(y) is ValueError and str(y) == f'refusing to process {i}'
        else:
            assert y == i * 10
    assert out_x[0] == (2, 20)
    assert out_x[1][0] == 3 and type(out_x[1][1]) is ValueError


@pytest.mark.asyncio
async def test_async_stream_raises_first_error(ab):
    b = ab
    got = []
    async with b.AsyncServer(b.ProcessServlet(b.w.FailOn, bad=(5, 8))) as server:
        with pytest.raises(ValueError, match='refusing to process 5'):
            async for y in server.stream(agen(range(20))):
                got.append(y)
        assert got == [0, 10, 20, 30, 40]
        assert await server.call(6) == 60
        assert await wait_until(lambda: server.backlog == 0)


@pytest.mark.asyncio
async def test_async_stream_preprocessor_error_is_the_items_result(ab):
    """Deliberate difference: a preprocessor exception must become that
    item's result, as in ``Server.stream`` (and both libraries' docs).
    mpservice 0.16.8's async stream instead reuses the previous item's
    result for it (silently wrong: item 2 came out as 1)."""
    b = ab
    if b.name == 'mpservice':
        pytest.skip("mpservice: AsyncServer.stream gives a failed preprocessor's item the previous result")

    def pre(x):
        if x == 2:
            raise ValueError('bad input 2')
        return x

    async with b.AsyncServer(b.ThreadServlet(b.w.Square)) as server:
        out = await collect(server.stream(agen(range(5)), preprocessor=pre, return_x=True, return_exceptions=True))
        with pytest.raises(ValueError, match='bad input 2'):
            await collect(server.stream(agen(range(5)), preprocessor=pre))
        assert await wait_until(lambda: server.backlog == 0)
    assert [x for x, _ in out] == [0, 1, 2, 3, 4]
    assert out[0][1] == 0 and out[1][1] == 1 and out[3][1] == 9 and out[4][1] == 16
    assert type(out[2][1]) is ValueError and str(out[2][1]) == 'bad input 2'


@pytest.mark.asyncio
async def test_async_stream_and_calls_interleaved(ab):
    b = ab
    async with b.AsyncServer(b.ProcessServlet(b.w.SlowVarying, cpus=2)) as server:
        streamed, called = await asyncio.gather(
            collect(server.stream(agen(range(100, 130)))),
            asyncio.gather(*(server.call(i) for i in range(20))),
        )
        assert server.backlog == 0
    assert streamed == [x * 10 for x in range(100, 130)]
    assert called == [x * 10 for x in range(20)]


# ---------------------------------------------------------------- properties, misc


@pytest.mark.asyncio
async def test_async_capacity_backlog_and_debug_info(ab):
    b = ab
    server = b.AsyncServer(b.ProcessServlet(b.w.Square, cpus=2), capacity=7)
    assert server.capacity == 7
    async with server:
        assert server.backlog == 0
        assert await server.call(3) == 9
        assert server.backlog == 0
        assert server.capacity == 7
        info = server.debug_info()
    assert isinstance(info, dict)
    info = json.loads(json.dumps(info))
    assert info['type'] == 'AsyncServer'
    assert info['capacity'] == 7
    assert info['servlet']['type'] == 'ProcessServlet'
    assert len(info['servlet']['children']) == 2


@pytest.mark.parametrize('capacity', [0, -1])
def test_async_nonpositive_capacity_rejected(ab, capacity):
    with pytest.raises((AssertionError, ValueError)):
        ab.AsyncServer(ab.ProcessServlet(ab.w.Square), capacity=capacity)


def test_async_server_is_not_picklable(ab):
    with pytest.raises(TypeError):
        pickle.dumps(ab.AsyncServer(ab.ProcessServlet(ab.w.Square)))


# ---------------------------------------------------------------- compound servlets


@pytest.mark.asyncio
async def test_async_with_sequential_and_ensemble(ab):
    b = ab
    s = b.SequentialServlet(
        b.ProcessServlet(b.w.AddOne),
        b.EnsembleServlet(
            b.ThreadServlet(b.w.Double),
            b.SequentialServlet(b.ProcessServlet(b.w.FailIf, value=5, tag='m1'), b.ThreadServlet(b.w.Square)),
        ),
    )
    async with b.AsyncServer(s) as server:
        assert await server.call(3) == [8, 16]
        results = await asyncio.gather(*(server.call(i) for i in range(8)), return_exceptions=True)
        streamed = await collect(server.stream(agen(range(8)), return_exceptions=True))
        with pytest.raises(b.EnsembleError) as ei:
            await server.call(4)
        info = server.debug_info()
        assert await wait_until(lambda: server.backlog == 0)
    for out in (results, streamed):
        for x, y in enumerate(out):
            if x == 4:
                assert type(y) is b.EnsembleError
            else:
                assert y == [(x + 1) * 2, (x + 1) ** 2]
    assert "ValueError('m1 rejects 5')" in str(ei.value)
    assert str(ei.value).startswith('1/2 ensemble members finished, with 1 error; first error: ') or str(
        ei.value
    ).startswith('2/2 ensemble members finished, with 1 error; first error: ')
    assert json.loads(json.dumps(info))['servlet']['type'] == 'SequentialServlet'


@pytest.mark.asyncio
async def test_async_sequential_error_short_circuits(ab):
    b = ab
    s = b.SequentialServlet(
        b.ThreadServlet(b.w.FailIf, value=3, tag='first', exc_type='CustomError'),
        b.ProcessServlet(b.w.AddOne),
        b.EnsembleServlet(b.ThreadServlet(b.w.Echo), b.ProcessServlet(b.w.Double)),
    )
    async with b.AsyncServer(s) as server:
        with pytest.raises(CustomError, match='first rejects 3'):
            await server.call(3)
        assert await server.call(2) == [3, 6]


# ---------------------------------------------------------------- uvloop


def test_async_server_under_uvloop(ab):
    uvloop = pytest.importorskip('uvloop')
    b = ab

    async def main():
        loop = asyncio.get_running_loop()
        s = b.SequentialServlet(
            b.ProcessServlet(b.w.AddOne),
            b.EnsembleServlet(b.ThreadServlet(b.w.Double), b.ProcessServlet(b.w.Square)),
        )
        async with b.AsyncServer(s, capacity=8) as server:
            one = await server.call(1)
            many = await asyncio.gather(*(server.call(i) for i in range(6)))
            streamed = await collect(server.stream(agen(range(10)), return_x=True))
            try:
                await server.call('x')
            except TypeError as e:
                err = e
            backlog = await wait_until(lambda: server.backlog == 0)
        return type(loop), one, many, streamed, err, backlog

    # A loop of our own rather than asyncio.Runner(loop_factory=...), which
    # Python 3.10 lacks.
    uvloop_loop = uvloop.new_event_loop()
    try:
        loop_type, one, many, streamed, err, backlog = uvloop_loop.run_until_complete(main())
    finally:
        uvloop_loop.run_until_complete(uvloop_loop.shutdown_asyncgens())
        uvloop_loop.close()
    assert issubclass(loop_type, uvloop.Loop)
    assert one == [4, 4]
    assert many == [[(i + 1) * 2, (i + 1) ** 2] for i in range(6)]
    assert streamed == [(i, [(i + 1) * 2, (i + 1) ** 2]) for i in range(10)]
    assert type(err) is TypeError
    assert backlog
