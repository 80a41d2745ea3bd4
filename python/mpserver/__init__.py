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

from ._errors import ConfigError, ServerBacklogFull, TimeoutError, WorkerCrashedError, WorkerStartupError
from ._remote import (
    EnsembleError,
    RemoteException,
    RemoteTraceback,
    get_remote_traceback,
    is_remote_exception,
)
from ._install import install
from ._server import Server
from ._servlet import (
    CpuAffinity,
    EnsembleServlet,
    ProcessServlet,
    SequentialServlet,
    Servlet,
    SwitchServlet,
    ThreadServlet,
)
from ._worker import (
    PassThrough,
    ProcessWorker,
    ThreadWorker,
    Worker,
    make_threadworker,
    make_worker,
)

__version__ = '0.1.0'


def __getattr__(name):
    # AsyncServer pulls in asyncio (~30 ms): imported on first use, so that
    # worker processes and thread-only users do not pay for it at start-up.
    if name == 'AsyncServer':
        from ._async import AsyncServer

        return AsyncServer
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(set(globals()) | set(__all__))

__all__ = [
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
    'CpuAffinity',
    'Server',
    'AsyncServer',
    'ServerBacklogFull',
    'TimeoutError',
    'WorkerStartupError',
    'WorkerCrashedError',
    'ConfigError',
    'RemoteException',
    'RemoteTraceback',
    'is_remote_exception',
    'get_remote_traceback',
    'EnsembleError',
    'install',
]
