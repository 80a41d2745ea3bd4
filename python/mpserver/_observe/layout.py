"""Which of the core's meter records and rings belong to which servlet and worker.

A server describes its tree once, at start, as a :class:`Layout`.  The same
layout, written to a small file with file descriptor numbers instead of
ring objects (:meth:`Layout.to_json`), lets ``python -m mpserver top`` take
the same snapshots from another process (``announce``).

Paths name servlets: the root is ``"0"``, its members ``"0.0"``, ``"0.1"``,
and so on down the tree (member order as given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ['Layout', 'WorkerLayout']


@dataclass
class WorkerLayout:
    name: str
    kind: str
    record: int


@dataclass
class Layout:
    """Where one servlet's numbers live: its meter records and input ring.

    ``ring`` is a ``_core.Ring`` (or ``None``: a sequence has no ring of its
    own).  ``ring_fd`` is the ring's fd number in the server's process, for
    monitors in other processes."""

    path: str
    kind: str
    label: str
    ring: Any = None
    ring_fd: int = -1
    workers: list[WorkerLayout] = field(default_factory=list)
    router: int | None = None  # an ensemble's meter record
    children: list[Layout] = field(default_factory=list)

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
