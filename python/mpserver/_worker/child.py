"""Entry point of a worker process: ``python -m mpserver._worker.child PPID INDEX KEY SPIN YIELDS``.

The supervisor hands the process the fds of ``_core.ChildFd``: the
bootstrap data (a memfd), the server's control ring, the servlet's input
ring, its output ring, its claim table (items each worker holds), the
server's cancel board (requests nobody waits for) and its meter board (the
worker's live counters).  The
process binds its life to the parent, prepares ``__main__`` the way
multiprocessing's spawn does (so classes defined in the user's script
resolve), builds the worker, reports ready (or its ``__init__`` error) on the
control ring, and serves until the input ring is closed and drained.
"""

from __future__ import annotations

import multiprocessing.spawn
import os
import pickle
import signal
import sys

from mpserver import _core
from mpserver._compat.inherit import inherit
from mpserver._wire import process as _process
from mpserver._wire.codec import FLAG_CONTROL, PickleCodec
from mpserver._worker import loops
from mpserver._worker.log_forward import forward_records


def main(argv: list[str]) -> int:
    inherit()  # mpserver.install() in the parent: here too
    ppid, index, key = int(argv[0]), int(argv[1]), int(argv[2])
    if not _core.bind_to_parent(ppid):
        return 0  # the parent is already gone
    # How to wait before sleeping: the parent's choice (argv[3:5], see
    # _graph.launch.worker_spin); the environment can override the spin.
    spin, yields = (int(argv[3]), int(argv[4])) if len(argv) > 4 else (None, 0)
    if os.environ.get('MPSERVER_WORKER_SPIN'):
        spin = int(os.environ['MPSERVER_WORKER_SPIN'])
    if spin is not None:
        _core.set_spin(spin, 0, yields)
    # Ctrl-C in a terminal reaches the whole process group; the main process
    # handles it and stops the workers, so workers ignore it (no traceback spam).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _core.set_signal_checks(False)
    _process.keep_heap()

    fd = _core.ChildFd
    size = os.fstat(fd.BOOT).st_size
    boot = pickle.loads(os.pread(fd.BOOT, size, 0))
    os.close(fd.BOOT)
    control = _core.Ring.attach(fd.CONTROL)
    inp = _core.Ring.attach(fd.INPUT)
    out = _core.Ring.attach(fd.OUTPUT)
    claims = _core.ClaimTable.attach(fd.CLAIMS)  # what this worker holds, for the guardian
    _core.bind_claims(claims, index)
    if boot['board']:  # this input carries request tokens: skip what nobody waits for
        board = _core.CancelBoard.attach(fd.BOARD)
        _core.bind_board(board)
    if boot['meter']:  # count what this worker does into its record (cpp/meter.hpp)
        meter = _core.MeterBoard.attach(fd.METER)
        _core.bind_meter(meter, boot['meter'][index], os.getpid())

    name = boot['names'][index]
    prep = dict(boot['prep'], name=name)
    _process.set_worker_name(name)

    ready, init_failed = int(_core.Control.READY), int(_core.Control.INIT_FAILED)

    try:
        # Import the user's main module as __mp_main__ (like multiprocessing's
        # spawn).  A Server started by its top-level code would spawn workers
        # recursively: Server.__enter__ refuses while this flag is set.
        _process.set_bootstrapping(True)
        try:
            multiprocessing.spawn.prepare(prep)
        finally:
            _process.set_bootstrapping(False)
        forward_records(control, boot['log_level'])  # log records go to the main process's handlers
        worker_cls, kwargs = pickle.loads(boot['body'])
        worker = worker_cls(worker_index=index, cpu_affinity=boot['cpus'][index], **kwargs)
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        flags, payload = PickleCodec.encode_error(e)
        control.push(key, flags | FLAG_CONTROL, payload, init_failed)
        return 1
    control.push(key, FLAG_CONTROL, pickle.dumps(worker.name), ready)
    final = bool(boot.get('final'))
    del boot

    try:
        loops.run(worker, inp, out, PickleCodec, final)
    except BaseException as e:
        worker.cleanup(e)
        raise
    worker.cleanup()
    sys.stdout.flush()
    sys.stderr.flush()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
