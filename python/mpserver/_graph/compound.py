"""Compound servlets: how servlets compose into a graph.

Compound servlets wire rings together: a :class:`SequentialServlet` hands
each stage the next stage's input ring as its output (stages feed each other
directly, process to process); an :class:`EnsembleServlet`'s fan-out and
fan-in run in a C++ router (cpp/ensemble_router.hpp); a
:class:`SwitchServlet` routes on a thread of the main process, because its
``switch`` method is Python.
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from typing import Any

from mpserver import _core
from mpserver._graph.launch import Launch
from mpserver._graph.servlet import Servlet
from mpserver._observe.layout import Layout
from mpserver._wire.codec import FLAG_ERROR, Codec, by_reference_composite, codec_for, decode, pass_error
from mpserver._wire.errors import ConfigError

__all__ = ['SequentialServlet', 'EnsembleServlet', 'SwitchServlet']


def _check_members(kind: str, servlets: tuple[Servlet, ...], minimum: int) -> tuple[Servlet, ...]:
    if len(servlets) < minimum:
        raise ConfigError(f'{kind} needs at least {minimum} servlet{"s" if minimum > 1 else ""}, got {len(servlets)}')
    for i, s in enumerate(servlets):
        if not isinstance(s, Servlet):
            raise ConfigError(f'{kind}: member {i} must be a Servlet, got {type(s).__name__}')
    return tuple(servlets)


def _kill_all(servlets: tuple[Servlet, ...], grace: float) -> None:
    """Kills several servlets, sharing one grace period among them."""
    deadline = time.monotonic() + grace
    for s in servlets:
        s._kill(max(0.0, deadline - time.monotonic()))


class _Compound(Servlet):
    """What Sequential, Ensemble and Switch servlets share: members and their workers."""

    _servlets: tuple[Servlet, ...]

    @property
    def workers(self) -> list[Any]:
        return [w for s in self._servlets for w in s.workers]

    @property
    def children(self) -> tuple[Servlet, ...]:
        """The member servlets, as given (a tuple, as in mpservice)."""
        return self._servlets

    def _debug_info(self) -> dict[str, Any]:
        return {'type': type(self).__name__, 'children': [s._debug_info() for s in self._servlets]}

    def _guard(self, guardian: Any) -> None:
        for s in self._servlets:
            s._guard(guardian)

    def _layout(self, path: str) -> Layout:
        return Layout(
            path,
            type(self).__name__,
            self._label(),
            getattr(self, '_input', None),
            children=[s._layout(f'{path}.{i}') for i, s in enumerate(self._servlets)],
        )


class SequentialServlet(_Compound):
    """Runs servlets one after another: each one's output is the next one's input.

    Stages hand items to each other directly: process workers of one stage
    write into the input ring of the next, so an item does not pass through
    the main process between two process stages.
    """

    def __init__(self, *servlets: Servlet) -> None:
        self._servlets = _check_members('SequentialServlet', servlets, 1)

    def _start(self, launch: Launch, output: Any, output_local: bool) -> tuple[Any, bool]:
        # Last stage first: each stage needs its consumer's ring.
        for s in reversed(self._servlets):
            output, output_local = s._start(launch, output, output_local)
        return output, output_local

    def _chunk_readers(self) -> int:
        return self._servlets[0]._chunk_readers()  # its input is the first stage's

    def _stop(self) -> None:
        # In order: a stage is drained (and its workers gone) before the next
        # stage's input is closed, so nothing in flight is lost.
        for s in self._servlets:
            s._stop()

    def _kill(self, grace: float = 0.0) -> None:
        _kill_all(self._servlets, grace)


class EnsembleServlet(_Compound):
    """Gives every input to all member servlets; the result is the list of
    their results, in member order.

    With ``fail_fast=True`` (default), the first member that raises makes the
    item's result an :class:`EnsembleError` (results of the other members for
    that item are dropped).  With ``fail_fast=False``, exceptions take their
    place in the list; only if every member failed is the result an
    :class:`EnsembleError`.  ``EnsembleError.args[1]`` is ``{'y': [results,
    exceptions, or None for members that had not finished], 'n': members
    finished}``.  An exception arriving from an earlier stage skips the
    ensemble and goes on unchanged.

    Fan-out and fan-in run in C++ threads of the main process (no polling):
    members read their own input ring and write to the ensemble's join ring.
    When every member takes its input by reference (thread members) and the
    ensemble's consumer is in the main process, items travel by reference
    (each member holds its own reference); otherwise they are pickled.
    """

    def __init__(self, *servlets: Servlet, fail_fast: bool = True) -> None:
        self._servlets = _check_members('EnsembleServlet', servlets, 2)
        if len(servlets) > _core.MAX_ENSEMBLE_MEMBERS:
            raise ConfigError(
                f'EnsembleServlet takes at most {_core.MAX_ENSEMBLE_MEMBERS} members, got {len(servlets)}'
            )
        if not isinstance(fail_fast, bool):
            raise ConfigError(f'fail_fast must be a bool, got {fail_fast!r}')
        self._fail_fast = fail_fast
        self._input: Any = None
        self._join: Any = None
        self._router: Any = None
        self._record: int | None = None  # the router's meter record

    def _start(self, launch: Launch, output: Any, output_local: bool) -> tuple[Any, bool]:
        if self._router is not None:
            raise RuntimeError('this servlet is already running in a server')
        self._join = _core.Ring.create(_core.INPUT_RING_BYTES, 'mpserver-join')
        carries, launch.carries_tokens = launch.carries_tokens, False  # members get the router's tickets
        try:
            started = [s._start(launch, self._join, output_local) for s in self._servlets]
        finally:
            launch.carries_tokens = carries
        # By reference only when the consumer is local too: an upstream error
        # passes through the router untouched, and must suit the consumer.
        local = output_local and all(loc for _, loc in started)
        self._input = _core.Ring.create(_core.INPUT_RING_BYTES, 'mpserver-ensemble-in')
        if local:
            self._input.object_refs = len(self._servlets)  # one per member
        self._record = launch.meter_record() if launch.meter is not None else None
        self._router = _core.EnsembleRouter(
            self._input,
            [r for r, _ in started],
            self._join,
            output,
            self._fail_fast,
            launch.meter,
            self._record or 0,
        )
        self._router.start()
        return self._input, local

    def _stop(self) -> None:
        if self._router is None:
            return
        self._input.close()
        self._router.join_fanout()  # every input handed to every member
        for s in self._servlets:
            s._stop()  # every member result is in the join ring
        self._join.close()
        self._router.join_fanin()  # every result emitted
        self._release()

    def _kill(self, grace: float = 0.0) -> None:
        if self._input is not None:
            self._input.abort()
        if self._join is not None:
            self._join.abort()
        _kill_all(self._servlets, grace)
        if self._router is not None:
            self._router.join_fanout()
            self._router.join_fanin()
        self._release()

    def _release(self) -> None:
        self._router = self._input = self._join = None

    def _layout(self, path: str) -> Layout:
        lay = super()._layout(path)
        lay.router = self._record
        return lay

    def _debug_info(self) -> dict[str, Any]:
        info = super()._debug_info()
        info['fail_fast'] = self._fail_fast
        r = self._router
        if r is not None:
            info['router'] = {'emitted': r.emitted, 'dropped': r.dropped, 'open': r.open_entries}
        return info


class SwitchServlet(_Compound):
    """Sends each input to exactly one member servlet, chosen by :meth:`switch`.

    Subclass it and implement ``switch(self, x) -> int``.  It runs on a
    routing thread of the main process for every input (exceptions from an
    earlier stage skip it and go on unchanged).  If ``switch`` raises, or
    returns something that is not a valid member index, that exception (an
    ``IndexError``/``TypeError`` for a bad index) becomes the item's result.
    """

    def __init__(self, *servlets: Servlet) -> None:
        self._servlets = _check_members('SwitchServlet', servlets, 1)
        self._member_inputs: list[Any] = []
        self._input: Any = None
        self._thread: threading.Thread | None = None

    @abstractmethod
    def switch(self, x: Any) -> int:
        """Return the index of the member servlet that processes ``x``.

        ``x`` is never an exception.  Keep it quick: it runs in the main process.
        """
        raise NotImplementedError

    def _start(self, launch: Launch, output: Any, output_local: bool) -> tuple[Any, bool]:
        if self._thread is not None:
            raise RuntimeError('this servlet is already running in a server')
        started = [s._start(launch, output, output_local) for s in self._servlets]
        local = all(loc for _, loc in started)
        self._member_inputs = [r for r, _ in started]  # where the HTTP front's routes send (_front.py)
        self._input = _core.Ring.create(_core.INPUT_RING_BYTES, 'mpserver-switch-in')
        self._thread = threading.Thread(
            target=self._route,
            args=(
                self._input,
                [r for r, _ in started],
                [codec_for(loc) for _, loc in started],
                output,
                codec_for(output_local),
            ),
            name=f'{type(self).__name__}.router',
            daemon=True,
        )
        self._thread.start()
        return self._input, local

    def _route(
        self, inp: Any, members: list[_core.Ring], member_codecs: list[Codec], output: Any, codec: Codec
    ) -> None:
        n = len(members)
        switch = self.switch
        name = type(self).__name__

        def choose(flags: int, payload: Any) -> tuple[int, int, Any]:
            """(member index, message flags, payload) or raises the item's error."""
            x = decode(flags, payload)
            idx = switch(x)
            if isinstance(idx, bool) or not isinstance(idx, int):
                raise TypeError(f'{name}.switch returned {idx!r}; it must return an int member index')
            if not 0 <= idx < n:
                raise IndexError(f'{name}.switch returned {idx}; valid member indices are 0..{n - 1}')
            if by_reference_composite(flags, payload):
                return (idx, *member_codecs[idx].encode(x))
            return idx, flags, payload

        # One push per member and batch: one lock and one wake-up for a run.
        while True:
            items = inp.gather(256, 0.0, None)
            if items is None:
                return
            runs: dict[tuple[int, int], list[tuple[int, int, Any]]] = {}  # (member, aux) -> [(id, flags, payload), ...]
            for mid, flags, aux, payload in items:
                if flags & FLAG_ERROR:
                    output.push(mid, *pass_error(flags, payload, codec), aux)
                    continue
                try:
                    idx, flags, payload = choose(flags, payload)
                except Exception as e:  # noqa: BLE001 - a decode or switch() failure is this item's result
                    output.push(mid, *codec.encode_error(e), aux)
                    continue
                run = runs.get((idx, aux))
                if run is None:
                    runs[(idx, aux)] = run = []
                run.append((mid, flags, payload))
            for (idx, aux), run in runs.items():
                members[idx].push_many(run, aux)

    def _stop(self) -> None:
        if self._thread is None:
            return
        self._input.close()
        while self._thread.is_alive():
            self._thread.join(0.1)
        for s in self._servlets:
            s._stop()
        self._input = self._thread = None

    def _kill(self, grace: float = 0.0) -> None:
        if self._input is not None:
            self._input.abort()
        _kill_all(self._servlets, grace)
        if self._thread is not None:
            self._thread.join(1.0)
        self._input = self._thread = None


#: The names of mpservice <= 0.12 (deprecated there since 0.11.8, gone in
#: 0.13): the same classes.  Not in ``__all__``: new code uses the full names.
Sequential = SequentialServlet
Ensemble = EnsembleServlet
