"""RayServlet on a real multi-node Ray cluster on this machine
(``ray.cluster_utils.Cluster``: a head and a second raylet, each with its
own CPU and a custom resource naming it)."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

ray = pytest.importorskip('ray', reason='RayServlet tests need ray (the test extra installs it)')
np = pytest.importorskip('numpy')

from mpserver import (  # noqa: E402
    EnsembleServlet,
    ProcessServlet,
    SequentialServlet,
    Server,
    ServerBacklogFull,
    ThreadServlet,
    WorkerCrashedError,
    WorkerStartupError,
)
from mpserver import TimeoutError as MpTimeoutError  # noqa: E402
from mpserver.ray import RayServlet  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import _ray_workers as w  # noqa: E402

ON_A = {'resources': {'node_a': 1}, 'num_cpus': 0}
ON_B = {'resources': {'node_b': 1}, 'num_cpus': 0}


@pytest.fixture(scope='module')
def cluster():
    # Ray's worker processes get the driver's environment: let them import
    # mpserver's tree and this directory's worker module.
    paths = [_HERE, os.path.join(os.path.dirname(_HERE), 'examples'), *sys.path]
    old = os.environ.get('PYTHONPATH')
    os.environ['PYTHONPATH'] = os.pathsep.join(p for p in paths if p)
    mb = 80 * 1024 * 1024
    c = Cluster(
        initialize_head=True,
        head_node_args={
            'num_cpus': 1,
            'resources': {'node_a': 4},
            'object_store_memory': mb,
            'include_dashboard': False,
        },
    )
    c.add_node(num_cpus=1, resources={'node_b': 4}, object_store_memory=mb)
    try:
        ray.init(address=c.address, log_to_driver=False, logging_level='warning')
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        if old is None:
            os.environ.pop('PYTHONPATH', None)
        else:
            os.environ['PYTHONPATH'] = old


def test_sequence_local_ray_local(cluster):
    s = SequentialServlet(
        ThreadServlet(w.AddOne),
        RayServlet(ProcessServlet(w.Double, cpus=1), num_replicas=2, ray_actor_options=ON_A, chunk_size=16),
        ProcessServlet(w.AddOne),
    )
    with Server(s, capacity=64) as server:
        assert server.call(3) == 9
        assert list(server.stream(range(500))) == [(x + 1) * 2 + 1 for x in range(500)]
        # A worker exception inside a replica reaches the caller with its remote traceback.
        with pytest.raises(ValueError, match='minus one') as info:
            server.call(-2)
        assert 'Double' in str(info.value.__cause__) and 'minus one' in str(info.value.__cause__)
        got = list(server.stream([1, -2, 2], return_exceptions=True))
        assert got[0] == 5 and isinstance(got[1], ValueError) and got[2] == 7
        kinds = [st.kind for st in server.stats().walk()]  # a RayServlet in the tree does not break stats
        assert 'RayServlet' in kinds


def test_replicas_on_two_nodes_ensemble_and_numpy(cluster):
    ens = EnsembleServlet(
        ThreadServlet(w.Double),
        RayServlet(ProcessServlet(w.AddOne), ray_actor_options=ON_B),
    )
    with Server(ens) as server:
        assert server.call(5) == [10, 6]
        assert list(server.stream(range(100))) == [[2 * x, x + 1] for x in range(100)]

    ray_s = RayServlet(ProcessServlet(w.Sum), num_replicas=2, ray_actor_options={'num_cpus': 0})
    with Server(ray_s) as server:
        nodes = {s.node_id for s in ray_s._slots}
        a = np.arange(300_000, dtype=np.float64)
        total, doubled = server.call(a)
        assert total == float(a.sum())
        np.testing.assert_array_equal(doubled, a * 2)
        assert [t for t, _ in server.stream([np.full(10, i) for i in range(50)])] == [10.0 * i for i in range(50)]
    assert len(nodes) >= 1


def test_batching_inside_a_replica(cluster):
    s = RayServlet(ProcessServlet(w.BatchSize, batch_size=8, batch_wait_time=0.5), ray_actor_options=ON_A)
    with Server(s) as server:
        got = list(server.stream(range(64)))
    assert [x for x, _ in got] == list(range(64))
    assert max(n for _, n in got) > 1  # batches formed inside the replica


def test_backpressure_and_timeouts(cluster):
    # capacity keeps its meaning: with 2 requests in flight, a third is
    # refused at once (backpressure) or after waiting its timeout for a place
    with Server(RayServlet(ProcessServlet(w.Nap), ray_actor_options=ON_B), capacity=2) as server:
        with ThreadPoolExecutor(2) as pool:
            busy = [pool.submit(server.call, i) for i in range(2)]
            time.sleep(0.3)
            with pytest.raises(ServerBacklogFull):
                server.call(99)
            with pytest.raises(ServerBacklogFull):
                server.call(99, backpressure=False, timeout=0.2)
            assert [f.result() for f in busy] == [0, 1]
    s = RayServlet(ProcessServlet(w.Slow), ray_actor_options=ON_B, chunk_size=4, max_inflight=1)
    with Server(s, capacity=8) as server:
        t0 = time.perf_counter()
        assert list(server.stream(range(40))) == list(range(40))
        assert time.perf_counter() - t0 >= 40 * 0.05 * 0.9  # one worker: the items were really served
        with pytest.raises(MpTimeoutError):
            server.call(1, timeout=0.01)
        assert server.call(2, timeout=30) == 2


def test_killed_replica_fails_its_items_and_service_continues(cluster):
    s = RayServlet(
        ProcessServlet(w.Slow),
        num_replicas=2,
        ray_actor_options={**ON_A, 'max_restarts': 2},
        chunk_size=4,
        max_inflight=1,
    )
    with Server(s, capacity=64) as server:
        assert list(server.stream(range(8))) == list(range(8))
        victim = s._slots[0].actor
        import threading

        def kill_soon():
            time.sleep(0.3)
            ray.kill(victim, no_restart=False)

        threading.Thread(target=kill_soon).start()
        got = list(server.stream(range(60), return_exceptions=True))
        crashed = [g for g in got if isinstance(g, WorkerCrashedError)]
        ok = [g for g in got if not isinstance(g, BaseException)]
        assert crashed, 'the killed replica held items'
        assert 'replica 0' in str(crashed[0]) and 'node' in str(crashed[0])
        assert len(crashed) <= 8  # only what it held: at most max_inflight chunks
        assert len(ok) + len(crashed) == 60
        assert ok == sorted(ok)
        # the restarted replica serves again
        deadline = time.monotonic() + 60
        while not s._slots[0].up and time.monotonic() < deadline:
            time.sleep(0.2)
        assert s._slots[0].up
        assert list(server.stream(range(30))) == list(range(30))


def test_placement_failure_is_a_clear_error(cluster):
    s = RayServlet(ProcessServlet(w.AddOne), ray_actor_options={'resources': {'no_such_node': 1}}, startup_timeout=5)
    t0 = time.perf_counter()
    with pytest.raises(WorkerStartupError, match='did not place'):
        with Server(s):
            pass
    assert time.perf_counter() - t0 < 60


def _script_class(name, call):
    """A Worker class as a driver script defines it: its module is ``__main__``
    (which cloudpickle, hence Ray, ships by value)."""
    from mpserver import Worker

    return type(name, (Worker,), {'call': call, '__module__': '__main__', '__qualname__': name})


def test_worker_class_of_the_drivers_main_script(cluster):
    """A worker class defined in the driver's script reaches the replica by value
    (Ray) and goes on by value to the replica's worker processes, which cannot
    import the driver's script; batching and errors work as for any worker."""

    def call(self, xs):
        if -1 in xs:
            raise ValueError('no negative cubes')
        return [(x**3, os.getpid()) for x in xs]

    Cube = _script_class('Cube', call)
    servlet = RayServlet(ProcessServlet(Cube, cpus=2, batch_size=4), ray_actor_options=ON_A)
    with Server(servlet) as server:
        got = list(server.stream(range(20)))
        assert [y for y, _ in got] == [x**3 for x in range(20)]
        assert os.getpid() not in {pid for _, pid in got}
        with pytest.raises(ValueError, match='no negative cubes'):
            server.call(-1)


def _load_example(name):
    """Import examples/<name>.py under its own name (the replicas' workers import it by name)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(_HERE), 'examples', f'{name}.py'))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_example_pipeline(cluster):
    mod = _load_example('ray_pipeline')
    with Server(mod.build(num_cpus=0)) as server:
        assert list(server.stream(['1,2', '3,4'])) == ['5.0', '25.0']


def test_example_http_front_per_node(cluster):
    import urllib.request

    mod = _load_example('ray_http_per_node')
    actors, urls = mod.start([ON_A, ON_B])
    try:
        assert len(set(urls)) == 2  # one front per node
        for url in urls:
            with urllib.request.urlopen(url, data=b'hello', timeout=30) as r:
                assert r.read() == b'HELLO'
    finally:
        ray.get([a.stop.remote() for a in actors], timeout=60)
        for a in actors:
            ray.kill(a)
