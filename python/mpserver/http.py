"""Serve an ASGI app (Starlette, FastAPI, ...) with uvicorn: the API of ``mpservice.http``.

:func:`start_server` runs an app with uvicorn until it is told to stop;
:func:`stop_server`, awaited in one of the app's endpoints (or anywhere in
the process), tells it.  Nothing here knows about :class:`mpserver.AsyncServer`:
the app starts one in its lifespan and its endpoints ``await`` it::

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with AsyncServer(ProcessServlet(Model, cpus=2)) as model:
            yield {'model': model}  # endpoints see it as request.state.model

    app = Starlette(lifespan=lifespan, routes=[Route('/predict', predict, methods=['POST'])])

    if __name__ == '__main__':
        start_server(app, port=8000)

``start_server`` sets the attribute ``worker_context`` on the app (the
innermost one, below uvicorn's middleware) before the lifespan runs: it is
the entry of ``worker_contexts`` for that uvicorn process (``None`` by
default), a way to hand configuration to the lifespan.

With ``workers=1`` (the default, and the usual choice: the AsyncServer's own
worker processes do the parallel work) uvicorn runs in the calling thread.
With ``workers=N`` the app must be an import string (``'module:app'``); the
calling process binds the socket and starts N fresh interpreters, each of
which imports the main script as ``__mp_main__`` (like multiprocessing's
spawn, so objects from it in ``worker_contexts`` unpickle), imports the app
and serves it on the shared socket.  ``stop_server`` in any of them (or in
the calling process) stops all; so does SIGINT or SIGTERM to the calling
process, and a uvicorn process that ends on its own stops the others (and
``start_server`` then exits with its status).  A uvicorn process whose
parent dies shuts down within a tick.

Differences from mpservice 0.16.8, all where mpservice fails: ``stop_server``
before any ``start_server`` returns (mpservice raises ``AttributeError``);
the same app object can be served again after its server stopped (mpservice
asserts it never had a ``worker_context``); a bad ``workers``,
``worker_contexts`` or ``log_config`` and a second running server with the
same ``server_id`` raise ``ValueError``/``TypeError``/``RuntimeError``
instead of an ``AssertionError``, an ``IndexError`` or a pickling error; and
``workers > 1`` does not depend on uvicorn's supervisor internals (which
mpservice 0.16.8 subclasses, and which recent uvicorn changed).

uvicorn is optional: ``import mpserver`` does not import this module, and
importing it without uvicorn raises an :class:`ImportError` that names the
extra to install (``pip install 'mpserver[http]'``).
"""

from __future__ import annotations

import multiprocessing.spawn
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from mpserver._compat.inherit import inherit
from mpserver._graph.launch import child_env
from mpserver._wire.handover import dumps_for_child

try:
    import uvicorn
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        f"mpserver.http needs uvicorn ({e}); install it with: pip install 'mpserver[http]'", name=e.name
    ) from e

# make_server and run_app are the API of mpservice <= 0.12 (make_server lived
# on until 0.14); listed, as mpservice listed them, so that ``import *`` of an
# older program finds them.
__all__ = ['start_server', 'stop_server', 'make_server', 'run_app']

#: uvicorn's exit status for a server that could not start (``uvicorn.main.STARTUP_FAILURE``).
STARTUP_FAILURE = 3

#: How a uvicorn worker process of ``start_server(workers=N)`` starts (see _worker_main).
_WORKER_CODE = 'from mpserver.http import _worker_main; _worker_main()'
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _StopPipe:
    """A stop flag that several processes share: a pipe nobody reads.

    One byte written by any holder of the write end makes the read end
    readable, for every process and for good; that is the flag being set.
    """

    def __init__(self, fds: tuple[int, int] | None = None) -> None:
        self.r, self.w = fds if fds is not None else os.pipe()
        os.set_blocking(self.w, False)

    def request_stop(self) -> None:
        try:
            os.write(self.w, b'!')
        except BlockingIOError:  # the pipe is full: set long ago
            pass

    def is_set(self, timeout: float = 0) -> bool:
        return bool(select.select([self.r], [], [], timeout)[0])

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


class _Server(uvicorn.Server):
    """A uvicorn server that also stops on a shared flag or when its parent dies."""

    def __init__(self, config: uvicorn.Config, stop: _StopPipe | None = None, parent: int | None = None) -> None:
        super().__init__(config)
        self._stop = stop
        self._parent = parent

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.request_stop()  # the other uvicorn processes, and the parent
        self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        if self._stop is not None and self._stop.is_set():
            return True
        return self._parent is not None and os.getppid() != self._parent

    def serve_app(self, worker_context: Any, server_id: str, sockets: list[socket.socket] | None = None) -> None:
        """Load the app, give it ``worker_context``, and serve until stopped
        (registered under ``server_id`` meanwhile)."""
        config = self.config
        if not config.loaded:
            config.load()
        app = config.loaded_app
        while hasattr(app, 'app'):  # uvicorn's middleware (proxy headers, ...) wraps the app
            app = app.app
        app.worker_context = worker_context
        with _registered(server_id, self):
            self.run(sockets=sockets)


