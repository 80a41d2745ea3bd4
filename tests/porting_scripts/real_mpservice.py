"""After install, the real mpservice's other modules still work.

A real ``mpservice.multiprocessing`` process (which does not install the
hook) raises; the main process gets it back through the real module's
pickles, now resolved by mpserver's ``remote_exception``.
"""

import json

import mpservice.multiprocessing
import mpservice.streamer
import mpservice.threading
from mpservice.multiprocessing.remote_exception import (
    get_remote_traceback,
    is_remote_exception,
)


def fail(x):
    raise ValueError(x)


def main():
    import mpserver

    out = {
        'remote_module_is_ours': mpservice.multiprocessing.remote_exception.RemoteException is mpserver.RemoteException,
        'stream': mpservice.streamer.Stream(range(5)).map(lambda x: x * 2).collect(),
    }
    p = mpservice.multiprocessing.Process(target=fail, args=('from a real mpservice process',))
    p.start()
    try:
        p.join()
    except ValueError as e:
        out['error'] = str(e)
        out['remote'] = is_remote_exception(e)
        out['traceback_has_fail'] = 'in fail' in get_remote_traceback(e)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
