"""A servlet that runs on a Ray cluster: :class:`RayServlet`.

Each replica is a Ray actor that hosts an mpserver :class:`~mpserver.Server`
running the wrapped servlet tree on its own node.  In the main process the
RayServlet is an ordinary servlet: its input ring is consumed by a dispatcher
thread that takes the items' *encoded* messages (the main process never
unpickles them), sends them in chunks to the replica with the most free
capacity, and pushes each item's encoded result back under the item's own
token, so order, capacity and timeouts stay the main server's business.

Ray is an optional dependency (``pip install 'mpserver[ray]'``), imported
when a RayServlet is made.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from mpserver import _core
from mpserver._graph.checks import check_count, check_seconds
from mpserver._graph.servlet import Servlet
from mpserver._observe.layout import Layout
from mpserver._serving.server import Server
from mpserver._wire.codec import FLAG_ERROR, FLAG_OOB, PickleCodec, codec_for, decode, pass_error
from mpserver._wire.errors import WorkerCrashedError, WorkerStartupError
from mpserver._wire.remote import is_remote_exception

if TYPE_CHECKING:
    from mpserver._graph.launch import Launch
__all__ = ['RayServlet']

_log = logging.getLogger('mpserver')

# Seconds a stopping RayServlet waits for the chunks in flight to be answered.
_STOP_WAIT = 60.0

# One item on the wire between the dispatcher and a replica: (flags, payload)
# with payload as bytes, or a tuple of bytes for an out-of-band pickle.
_Msg = tuple[int, Any]


def _owned(flags: int, payload: Any) -> Any:
    """A received payload as bytes Ray can ship (ring views are only valid until the next gather)."""
    if flags & FLAG_OOB and type(payload) is tuple:
        return tuple(bytes(p) for p in payload)
    return payload if type(payload) is bytes else bytes(payload)


def _shippable(flags: int, payload: Any) -> Any:
    """An encoder's payload (bytes, or a pickle and its PickleBuffers) as plain bytes."""
    if type(payload) is tuple:
        return tuple(p if type(p) is bytes else p.raw().tobytes() for p in payload)
    return payload


class _Replica:
    """The body of a replica actor: an mpserver Server on the actor's node."""

    def __init__(self, servlet: Servlet, capacity: int) -> None:
        self._server = Server(servlet, capacity=capacity)
        self._server.__enter__()

    def ready(self) -> tuple[str, str]:
        """``(node id, node IP)``: where this replica runs (returns once it serves)."""
        import ray

        ctx: Any = ray.get_runtime_context()
        util: Any = ray.util
        return ctx.get_node_id(), util.get_node_ip_address()

    def run(self, chunk: list[_Msg]) -> list[_Msg]:
        """Serve a chunk of encoded items; return each item's encoded result or error."""
        out: list[_Msg] = []
        xs: list[Any] = []
        where: list[int] = []  # index in out of each item that goes to the server
        for flags, payload in chunk:
            try:
                x = decode(flags, payload)
            except Exception as e:  # noqa: BLE001 - a decode failure is this item's result
                out.append(PickleCodec.encode_error(e))
                continue
            where.append(len(out))
            out.append((0, b''))
            xs.append(x)
        if xs:
            for i, y in zip(where, self._server.stream(xs, return_exceptions=True, timeout=86400), strict=True):
                if isinstance(y, BaseException):
                    f, p = PickleCodec.encode_error(y, None if y.__traceback__ or _remote(y) else _tb(y))
                else:
                    f, p = PickleCodec.encode_result(y)
                out[i] = (f, _shippable(f, p))
        return out

    def shutdown(self) -> None:
        self._server.__exit__(None, None, None)


def _remote(e: BaseException) -> bool:
    return is_remote_exception(e)


def _tb(e: BaseException) -> str:
    return ''.join(traceback.format_exception_only(type(e), e))


class _Slot:
    """The dispatcher's view of one replica."""

    def __init__(self, index: int, actor: Any, node: tuple[str, str]) -> None:
        self.index = index
        self.actor = actor
        self.node_id, self.ip = node
        self.inflight = 0
        self.up = True  # False from a crash until the restarted actor answers ready()
        self.dead = False  # out of restarts


