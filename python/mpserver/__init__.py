"""mpserver — the ``mpservice.mpserver`` API on a C++ shared-memory core.

Write :class:`Worker` subclasses, run them in :class:`ProcessServlet`\\ s
(worker processes, for CPU-bound work) or :class:`ThreadServlet`\\ s (threads
of the main process), and serve requests through a :class:`Server`::

    from mpserver import Server, ProcessServlet, Worker

    class Square(Worker):
        def call(self, x):
            return x * x

    if __name__ == '__main__':
        with Server(ProcessServlet(Square, cpus=2)) as server:
            print(server.call(3))                    # 9
            print(list(server.stream(range(5))))     # [0, 1, 4, 9, 16]
"""

import importlib
from typing import TYPE_CHECKING

from mpserver._core import __version__ as __version__

#: Where each public name lives.  Nothing is imported until a name is first
#: used (PEP 562): a worker process imports this package too, and must load
#: only the worker side (``_wire``, ``_worker``), not the servers and
#: servlets of the main process.
_HOME = {
    'Worker': 'mpserver._worker.api',
    'make_worker': 'mpserver._worker.api',
    'PassThrough': 'mpserver._worker.api',
    'ProcessWorker': 'mpserver._worker.api',
    'ThreadWorker': 'mpserver._worker.api',
    'make_threadworker': 'mpserver._worker.api',
    'Servlet': 'mpserver._graph.servlet',
    'ProcessServlet': 'mpserver._graph.process_servlet',
    'ThreadServlet': 'mpserver._graph.thread_servlet',
    'SequentialServlet': 'mpserver._graph.compound',
    'EnsembleServlet': 'mpserver._graph.compound',
    'SwitchServlet': 'mpserver._graph.compound',
    'RayServlet': 'mpserver.ray',  # Ray itself is imported when one is made (the ray extra)
    'CpuAffinity': 'mpserver._graph.checks',
    'Server': 'mpserver._serving.server',
    'AsyncServer': 'mpserver._serving.async_server',
    'HttpRoute': 'mpserver._http_front.front',
    'HttpService': 'mpserver._http_front.front',
    'HttpRequest': 'mpserver._wire.http_request',
    'ServerBacklogFull': 'mpserver._wire.errors',
    'TimeoutError': 'mpserver._wire.errors',
    'WorkerStartupError': 'mpserver._wire.errors',
    'WorkerCrashedError': 'mpserver._wire.errors',
    'ConfigError': 'mpserver._wire.errors',
    'RemoteError': 'mpserver._wire.remote',
    'RemoteException': 'mpserver._wire.remote',
    'RemoteTraceback': 'mpserver._wire.remote',
    'is_remote_exception': 'mpserver._wire.remote',
    'get_remote_traceback': 'mpserver._wire.remote',
    'EnsembleError': 'mpserver._wire.remote',
    'install': 'mpserver._compat.install',
    # Older names of mpservice <= 0.12 (the same objects), for programs written then:
    'Sequential': 'mpserver._graph.compound',
    'Ensemble': 'mpserver._graph.compound',
    'PipelineFull': 'mpserver._wire.errors',
}

#: Names that resolve but stay out of ``__all__`` (so out of ``import *`` and of
#: the API reference): mpservice deprecated these aliases itself (0.11.8) and
#: never listed them in its ``__all__``; new code uses the names they alias.
_UNLISTED = frozenset({'Sequential', 'Ensemble', 'PipelineFull'})

__all__ = [name for name in _HOME if name not in _UNLISTED]

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from mpserver._compat.install import install as install
    from mpserver._graph.checks import CpuAffinity as CpuAffinity
    from mpserver._graph.compound import Ensemble as Ensemble
    from mpserver._graph.compound import EnsembleServlet as EnsembleServlet
    from mpserver._graph.compound import Sequential as Sequential
    from mpserver._graph.compound import SequentialServlet as SequentialServlet
    from mpserver._graph.compound import SwitchServlet as SwitchServlet
    from mpserver._graph.process_servlet import ProcessServlet as ProcessServlet
    from mpserver._graph.servlet import Servlet as Servlet
    from mpserver._graph.thread_servlet import ThreadServlet as ThreadServlet
    from mpserver._http_front.front import HttpRoute as HttpRoute
    from mpserver._http_front.front import HttpService as HttpService
    from mpserver._serving.async_server import AsyncServer as AsyncServer
    from mpserver._serving.server import Server as Server
    from mpserver._wire.errors import ConfigError as ConfigError
    from mpserver._wire.errors import PipelineFull as PipelineFull
    from mpserver._wire.errors import ServerBacklogFull as ServerBacklogFull
    from mpserver._wire.errors import TimeoutError as TimeoutError
    from mpserver._wire.errors import WorkerCrashedError as WorkerCrashedError
    from mpserver._wire.errors import WorkerStartupError as WorkerStartupError
    from mpserver._wire.http_request import HttpRequest as HttpRequest
    from mpserver._wire.remote import EnsembleError as EnsembleError
    from mpserver._wire.remote import RemoteError as RemoteError
    from mpserver._wire.remote import RemoteException as RemoteException
    from mpserver._wire.remote import RemoteTraceback as RemoteTraceback
    from mpserver._wire.remote import get_remote_traceback as get_remote_traceback
    from mpserver._wire.remote import is_remote_exception as is_remote_exception
    from mpserver._worker.api import PassThrough as PassThrough
    from mpserver._worker.api import ProcessWorker as ProcessWorker
    from mpserver._worker.api import ThreadWorker as ThreadWorker
    from mpserver._worker.api import Worker as Worker
    from mpserver._worker.api import make_threadworker as make_threadworker
    from mpserver._worker.api import make_worker as make_worker
    from mpserver.ray import RayServlet as RayServlet


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
