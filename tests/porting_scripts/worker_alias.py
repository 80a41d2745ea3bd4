"""An unchanged mpservice program whose workers report what ``mpservice.mpserver`` is.

Prints one JSON line per servlet kind, then one about an error raised in a
worker process.
"""

import json
import sys

from mpservice.mpserver import ProcessServlet, Server, ThreadServlet, Worker
from mpservice.multiprocessing.remote_exception import (
    RemoteException,
    is_remote_exception,
)


class Probe(Worker):
    def call(self, x):
        import mpserver
        import mpservice.mpserver

        return {
            'servlet': x,
            'module': sys.modules['mpservice.mpserver'].__name__,
            'server_is_mpserver': mpservice.mpserver.Server is mpserver.Server,
            'worker_is_mpserver': Worker is mpserver.Worker,
            'remote_is_mpserver': RemoteException is mpserver.RemoteException,
            'mpservice_version': sys.modules['mpservice'].__version__,
        }


class Fail(Worker):
    def call(self, x):
        raise ValueError(x)


def main():
    for servlet in (ProcessServlet(Probe, cpus=[0]), ThreadServlet(Probe)):
        with Server(servlet) as server:
            print(json.dumps(server.call(type(servlet).__name__)))
    with Server(ProcessServlet(Fail, cpus=[0])) as server:
        try:
            server.call('bad input')
        except ValueError as e:
            print(json.dumps({'error': str(e), 'remote': is_remote_exception(e)}))


if __name__ == '__main__':
    main()
