"""Which of the core's meter records and rings belong to which servlet and worker.

A server describes its tree once, at start, as a :class:`Layout`.  The same
layout, written to a small file with file descriptor numbers instead of
ring objects (:meth:`Layout.to_json`), lets ``python -m mpserver top`` take
the same snapshots from another process (``announce``).

Paths name servlets: the root is ``"0"``, its members ``"0.0"``, ``"0.1"``,
and so on down the tree (member order as given).
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ['Layout', 'WorkerLayout']


class WorkerLayout(NamedTuple):
    """One worker: its name, ``'process'`` or ``'thread'``, its meter record."""

    name: str
    kind: str
    record: int


class Layout:
    """Where one servlet's numbers live: its meter records and input ring.

    ``ring`` is a ``_core.Ring`` (or ``None``: a sequence has no ring of its
    own).  ``ring_fd`` is the ring's fd number in the server's process, for
    monitors in other processes.  (A plain class, not a dataclass: servlet
    modules import it, and a user's script that imports them is imported by
    every worker process too.)"""

    __slots__ = ('path', 'kind', 'label', 'ring', 'ring_fd', 'workers', 'router', 'children')

    def __init__(
        self,
        path: str,
        kind: str,
        label: str,
        ring: Any = None,
        ring_fd: int = -1,
        workers: list[WorkerLayout] | None = None,
        router: int | None = None,  # an ensemble's meter record
        children: list[Layout] | None = None,
    ) -> None:
        self.path = path
        self.kind = kind
        self.label = label
        self.ring = ring
        self.ring_fd = ring_fd
        self.workers: list[WorkerLayout] = workers if workers is not None else []
        self.router = router
        self.children: list[Layout] = children if children is not None else []

    def __repr__(self) -> str:
        return f'Layout({self.path!r}, {self.kind!r}, {self.label!r}, {len(self.workers)} workers)'

    def records(self) -> list[int]:
        """Every meter record this subtree reads, in walk order."""
        out = [w.record for w in self.workers]
        if self.router is not None:
            out.append(self.router)
        for c in self.children:
            out += c.records()
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            'path': self.path,
            'kind': self.kind,
            'label': self.label,
            'ring_fd': self.ring.fd if self.ring is not None else -1,
            'workers': [{'name': w.name, 'kind': w.kind, 'record': w.record} for w in self.workers],
            'router': self.router,
            'children': [c.to_json() for c in self.children],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Layout:
        return cls(
            d['path'],
            d['kind'],
            d['label'],
            None,
            int(d['ring_fd']),
            [WorkerLayout(w['name'], w['kind'], int(w['record'])) for w in d['workers']],
            d['router'],
            [cls.from_json(c) for c in d['children']],
        )