# What stop_server(server_id) stops, in this process.
_servers: dict[str, _Server | _StopPipe] = {}
_servers_lock = threading.Lock()


class _registered:
    def __init__(self, server_id: str, target: _Server | _StopPipe) -> None:
        self._id, self._target = server_id, target

    def __enter__(self) -> None:
        with _servers_lock:
            if self._id in _servers:
                raise RuntimeError(
                    f'a server with server_id {self._id!r} is already running in this process; '
                    'give start_server (and stop_server) another server_id'
                )
            _servers[self._id] = self._target

    def __exit__(self, *exc: object) -> None:
        with _servers_lock:
            if _servers.get(self._id) is self._target:
                del _servers[self._id]


async def stop_server(server_id: str = '0') -> None:
    """Ask the server that :func:`start_server` runs under ``server_id`` to stop.

    Meant to be awaited in an endpoint of the app (the response to that
    request is still sent), but it works from anywhere in a process that runs
    the server, e.g. another thread (``asyncio.run(stop_server())``).  With
    ``workers > 1`` it stops every uvicorn process of the server.  The server
    finishes the requests in progress, runs the lifespan's shutdown, and
    ``start_server`` returns.  Without such a server, it does nothing.
    """
    with _servers_lock:
        target = _servers.get(server_id)
    if target is not None:
        target.request_stop()


def start_server(
    app: Callable[..., Any] | str,
    *,
    host: str = '0.0.0.0',
    port: int = 8000,
    access_log: bool = False,
    backlog: int = 128,
    workers: int = 1,
    worker_contexts: Sequence[Any] | None = None,
    log_config: None = None,
    server_id: str = '0',
    **kwargs: Any,
) -> None:
    """Serve the ASGI ``app`` with uvicorn; return once it has stopped.

    Parameters
    ----------
    app
        The app (a Starlette or FastAPI object, or any ASGI callable), or an
        import string ``'module:attribute'`` naming it.  With ``workers > 1``
        it must be the import string.
    host, port
        Where to listen.  ``host='0.0.0.0'`` (all interfaces) suits a
        container; ``port=0`` lets the system pick a free port.
    access_log
        Whether uvicorn logs every request.
    backlog
        The listening socket's backlog: how many connections the kernel
        queues before the server accepts them (uvicorn's own default is
        2048; a short queue makes an overloaded service refuse early).
    workers
        How many uvicorn processes serve the app.  ``1`` serves it in this
        thread.  More are rarely useful: an :class:`mpserver.AsyncServer`
        in the app already spreads the work over processes.
    worker_contexts
        One value per uvicorn process, set as ``app.worker_context`` there
        before the lifespan starts (each gets ``None`` if not given).  With
        ``workers > 1`` they are pickled as multiprocessing pickles a spawned
        process's arguments, so they may hold queues, locks, events and
        pipes made from a spawn context (``Server.get_mp_context()``).
    log_config
        Must be ``None``: uvicorn does not configure logging; the program's
        logging configuration applies.
    server_id
        Names this server for :func:`stop_server`, when one process runs
        several.
    **kwargs
        Passed to :class:`uvicorn.Config` (``loop``, ``http``,
        ``timeout_keep_alive``, ``limit_concurrency``, ``uds``, ``fd``, ...).

    Exits (:class:`SystemExit`) with uvicorn's status 3 when the server
    could not start (the lifespan's startup raised, the port is taken, ...).
    """
    if log_config is not None:
        raise ValueError('log_config must be None: start_server leaves logging to the program')
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f'workers must be an int >= 1, got {workers!r}')
    if workers > 1 and not isinstance(app, str):
        raise TypeError(
            f"with workers={workers}, app must be an import string like 'module:app' "
            f'(each uvicorn process imports it), got {type(app).__name__}'
        )
    contexts = list(worker_contexts) if worker_contexts else [None] * workers
    if len(contexts) != workers:
        raise ValueError(f'worker_contexts has {len(contexts)} entries for workers={workers}')
    options = dict(host=host, port=port, access_log=access_log, backlog=backlog, log_config=None, **kwargs)
    config = uvicorn.Config(app, workers=workers, **options)
    try:
        if workers == 1:
            server = _Server(config)
            server.serve_app(contexts[0], server_id)
            if not server.started and not config.should_reload:
                sys.exit(STARTUP_FAILURE)
        else:
            status = _run_workers(config, app, options, contexts, server_id)
            if status:
                sys.exit(status)
    finally:
        if config.uds and os.path.exists(config.uds):
            os.remove(config.uds)


