"""The native HTTP front: ``Server.serve_http`` / ``Server.start_http``.

The front is C++ (``cpp/http_front.hpp``): its threads accept connections,
parse requests with Boost.Beast, put each request's body (or request record)
into its route's entry ring and write the response from the ledger slot the
collector filled.  Python only sets it up and takes it down; no Python runs
in the main process per request.  What the workers see and send back is in
``_wire.http_request`` and ``_wire.http_response``.

Routes: ``POST /`` goes to the server's servlet unless ``routes`` says
otherwise.  A route names the servlet it feeds: the server's servlet, or a
member of a ``SwitchServlet`` at the top of the tree (by index, or the
servlet object itself; members of a member switch too).  Those are the
servlets whose results are final: a route into the middle of a sequence or
an ensemble would have nobody to answer it.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mpserver import _core
from mpserver._graph.compound import EnsembleServlet, SequentialServlet, SwitchServlet
from mpserver._wire.errors import ConfigError, check_timeout

if TYPE_CHECKING:  # (the serving layer imports this module: these names are for the type checker only)
    from mpserver._graph.servlet import Servlet
    from mpserver._serving.running import Running
    from mpserver._serving.server import Server


__all__ = ['HttpRoute', 'HttpService', 'start_http', 'serve_http']

_log = logging.getLogger('mpserver')


@dataclass(frozen=True)
class HttpRoute:
    """Where one path of the HTTP front goes.

    ``servlet``: the servlet that serves it — ``None`` for the server's
    servlet, an ``int`` for that member of the top ``SwitchServlet``, or a
    servlet object of the tree (the top one, or a member of a top switch).
    ``request``: the workers receive an :class:`mpserver.HttpRequest`
    (method, path, query, headers, body) and the route takes every method;
    otherwise they receive the body as ``bytes`` and the route takes POST.
    """

    servlet: Servlet | int | None = None
    request: bool = False


# ----------------------------------------------------------------- routes

_RESERVED = frozenset({'/healthz', '/readyz', '/metrics'})  # HttpRoutes::reserved (cpp/http_message.cpp)


def _final_targets(root: Servlet) -> list[tuple[Servlet, tuple[int, ...]]]:
    """Servlets whose output is the server's output, with their member path
    from the root: the root and, through switches, their members."""
    out: list[tuple[Servlet, tuple[int, ...]]] = []

    def walk(s: Servlet, path: tuple[int, ...]) -> None:
        out.append((s, path))
        if isinstance(s, SwitchServlet):
            for i, m in enumerate(s._servlets):
                walk(m, (*path, i))

    walk(root, ())
    return out


def _http_problem(s: Servlet) -> str | None:
    """Why ``s`` cannot answer HTTP requests itself, or None: its last
    stage must be a worker servlet, which encodes the response."""
    if isinstance(s, EnsembleServlet):
        return (
            f"{s._label()} combines its members' results in the main process, where no worker "
            'encodes the HTTP response: end it with a ProcessServlet or ThreadServlet stage '
            '(e.g. SequentialServlet(ensemble, ProcessServlet(Format)))'
        )
    if isinstance(s, SequentialServlet):
        return _http_problem(s._servlets[-1])
    if isinstance(s, SwitchServlet):
        for m in s._servlets:
            why = _http_problem(m)
            if why:
                return why
    return None


def _resolve(root: Servlet, routes: Mapping[str, Any] | None, request: bool) -> list[tuple[str, tuple[int, ...], bool]]:
    """(path, member path from the root, whole request?) of every route."""

    if routes is None:
        routes = {'/': HttpRoute(None, request)}
    if not isinstance(routes, Mapping) or not routes:
        raise ConfigError(f'routes must be a non-empty mapping of paths to servlets, got {routes!r}')
    targets = _final_targets(root)
    out = []
    for path, spec in routes.items():
        if not isinstance(path, str):
            raise ConfigError(f'a route path must be a str, got {path!r}')
        if not path.startswith('/') or '?' in path or '#' in path:
            raise ConfigError(f"a route path starts with '/' and has no '?' or '#', got {path!r}")
        if path in _RESERVED:
            raise ConfigError(f'the front answers {path} itself; it cannot be a route')
        route = spec if isinstance(spec, HttpRoute) else HttpRoute(spec, request)
        target = route.servlet
        if target is None:
            where: tuple[int, ...] = ()
        elif isinstance(target, bool) or not isinstance(target, int) and not hasattr(target, '_label'):
            raise ConfigError(f'route {path!r}: expected a servlet, a member index or None, got {target!r}')
        elif isinstance(target, int):
            if not isinstance(root, SwitchServlet):
                raise ConfigError(
                    f"route {path!r} names member {target}, but the server's servlet is not a SwitchServlet"
                )
            if not 0 <= target < len(root._servlets):
                raise ConfigError(f'route {path!r}: the SwitchServlet has no member {target}')
            where = (target,)
        else:
            found = [p for s, p in targets if s is target]
            if not found:
                raise ConfigError(
                    f"route {path!r}: {target._label()} is not the server's servlet nor a member of a "
                    'SwitchServlet at its top, so its results are not final'
                )
            where = found[0]
        serving = root
        for i in where:
            serving = serving._servlets[i]  # type: ignore[attr-defined]
        why = _http_problem(serving)
        if why:
            raise ConfigError(f'route {path!r}: {why}')
        out.append((path, where, route.request))
    return out


def _entry_ring(run: Running, where: tuple[int, ...]) -> Any:
    if not where:
        return run.entry
    s: Any = run.servlet
    for i in where[:-1]:
        s = s._servlets[i]
    return s._member_inputs[where[-1]]


# ----------------------------------------------------------------- the service


def _raise_fd_limit(wanted: int) -> None:
    """Many connections need many file descriptors: raise the soft limit
    (up to the hard one) if it is below ``wanted``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