class RayServlet(Servlet):
    """Runs ``servlet`` on Ray actors (replicas), each hosting an mpserver Server.

    Parameters
    ----------
    servlet
        Any servlet tree (process workers, batching, ensembles); each replica
        runs its own copy on its node, with that node's cores.  Worker
        classes of the driver's script travel by value (as Ray ships them);
        those of modules must be importable on the cluster's nodes.
    num_replicas
        Number of replica actors (default 1).
    ray_actor_options
        Passed to ``ActorClass.options`` (e.g. ``{'num_cpus': 1}`` or
        ``{'resources': {'gpu_node': 1}}``).  ``max_restarts`` (default 3)
        is Ray's restart budget for a replica that dies.
    max_inflight
        Chunks in flight per replica (default 2): one being served, one on its way.
    chunk_size
        Most items per Ray call (default 256).  The dispatcher never waits to
        fill a chunk: it sends what the input ring holds.
    startup_timeout
        Seconds to wait for every replica to be placed and serving; beyond
        it, the Server's start fails with :class:`WorkerStartupError`
        (default 60).
    """

    def __init__(
        self,
        servlet: Servlet,
        *,
        num_replicas: int = 1,
        ray_actor_options: dict[str, Any] | None = None,
        max_inflight: int = 2,
        chunk_size: int = 256,
        startup_timeout: float = 60.0,
    ) -> None:
        try:
            import ray  # noqa: F401 - checked here, used when the servlet starts
        except ImportError as e:
            raise ImportError("RayServlet needs Ray: pip install 'mpserver[ray]'") from e
        if not isinstance(servlet, Servlet):
            raise TypeError(f'servlet must be a Servlet, got {type(servlet).__name__}')
        if ray_actor_options is not None and not isinstance(ray_actor_options, dict):
            raise TypeError(f'ray_actor_options must be a dict, got {type(ray_actor_options).__name__}')
        self._servlet = servlet
        self._num_replicas = check_count('num_replicas', num_replicas, 1)
        self._max_inflight = check_count('max_inflight', max_inflight, 2)
        self._chunk_size = check_count('chunk_size', chunk_size, 256)
        timeout = check_seconds('startup_timeout', startup_timeout)
        self._startup_timeout = 60.0 if timeout is None else timeout
        self._options = dict(ray_actor_options or {})
        self._slots: list[_Slot] = []
        self._input: Any = None
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()
        self._done: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def _label(self) -> str:
        return f'RayServlet({self._servlet._label()})'

    # -- start and stop

    def _start(self, launch: Launch, output: Any, output_local: bool) -> tuple[Any, bool]:
        import ray

        if self._input is not None:
            raise RuntimeError('this servlet is already running in a server')
        options = {'max_restarts': 3, **self._options, 'max_task_retries': 0, 'max_concurrency': self._max_inflight + 1}
        cls: Any = ray.remote(_Replica).options(**options)
        capacity = self._chunk_size * self._max_inflight
        actors: list[Any] = [cls.remote(self._servlet, capacity) for _ in range(self._num_replicas)]
        try:
            nodes = ray.get([a.ready.remote() for a in actors], timeout=self._startup_timeout)
        except ray.exceptions.GetTimeoutError:
            _kill_actors(actors)
            raise WorkerStartupError(
                f'{self._label()}: the Ray cluster did not place and start {self._num_replicas} '
                f'replica(s) with options {self._options!r} within {self._startup_timeout:g} s '
                f'(not enough free resources on any node?)'
            ) from None
        except ray.exceptions.RayError as e:
            _kill_actors(actors)
            raise WorkerStartupError(f'{self._label()}: a replica failed to start: {e}') from e
        self._slots = [_Slot(i, a, n) for i, (a, n) in enumerate(zip(actors, nodes, strict=True))]
        self._input = _core.Ring.create(_core.INPUT_RING_BYTES, 'mpserver-ray-in')
        self._done = queue.SimpleQueue()
        codec = codec_for(output_local)
        self._threads = [
            threading.Thread(
                target=self._dispatch, args=(self._input, output, codec), name='RayServlet.dispatch', daemon=True
            ),
            threading.Thread(target=self._complete, args=(output,), name='RayServlet.complete', daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self._input, False

    def _stop(self) -> None:
        if self._input is None:
            return
        self._input.close()
        # The threads end once every chunk in flight is answered; a replica
        # that never answers (hung) is killed after the bound below.
        deadline = time.monotonic() + _STOP_WAIT
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                _log.warning('%s: replicas still busy after %g s at stop; killing them', self._label(), _STOP_WAIT)
                break
        for s in self._slots if not any(t.is_alive() for t in self._threads) else []:
            try:
                import ray

                ray.get(s.actor.shutdown.remote(), timeout=30)
            except Exception as e:  # noqa: BLE001 - it is killed next anyway
                _log.debug('replica %d did not shut down cleanly: %s', s.index, e)
        self._release()

    def _kill(self, grace: float = 0.0) -> None:
        if self._input is not None:
            self._input.abort()
        self._release()

    def _release(self) -> None:
        _kill_actors([s.actor for s in self._slots])
        if any(t.is_alive() for t in self._threads):
            self._done.put(None)  # wakes the completion thread if it still runs
        self._slots = []
        self._input = None
        self._threads = []

    # -- the main process's two threads

    def _pick(self) -> _Slot | None:
        """The live replica with the most free capacity; waits while all are busy.
        ``None`` when no replica is left."""
        with self._cond:
            while True:
                live = [s for s in self._slots if not s.dead]
                if not live:
                    return None
                ready = [s for s in live if s.up and s.inflight < self._max_inflight]
                if ready:
                    best = min(ready, key=lambda s: s.inflight)
                    best.inflight += 1
                    return best
                self._cond.wait(0.5)

    def _dispatch(self, inp: Any, output: Any, codec: Any) -> None:
        pending = 0
        while True:
            items = inp.gather(self._chunk_size, 0.0, None)
            if items is None:
                break
            ids: list[tuple[int, int]] = []
            chunk: list[_Msg] = []
            for mid, flags, aux, payload in items:
                if flags & FLAG_ERROR:  # an upstream error passes by
                    output.push(mid, *pass_error(flags, payload, codec), aux)
                    continue
                ids.append((mid, aux))
                chunk.append((flags, _owned(flags, payload)))
            if not chunk:
                continue
            slot = self._pick()
            if slot is None:
                self._fail(output, ids, WorkerCrashedError(f'{self._label()} has no live replica left', self._label()))
                continue
            try:
                ref = slot.actor.run.remote(chunk)
            except Exception as e:  # noqa: BLE001 - this chunk's error
                self._finished(slot)
                self._fail(output, ids, e)
                continue
            pending += 1
            ref.future().add_done_callback(lambda f, s=slot, i=ids: self._done.put((s, i, f)))
        self._done.put(pending)

    def _complete(self, output: Any) -> None:
        import ray

        expected: int | None = None
        seen = 0
        while expected is None or seen < expected:
            got = self._done.get()
            if got is None:
                return
            if isinstance(got, int):
                expected = got
                continue
            seen += 1
            slot, ids, fut = got
            try:
                results = fut.result()
            except ray.exceptions.RayActorError as e:
                err = WorkerCrashedError(
                    f'replica {slot.index} of {self._label()} on node {slot.ip} ({slot.node_id[:12]}) died '
                    f'while it held this item: {type(e).__name__}',
                    self._label(),
                    f'replica-{slot.index}',
                    slot.index,
                )
                self._fail(output, ids, err)
                self._crashed(slot)
                continue
            except Exception as e:  # noqa: BLE001 - a failed Ray call fails its items
                self._fail(output, ids, e)
                self._finished(slot)
                continue
            self._finished(slot)
            for (mid, aux), (f, p) in zip(ids, results, strict=True):
                output.push(mid, f, p, aux)

    def _finished(self, slot: _Slot) -> None:
        with self._cond:
            slot.inflight -= 1
            self._cond.notify_all()

    def _crashed(self, slot: _Slot) -> None:
        """The replica died: keep it out of rotation until Ray restarted it (or gave up)."""
        with self._cond:
            slot.inflight -= 1
            if not slot.up:
                return
            slot.up = False
        _log.warning(
            'replica %d of %s on node %s died; waiting for Ray to restart it', slot.index, self._label(), slot.ip
        )

        threading.Thread(target=self._await_restart, args=(slot,), name='RayServlet.restart', daemon=True).start()

    def _await_restart(self, slot: _Slot) -> None:
        """Ask the restarting actor ``ready()`` until it answers; give it up
        after ``startup_timeout`` plus Ray's restart delays."""
        import ray

        deadline = time.monotonic() + self._startup_timeout + 30
        error: BaseException | None = None
        while time.monotonic() < deadline:
            try:
                node = ray.get(slot.actor.ready.remote(), timeout=max(1.0, deadline - time.monotonic()))
            except ray.exceptions.GetTimeoutError as e:
                error = e
                break
            except ray.exceptions.RayError as e:  # not back yet (or gone for good)
                error = e
                time.sleep(0.5)
                continue
            with self._cond:
                slot.node_id, slot.ip = node
                slot.up = True
                self._cond.notify_all()
            _log.info('replica %d of %s is back on node %s', slot.index, self._label(), slot.ip)
            return
        with self._cond:
            slot.dead = True
            self._cond.notify_all()
        _log.error('replica %d of %s is gone (not restarted: %s)', slot.index, self._label(), error)

    def _fail(self, output: Any, ids: list[tuple[int, int]], exc: BaseException) -> None:
        f, p = PickleCodec.encode_error(exc, _tb(exc))
        for mid, aux in ids:
            output.push(mid, f, p, aux)

    # -- introspection

    @property
    def workers(self) -> list[Any]:
        """The replica actors' handles."""
        return [s.actor for s in self._slots]

    @property
    def children(self) -> tuple[Servlet, ...]:
        return (self._servlet,)

    def _debug_info(self) -> dict[str, Any]:
        return {
            'type': type(self).__name__,
            'children': [
                {'type': 'replica', 'index': s.index, 'node_id': s.node_id, 'ip': s.ip, 'up': s.up, 'dead': s.dead}
                for s in self._slots
            ],
        }

    def _layout(self, path: str) -> Layout:
        return Layout(path, type(self).__name__, self._label(), self._input)


def _kill_actors(actors: list[Any]) -> None:
    import ray

    for a in actors:
        try:
            ray.kill(a, no_restart=True)
        except Exception as e:  # noqa: BLE001 - already gone
            _log.debug('could not kill a replica actor: %s', e)
