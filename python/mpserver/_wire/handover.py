"""Values handed to a child process as it starts, multiprocessing objects included.

Some objects may cross into another process only while multiprocessing
starts it: queues, locks, events, conditions, semaphores, pipes
(``Connection``), shared ``Value``/``Array`` memory and manager proxies.  Their
pickles refer to file descriptors the child must inherit (and to semaphores
it opens by name); outside of a child's start, pickling them raises
``RuntimeError: ... should only be shared between processes through
inheritance``.  mpservice passes such objects (worker kwargs, the
``worker_contexts`` of ``mpservice.http``) as arguments of the processes it
spawns, where that works.

mpserver starts its children itself (worker processes, the uvicorn processes
of ``mpserver.http``), so :func:`dumps_for_child` plays multiprocessing's
part: it pickles a value as multiprocessing pickles a spawn child's arguments
(its ``ForkingPickler``, with a stand-in for the child being started), and
returns the fds the child must get, each with the number it must have there.
The child needs nothing special: ``pickle.loads`` rebuilds the objects on the
fds it was given.  Objects made from the default (``fork``) context of Linux
still cannot cross (multiprocessing refuses too): make them from
``Server.get_mp_context()``, a spawn context.
"""

from __future__ import annotations

from multiprocessing import context, reduction

__all__ = ['dumps_for_child']


class _DupFd:
    """What an object's pickle holds for one of its fds: the number the child has it at."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def detach(self) -> int:
        return self.fd


class _Starting:
    """Stands in for multiprocessing's ``Popen`` of the child being started:
    records the fds the objects being pickled hand over."""

    DupFd = _DupFd

    def __init__(self, first_fd: int | None) -> None:
        self.fds: list[tuple[int, int]] = []  # (fd here, fd in the child)
        self._first = first_fd

    def duplicate_for_child(self, fd: int) -> int:
        for here, there in self.fds:
            if here == fd:
                return there
        there = fd if self._first is None else self._first + len(self.fds)
        self.fds.append((fd, there))
        return there


def dumps_for_child(value: object, first_fd: int | None = None) -> tuple[bytes, list[tuple[int, int]]]:
    """``value`` pickled for a child process about to start, and the fds it hands over.

    Returns the pickle (protocol 5) and a list of ``(fd here, fd in the
    child)``: the child must inherit each fd at that number.  With
    ``first_fd`` ``None`` the numbers stay the same (``subprocess``'s
    ``pass_fds``); otherwise they are ``first_fd``, ``first_fd + 1``, ...
    (for a spawner that maps fds, like the core's ``SpawnSpec``).
    """
    starting = _Starting(first_fd)
    previous = context.get_spawning_popen()
    context.set_spawning_popen(starting)  # type: ignore[arg-type]  # a stand-in, duck-typed
    try:
        data = reduction.ForkingPickler.dumps(value, 5)
    finally:
        context.set_spawning_popen(previous)
    return bytes(data), starting.fds
