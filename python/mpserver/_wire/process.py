"""What this process is to mpserver: its worker name (in a worker process),
whether it is still importing the user's main module, and how its heap is
tuned for large payloads.

A worker process (``mpserver._worker.child``) sets its name once at start-up; the
main process keeps ``None`` and uses multiprocessing's process name, so log
records, worker names and remote tracebacks are labelled the same way
everywhere.
"""

from __future__ import annotations

import multiprocessing
import os

from mpserver import _core

_name: str | None = None
_bootstrapping = False
_heap_kept = False


def name() -> str:
    """This process's name: the worker's name in a worker process, else
    multiprocessing's name for the process (``'MainProcess'``)."""
    if _name is not None:
        return _name
    return multiprocessing.current_process().name


def set_worker_name(name: str) -> None:
    """Called once by a worker process at start-up."""
    global _name
    _name = name


def bootstrapping() -> bool:
    """True while a worker process imports the user's main module."""
    return _bootstrapping


def set_bootstrapping(on: bool) -> None:
    global _bootstrapping
    _bootstrapping = on


def keep_heap() -> None:
    """Lets this process reuse the memory of large payloads (once per process).

    glibc gives every block above 128 KiB its own mapping and returns freed
    heap tops to the kernel, so a process receiving one large payload after
    another pays a page fault for every 4 KiB of every payload.  This raises
    both thresholds (blocks up to 32 MiB come from the heap; up to 128 MiB of
    free heap is kept).  Called by the first Server started in the main
    process and by every worker process; ``MPSERVER_KEEP_HEAP=0`` in the
    environment turns it off.
    """
    global _heap_kept
    if _heap_kept or os.environ.get('MPSERVER_KEEP_HEAP', '1') == '0':
        return
    _heap_kept = True
    _core.keep_heap(32 << 20, 128 << 20)
