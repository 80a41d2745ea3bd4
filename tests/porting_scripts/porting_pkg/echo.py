"""``-m`` form of argv_echo.py: prints how it was run; ``--exit N`` exits with N."""

import json
import sys

import mpservice.mpserver

print(
    json.dumps(
        {
            'argv': sys.argv,
            'name': __name__,
            'path0': sys.path[0],
            'mpserver_module': mpservice.mpserver.__name__,
        }
    )
)
if '--exit' in sys.argv:
    sys.exit(int(sys.argv[sys.argv.index('--exit') + 1]))
