"""The older mpservice API names that mpserver keeps (see ../shared/seeds/000_*):
``ProcessWorker``, ``ThreadWorker``, ``make_threadworker``, ``CpuAffinity``,
``Server.async_call``, and the ``Server`` keywords of mpservice <= 0.12
(``main_cpu``, ``backlog``, ``sys_info_log_cadence``).

mpservice 0.16.8 no longer has any of these, so these tests run on mpserver
only (there is nothing to compare against).
"""

import asyncio
import os
import time

import _older_workers as ow
import mpserver
import pytest
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
    for entry, expected in ((CpuAffinity(cpus[0]), [cpus[0]]), (CpuAffinity(cpus), cpus), (CpuAffinity(None), cpus)):
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
        return await asyncio.gather(
            *(server.async_call(i, backpressure=True) for i in range(200)), return_exceptions=True
        )

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
        assert len(server._running().ports()._ports) == 1


# ---------------------------------------------------------------- Server keywords of mpservice <= 0.12


def test_server_backlog_keyword_is_the_old_name_of_capacity():
    with pytest.warns(DeprecationWarning, match='backlog.*capacity'):
        server = Server(ProcessServlet(ow.Triple), backlog=3)
    assert server.capacity == 3
    with server:
        assert server.call(2) == 6
        assert server.backlog == 0  # the 0.16.8 property: requests in the server now
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigError, match='capacity'):
        Server(ProcessServlet(ow.Triple), backlog=0)


def test_server_sys_info_log_cadence_is_accepted_and_deprecated():
    with pytest.warns(DeprecationWarning, match='sys_info_log_cadence'):
        server = Server(ProcessServlet(ow.Triple), sys_info_log_cadence=100)
    with server:
        assert server.call(1) == 3


def test_server_main_cpu_pins_the_main_process():
    before = os.sched_getaffinity(0)
    try:
        server = Server(ProcessServlet(ow.Affinity), main_cpu=0)
        assert os.sched_getaffinity(0) == {0}
        with server:
            # Workers without cpus of their own inherit the main process's CPUs.
            assert server.call(None) == [0]
        if os.cpu_count() > 1:
            Server(ProcessServlet(ow.Triple), main_cpu=[0, 1])
            assert os.sched_getaffinity(0) == {0, 1}
    finally:
        os.sched_setaffinity(0, before)


@pytest.mark.parametrize('bad', [-1, 'x', [], 10_000, True])
def test_server_main_cpu_is_checked(bad):
    before = os.sched_getaffinity(0)
    with pytest.raises(ConfigError, match='main_cpu'):
        Server(ProcessServlet(ow.Triple), main_cpu=bad)
    assert os.sched_getaffinity(0) == before


def test_server_all_three_older_keywords_at_once():
    before = os.sched_getaffinity(0)
    try:
        with pytest.warns(DeprecationWarning):
            server = Server(ProcessServlet(ow.Triple), main_cpu=0, backlog=1024, sys_info_log_cadence=None)
        assert server.capacity == 1024
        with server:
            assert list(server.stream(range(4))) == [0, 3, 6, 9]
    finally:
        os.sched_setaffinity(0, before)


# ---------------------------------------------------------------- the rest of mpservice 0.12.7's surface

#: Every name a program could import from mpservice 0.12.7's ``mpservice.mpserver``
#: as its API: its ``__all__``, the aliases it documented (``Sequential``,
#: ``Ensemble``, ``PipelineFull``) and what its docs and examples import from
#: it (``CpuAffinity``, ``EnsembleError``, ``RemoteException``).  Its other
#: module-level names are the standard library, psutil, queue internals
#: (``SingleLane``, ``_FastQueue``), sentinels, and mpservice's own
#: ``Process``/``Thread``/``MP_SPAWN_CTX`` from its other modules (see docs/porting.md).
SURFACE_0_12_7 = [
    'TimeoutError', 'ServerBacklogFull', 'PipelineFull', 'Worker', 'ProcessWorker', 'ThreadWorker',
    'make_threadworker', 'PassThrough', 'Servlet', 'ProcessServlet', 'ThreadServlet', 'SequentialServlet',
    'EnsembleServlet', 'Sequential', 'Ensemble', 'SwitchServlet', 'Server', 'CpuAffinity', 'EnsembleError',
    'RemoteException',
]  # fmt: skip


def test_every_name_of_mpservice_0_12_7_resolves():
    missing = [n for n in SURFACE_0_12_7 if not hasattr(mpserver, n)]
    assert not missing
    for method in ('get_mp_context', 'capacity', 'backlog', 'full', 'async_call', 'call', 'stream'):
        assert hasattr(Server, method), method


def test_older_aliases_are_the_same_objects_and_stay_out_of_all():
    assert mpserver.Sequential is SequentialServlet
    assert mpserver.Ensemble is mpserver.EnsembleServlet
    assert mpserver.PipelineFull is ServerBacklogFull
    names = {}
    exec('from mpserver import *', names)
    assert not {'Sequential', 'Ensemble', 'PipelineFull'} & set(names)
    assert {'Sequential', 'Ensemble', 'PipelineFull'} <= set(dir(mpserver))


def test_older_aliases_serve_and_pipelinefull_catches_a_full_server():
    servlet = mpserver.Sequential(
        ProcessServlet(ow.Triple), mpserver.Ensemble(ThreadServlet(ow.Negate), ThreadServlet(ow.Negate))
    )
    with Server(servlet, capacity=2) as server:
        assert server.call(2) == [-6, -6]
        assert not server.full()

        async def flood():
            return await asyncio.gather(*(server.async_call(i) for i in range(50)), return_exceptions=True)

        # More requests at once than capacity: some are refused.
        results = asyncio.run(flood())
        refused = [r for r in results if isinstance(r, mpserver.PipelineFull)]
        assert refused and all(r == [-3 * i, -3 * i] for i, r in enumerate(results) if r not in refused)
        assert server.backlog == 0 and not server.full()


def test_server_full_is_true_at_capacity(tmp_path):
    import threading

    gate = tmp_path / 'gate'
    with Server(ThreadServlet(ow.WaitFor, num_threads=2), capacity=2) as server:
        threads = [threading.Thread(target=server.call, args=(str(gate),)) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while not server.full():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert server.backlog == 2
        gate.touch()
        for t in threads:
            t.join(30)
        assert not server.full()


def test_worker_accepts_batch_size_log_cadence():
    with Server(ProcessServlet(ow.Cadence)) as server:
        assert list(server.stream(range(6))) == [(i, 100) for i in range(6)]
    assert Worker(worker_index=0).batch_size_log_cadence == 1_000_000  # the default, as in mpservice
