"""Prints, as JSON, how it was run; ``--exit N`` exits with N, ``--raise`` raises."""

import json
import sys

import mpservice.mpserver
from mpservice.multiprocessing.remote_exception import RemoteException

print(
    json.dumps(
        {
            'argv': sys.argv,
            'name': __name__,
            'file': __file__,
            'path0': sys.path[0],
            'mpserver_module': mpservice.mpserver.__name__,
            'remote_exception_module': RemoteException.__module__,
        }
    )
)
if '--exit' in sys.argv:
    sys.exit(int(sys.argv[sys.argv.index('--exit') + 1]))
if '--raise' in sys.argv:
    raise ValueError('boom from the script')
