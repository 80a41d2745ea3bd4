"""``python -m mpserver serve MODULE:ATTR``: serve a servlet over HTTP with the native front.

``ATTR`` (looked up in the imported module, dots allowed) is one of

* a servlet: it answers ``POST /``;
* a zero-argument callable returning a servlet (e.g. a function that builds
  the tree, or a servlet class taking no arguments);
* a mapping of paths to servlets (or to such callables): each path is a
  route to its own servlet, all in one server (``{'/predict': ...,
  '/embed': ...}``).

The current directory comes first on ``sys.path``, as with ``python -m``.
The server runs until SIGINT or SIGTERM, then drains and exits with status 0.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Mapping
from typing import Any

from mpserver._graph.compound import SwitchServlet
from mpserver._graph.servlet import Servlet
from mpserver._http_front.front import HttpRoute
from mpserver._serving.server import Server
from mpserver._worker.api import Worker

__all__ = ['main']


class RouteSwitch(SwitchServlet):
    """The servlets of a route mapping, side by side in one server.  The HTTP
    front sends each route's requests straight to its member; ``switch`` is
    only reached by ``Server.call``/``stream``, which have no path."""

    def switch(self, x: Any) -> int:
        raise TypeError('this server routes by HTTP path: call it through its HTTP front')


def _fail(message: str) -> None:
    sys.stderr.write(f'python -m mpserver serve: {message}\n')
    sys.exit(2)


def _as_servlet(obj: Any, what: str) -> Servlet:
    if isinstance(obj, Servlet):
        return obj
    if isinstance(obj, type) and issubclass(obj, Worker):
        _fail(f'{what} is a Worker class, not a servlet: serve a servlet of it, e.g. ProcessServlet({obj.__name__})')
    if callable(obj):
        try:
            made = obj()
        except TypeError as e:
            _fail(f'{what} is callable but could not be called without arguments: {e}')
        if isinstance(made, Servlet):
            return made
        _fail(f'{what}() returned {type(made).__name__}, not a servlet')
    _fail(f'{what} is a {type(obj).__name__}, not a servlet, a callable returning one, or a mapping of routes')
    raise AssertionError  # unreachable: _fail exits


def load(target: str) -> tuple[Servlet, dict[str, Any] | None]:
    """The servlet ``MODULE:ATTR`` names, and its routes (None: ``POST /``)."""
    module_name, sep, attr = target.partition(':')
    if not sep or not module_name or not attr:
        _fail(f'expected MODULE:ATTR (e.g. mypackage.service:servlet), got {target!r}')
    if '' not in sys.path:
        sys.path.insert(0, '')
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        _fail(f'cannot import {module_name!r}: {e}')
    for part in attr.split('.'):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            _fail(f'{module_name!r} has no attribute {attr!r}')
    if callable(obj) and not isinstance(obj, (Servlet, type)):
        try:
            made = obj()
        except TypeError as e:
            _fail(f'{target} is callable but could not be called without arguments: {e}')
        if not isinstance(made, (Servlet, Mapping)):
            _fail(f'{target}() returned {type(made).__name__}, not a servlet or a mapping of routes')
        obj = made
    if isinstance(obj, Mapping):
        if not obj:
            _fail(f'{target} is an empty mapping of routes')
        members = [_as_servlet(v, f'{target}[{k!r}]') for k, v in obj.items()]
        return RouteSwitch(*members), {str(k): i for i, k in enumerate(obj)}
    return _as_servlet(obj, target), None


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog='python -m mpserver serve',
        description='Serve a servlet over HTTP with the native front (see docs/http.md).',
    )
    p.add_argument('target', metavar='MODULE:ATTR', help='a servlet, a callable returning one, or {path: servlet}')
    p.add_argument('--host', default='127.0.0.1', help='address to listen on (default 127.0.0.1)')
    p.add_argument('--port', type=int, default=8000, help='port (default 8000; 0: any free port)')
    p.add_argument('--capacity', type=int, default=1024, help='requests in flight at most (default 1024)')
    p.add_argument('--timeout', type=float, default=60.0, help='seconds a request may take: 504 after (default 60)')
    p.add_argument('--max-body', type=int, default=16 << 20, help='largest request body in bytes: 413 beyond')
    p.add_argument('--threads', type=int, default=1, help='I/O threads of the front (default 1)')
    p.add_argument('--request', action='store_true', help='workers receive whole requests (mpserver.HttpRequest)')
    p.add_argument('--drain-timeout', type=float, default=30.0, help='seconds to finish requests on SIGTERM')
    p.add_argument('--access-log', action='store_true', help='log every response on the mpserver.access logger')
    p.add_argument('--debug', action='store_true', help="error responses carry the worker's traceback")
    p.add_argument('--log-level', default='INFO', help='level of the root logger (default INFO)')
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format='%(asctime)s %(name)s %(levelname)s %(message)s')
    servlet, routes = load(args.target)
    if routes is not None and args.request:
        routes = {path: HttpRoute(i, request=True) for path, i in routes.items()}
    server = Server(servlet, capacity=args.capacity)
    try:
        server.serve_http(
            args.host,
            args.port,
            routes=routes,
            request=args.request,
            timeout=args.timeout,
            max_body=args.max_body,
            threads=args.threads,
            access_log=args.access_log,
            drain_timeout=args.drain_timeout,
            debug=args.debug,
        )
    except OSError as e:
        sys.stderr.write(f'python -m mpserver serve: {e}\n')
        return 1
    return 0
