"""Calls ``install()`` itself (twice), then runs as an mpservice program.

With ``--late``, mpservice (which imports the real ``mpservice.mpserver``)
is imported before ``install()``.  Prints one JSON line from the main
process and one from a worker process.
"""

import json
import os
import sys

if '--late' in sys.argv:
    import mpservice.streamer  # noqa: F401

from mpserver._compat.install import install

install()
install()

from mpservice.mpserver import ProcessServlet, Server, Worker  # noqa: E402 - must come after install()


def report(where):
    import mpserver
    import mpservice.mpserver
    from mpservice.multiprocessing.remote_exception import RemoteException

    finders = [f for f in sys.meta_path if type(f).__module__ == 'mpserver._compat.install']
    return {
        'where': where,
        'module': sys.modules['mpservice.mpserver'].__name__,
        'server_is_mpserver': mpservice.mpserver.Server is mpserver.Server,
        'worker_is_mpserver': Worker is mpserver.Worker,
        'remote_is_mpserver': RemoteException is mpserver.RemoteException,
        'finders': len(finders),
        'finder_first': bool(finders) and sys.meta_path[0] is finders[0],
        'env': os.environ.get('MPSERVER_INSTALL'),
    }


class Probe(Worker):
    def call(self, x):
        return report(x)


if __name__ == '__main__':
    print(json.dumps(report('main')))
    with Server(ProcessServlet(Probe, cpus=[0])) as server:
        print(json.dumps(server.call('worker')))
