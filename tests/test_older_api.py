"""The older mpservice API names that mpserver keeps (see ../shared/seeds/000_*):
``ProcessWorker``, ``ThreadWorker``, ``make_threadworker``, ``CpuAffinity``
and ``Server.async_call``.

mpservice 0.16.8 no longer has any of these, so these tests run on mpserver
only (there is nothing to compare against).
"""

import asyncio
import os

import pytest

import mpserver
from mpserver import (
    ConfigError,
    CpuAffinity,
    ProcessServlet,
    ProcessWorker,
    SequentialServlet,
    Server,
    ServerBacklogFull,
    ThreadServlet,
    ThreadWorker,
    Worker,
    make_threadworker,
)

import _older_workers as ow


def test_older_worker_classes_are_workers():
    assert issubclass(ProcessWorker, Worker) and issubclass(ThreadWorker, Worker)
    W = make_threadworker(lambda x: x + 1)
    assert issubclass(W, ThreadWorker)
    assert W(worker_index=0).call(1) == 2


def test_older_workers_serve_in_a_pipeline():
    step = make_threadworker(lambda x: x + 1)
    servlet = SequentialServlet(ProcessServlet(ow.Triple, cpus=2), ThreadServlet(ow.Negate), ThreadServlet(step))
    with Server(servlet) as server:
        assert server.call(5) == -14
        assert list(server.stream(range(4))) == [1, -2, -5, -8]


def test_cpu_affinity_entries_pin_workers():
    cpus = sorted(os.sched_getaffinity(0))
    for entry, expected in ((CpuAffinity(cpus[0]), [cpus[0]]), (CpuAffinity(cpus), cpus),
                            (CpuAffinity(None), cpus)):
        with Server(ProcessServlet(ow.Affinity, cpus=[entry])) as server:
            assert server.call(0) == expected, entry


def test_cpu_affinity_repr_eq_and_bad_values():
    assert CpuAffinity([1, 0]) == CpuAffinity([1, 0])
    assert repr(CpuAffinity(2)) == 'CpuAffinity(2)'
    assert CpuAffinity().get() == sorted(os.sched_getaffinity(0))
    with pytest.raises(ConfigError, match='does not exist'):
        ProcessServlet(ow.Triple, cpus=[CpuAffinity(10_000)])
    with pytest.raises(ConfigError):
        ProcessServlet(ow.Triple, cpus=[CpuAffinity([-1])])


def test_server_async_call():
    async def main(server):
        ys = await asyncio.gather(*(server.async_call(i) for i in range(20)))
        with pytest.raises(TypeError):  # 3 * None fails in the worker
            await server.async_call(None)
        return ys

    with Server(ProcessServlet(ow.Triple)) as server:
        assert asyncio.run(main(server)) == [3 * i for i in range(20)]
        # The sync API keeps working next to it, and nothing is left behind.
        assert server.call(2) == 6
        assert server.backlog == 0


def test_server_async_call_backpressure_and_stopped_server():
    async def flood(server):
        return await asyncio.gather(*(server.async_call(i, backpressure=True) for i in range(200)),
                                    return_exceptions=True)

    with Server(ProcessServlet(ow.Triple), capacity=4) as server:
        results = asyncio.run(flood(server))
    ok = [r for r in results if not isinstance(r, BaseException)]
    full = [r for r in results if isinstance(r, ServerBacklogFull)]
    assert len(ok) + len(full) == 200 and ok and full
    with pytest.raises(RuntimeError, match='stopped'):
        asyncio.run(server.async_call(1))


def test_install_is_exported():
    assert 'install' in mpserver.__all__ and callable(mpserver.install)


def test_server_async_call_from_several_event_loops():
    # Loops in four threads share one server; whichever loop drains the
    # completion queue hands the others their results through their own loop.
    import threading

    with Server(ProcessServlet(ow.Triple, cpus=2), capacity=64) as server:
        out = {}

        def run(k):
            async def main():
                return await asyncio.gather(*(server.async_call(i, backpressure=False) for i in range(500)))

            out[k] = asyncio.run(main())

        threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(out) == [0, 1, 2, 3]
        assert all(out[k] == [3 * i for i in range(500)] for k in range(4))
        assert server.backlog == 0
        # Ports of finished loops are dropped when a new loop comes along.
        asyncio.run(server.async_call(1))
        assert len(server._async_ports) == 1