def make_server(
    app: Callable[..., Any] | str,
    *,
    host: str = '0.0.0.0',
    port: int = 8000,
    access_log: bool = False,
    backlog: int = 128,
    **kwargs: Any,
) -> uvicorn.Server:
    """A :class:`uvicorn.Server` for ``app``, not yet running: the API of mpservice <= 0.14.

    Run it with ``server.run()`` (or ``await server.serve()`` in a coroutine);
    setting ``server.should_exit = True`` (in an endpoint, say) stops it.
    ``host``, ``port``, ``access_log`` and ``backlog`` are those of
    :func:`start_server`; ``**kwargs`` go to :class:`uvicorn.Config` (unlike
    :func:`start_server`, ``log_config`` is uvicorn's own unless given).  One
    process serves it (uvicorn's ``workers=1``).  Programs written for mpservice
    0.15+ use :func:`start_server`.
    """
    config = uvicorn.Config(app, host=host, port=port, access_log=access_log, backlog=backlog, workers=1, **kwargs)
    return uvicorn.Server(config)


def run_app(app: Callable[..., Any] | str, **kwargs: Any) -> None:
    """``make_server(app, **kwargs).run()``: serve until stopped (mpservice 0.12.0 to 0.12.6)."""
    make_server(app, **kwargs).run()


def _run_workers(config: uvicorn.Config, app: Any, options: dict[str, Any], contexts: list[Any], server_id: str) -> int:
    """Serve with ``len(contexts)`` uvicorn processes on one socket bound here;
    return 0 when stopped as asked, else the status of the process that ended
    on its own."""
    sock = config.bind_socket()
    stop = _StopPipe()
    env = dict(kv.split('=', 1) for kv in child_env()) or None
    command = [
        sys.executable,
        *subprocess._args_from_interpreter_flags(),  # type: ignore[attr-defined]
        '-c',
        _WORKER_CODE,
    ]
    procs: list[subprocess.Popen[bytes]] = []
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.request_stop()

        for sig in _SIGNALS:
            previous[sig] = signal.signal(sig, on_signal)
    failed = 0
    try:
        with _registered(server_id, stop):
            boots = []
            for i, context in enumerate(contexts):
                prep = multiprocessing.spawn.get_preparation_data(f'mpserver-http-{i}')
                prep.pop('authkey', None)  # not picklable, and the process needs none
                # As multiprocessing hands a spawn child its arguments: a
                # context may hold queues, locks, events, pipes (their fds go along).
                body, handed = dumps_for_child((app, options, context))
                boot = {
                    'prep': prep,
                    'body': body,
                    'server_id': server_id,
                    'fds': (sock.fileno(), stop.r, stop.w),
                    'parent': os.getpid(),
                }
                boots.append((pickle.dumps(boot), [fd for fd, _ in handed]))
            for data, handed_fds in boots:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    env=env,
                    pass_fds=(sock.fileno(), stop.r, stop.w, *handed_fds),
                )
                procs.append(proc)
                assert proc.stdin is not None
                try:
                    proc.stdin.write(data)
                    proc.stdin.close()
                except BrokenPipeError:  # it died at once; its status tells below
                    pass
            while not stop.is_set(timeout=0.2):
                ended = [p.returncode for p in procs if p.poll() is not None]
                if ended:
                    failed = next((rc for rc in ended if rc), 0)
                    break
    finally:
        stop.request_stop()
        for p in procs:
            p.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stop.close()
        sock.close()
    return failed if failed > 0 else (1 if failed else 0)


def _worker_main() -> None:
    """A uvicorn process of ``start_server(workers=N)``: boot data on stdin."""
    inherit()  # mpserver.install() in the parent: here too
    boot = pickle.loads(sys.stdin.buffer.read())
    multiprocessing.spawn.prepare(boot['prep'])  # sys.path, cwd, the main script as __mp_main__
    app, options, context = pickle.loads(boot['body'])
    sock_fd, r, w = boot['fds']
    sock = socket.socket(fileno=sock_fd)
    server = _Server(uvicorn.Config(app, **options), stop=_StopPipe((r, w)), parent=boot['parent'])
    try:
        server.serve_app(context, boot['server_id'], sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; uvicorn re-raises it when done
        pass
    if not server.started:
        sys.exit(STARTUP_FAILURE)