class HttpService:
    """A running HTTP front (what :meth:`Server.start_http` returns).

    ``stop(timeout)`` drains it: no new connections, ``/readyz`` says 503,
    requests already admitted are answered as their results come (for up to
    ``timeout`` seconds; those still waiting then get 503), then every
    connection closes.  If :meth:`Server.start_http` started the server, the
    server stops too.  Also a context manager (``with server.start_http():``).
    """

    def __init__(self, server: Server, run: Running, front: Any, host: str, owns_server: bool) -> None:
        self.server = server
        self._run = run  # the running server's record, which lists the fronts serving it
        self._front = front
        self.host = host
        self.port: int = front.port
        self._owns_server = owns_server
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """``http://host:port`` (IPv6 hosts in brackets)."""
        host = f'[{self.host}]' if ':' in self.host else self.host
        return f'http://{host}:{self.port}'

    def counts(self) -> dict[str, int]:
        """Connections accepted and open, requests read, responses written,
        requests refused for a full backlog, timed out, malformed, in flight."""
        return dict(self._front.counts())

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def stop(self, timeout: float = 30.0) -> int:
        """Drains and stops (see the class docstring); returns how many
        requests were still waiting when ``timeout`` passed.  Idempotent."""
        with self._lock:
            if self._stopped.is_set():
                return 0
            left = int(self._front.drain(float(timeout)))
            self._run.fronts.discard(self)
            self._stopped.set()
        if left:
            _log.warning('HTTP front on %s stopped with %d requests unanswered after %.3g s', self.url, left, timeout)
        if self._owns_server:
            self.server.__exit__(None, None, None)
        _log.info('HTTP front on %s stopped', self.url)
        return left

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until the service stopped (or ``timeout``); True if it did."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> HttpService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_http(
    server: Server,
    host: str = '127.0.0.1',
    port: int = 8000,
    *,
    routes: Mapping[str, Any] | None = None,
    request: bool = False,
    timeout: float = 60.0,
    max_body: int = 16 << 20,
    max_header: int = 16 << 10,
    read_timeout: float = 30.0,
    idle_timeout: float = 75.0,
    max_connections: int = 10000,
    threads: int = 1,
    retry_after: int = 1,
    access_log: bool = False,
    metrics_prefix: str = 'mpserver',
) -> HttpService:
    check_timeout(timeout)
    for name, v in (('read_timeout', read_timeout), ('idle_timeout', idle_timeout)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ConfigError(f'{name} must be a number of seconds > 0, got {v!r}')
    for name, v, low in (
        ('max_body', max_body, 0),
        ('max_header', max_header, 1024),
        ('max_connections', max_connections, 1),
        ('threads', threads, 1),
        ('retry_after', retry_after, 0),
        ('port', port, 0),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f'{name} must be an int >= {low}, got {v!r}')
    if not isinstance(host, str) or not host:
        raise ConfigError(f'host must be an address, got {host!r}')
    plan = _resolve(server.servlet, routes, request)
    wheres = sorted({w for _, w, _ in plan})
    table = [(path, wheres.index(w), whole) for path, w, whole in plan]
    _raise_fd_limit(max_connections + 256)
    try:
        front = _core.HttpFront(
            table,
            host,
            port,
            threads,
            max_body,
            max_header,
            float(timeout),
            float(read_timeout),
            float(idle_timeout),
            max_connections,
            retry_after,
        )
    except ValueError as e:
        if str(e).startswith('cannot listen'):
            raise OSError(str(e)) from None
        raise ConfigError(str(e)) from None
    front.start()
    owns = server._state == 'new'
    if owns:
        try:
            server.__enter__()
        except BaseException:
            front.drain(0.0)
            raise
    elif server._state != 'running':
        front.drain(0.0)
        raise RuntimeError(f'the server is {server._state}: start_http needs a new or a running server')
    try:
        run = server._running()
        entries = [_entry_ring(run, w) for w in wheres]
        front.attach(
            run.book,
            entries,
            run.guardian,
            run.meter,
            run.layout,
            metrics_prefix,
            run.control if access_log else None,
        )
    except BaseException:
        front.drain(0.0)
        if owns:
            server.__exit__(None, None, None)
        raise
    svc = HttpService(server, run, front, host, owns)
    run.fronts.add(svc)
    _log.info('HTTP front serving %s on %s', server.servlet._label(), svc.url)
    return svc


def serve_http(
    server: Server, host: str = '127.0.0.1', port: int = 8000, *, drain_timeout: float = 30.0, **kw: Any
) -> None:
    """:func:`start_http`, then block until SIGINT or SIGTERM (on the main
    thread) or until :meth:`HttpService.stop` / :meth:`Server.stop_http` is
    called from another thread; then drain for up to ``drain_timeout``
    seconds and return."""
    debug = kw.pop('debug', False)
    if debug:
        os.environ['MPSERVER_HTTP_TRACEBACKS'] = '1'  # workers started from here on inherit it
    svc = start_http(server, host, port, **kw)
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: Any) -> None:
            _log.info('HTTP front: %s, draining', signal.Signals(signum).name)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    run = server._running()
    run.http_stop = stop
    try:
        while not stop.is_set() and not svc.stopped:
            stop.wait(0.25)
    finally:
        run.http_stop = None
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        t0 = time.monotonic()
        svc.stop(drain_timeout)
        _log.debug('HTTP front drained in %.3f s', time.monotonic() - t0)
