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

from typing import TYPE_CHECKING

from ._compose import EnsembleServlet, SequentialServlet, SwitchServlet
from ._config import CpuAffinity
from ._core import __version__ as __version__
from ._errors import ConfigError, ServerBacklogFull, TimeoutError, WorkerCrashedError, WorkerStartupError
from ._remote import (
    EnsembleError,
    RemoteError,
    RemoteException,
    RemoteTraceback,
    get_remote_traceback,
    is_remote_exception,
)
from ._server import Server
from ._servlet import ProcessServlet, Servlet, ThreadServlet
from ._worker import (
    PassThrough,
    ProcessWorker,
    ThreadWorker,
    Worker,
    make_threadworker,
    make_worker,
)

if TYPE_CHECKING:  # at run time these are imported on first use (see __getattr__)
    from ._async import AsyncServer as AsyncServer
    from ._front import HttpRoute as HttpRoute
    from ._front import HttpService as HttpService
    from ._http_wire import HttpRequest as HttpRequest
    from ._install import install as install
    from .ray import RayServlet as RayServlet


def __getattr__(name: str) -> object:
    # AsyncServer pulls in asyncio, and install() the import machinery's
    # abstract classes, both slow to import: imported on first use, so that
    # worker processes (every one imports this package) do not pay for them.
    if name == 'AsyncServer':
        from ._async import AsyncServer

        return AsyncServer
    if name == 'install':
        from ._install import install

        return install
    if name in ('HttpRoute', 'HttpService'):  # the native HTTP front (main process only)
        from . import _front

        return getattr(_front, name)
    if name == 'HttpRequest':
        from ._http_wire import HttpRequest

        return HttpRequest
    if name == 'RayServlet':  # Ray itself is imported when one is made (the ray extra)
        from .ray import RayServlet

        return RayServlet
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    'HttpRequest',
    'HttpRoute',
    'HttpService',
    'Worker',
    'make_worker',
    'PassThrough',
    'ProcessWorker',
    'ThreadWorker',
    'make_threadworker',
    'Servlet',
    'ProcessServlet',
    'ThreadServlet',
    'SequentialServlet',
    'EnsembleServlet',
    'SwitchServlet',
    'RayServlet',
    'CpuAffinity',
    'Server',
    'AsyncServer',
    'ServerBacklogFull',
    'TimeoutError',
    'WorkerStartupError',
    'WorkerCrashedError',
    'ConfigError',
    'RemoteError',
    'RemoteException',
    'RemoteTraceback',
    'is_remote_exception',
    'get_remote_traceback',
    'EnsembleError',
    'install',
]
