"""The loops that feed a worker: the only Python on a worker's hot path.

A loop takes work from the worker's input ring through the C++ batcher (the
GIL is released while it waits), runs ``preprocess`` and ``call`` (or the
user's ``stream``), and pushes each item's result or error to the output
ring.  Upstream errors pass through unchanged (made fit for the consumer by
``_wire.codec.pass_error``).  The same loops run in worker processes and on
ThreadServlet threads; only the codec differs.

A *final* worker makes the server's results (its output is the server's output
ring).  For the requests that came through the native HTTP front (their
token is at least ``_wire.http_response.HTTP_MARK``) it encodes results and errors as
HTTP responses instead (``_wire.http_response``); every other worker gets a mark no
token reaches, so the check costs one integer comparison per item.
"""

from __future__ import annotations

import collections
import pickle
from collections.abc import Callable, Iterator
from typing import Any

from mpserver._core import note_answered
from mpserver._wire import http_response as http
from mpserver._wire.chunks import FLAG_CHUNK, encode_run
from mpserver._wire.codec import FLAG_ERROR, Codec, decode, pass_error
from mpserver._worker.api import Worker
from mpserver._worker.chunk_runner import ChunkRunner

__all__ = ['run']


_loads = pickle.loads
_dumps = pickle.dumps


def run(worker: Worker, inp: Any, out: Any, codec: Codec, final: bool = False) -> None:
    """Run ``worker`` on items from ring ``inp`` until it is closed and drained.

    ``codec`` encodes results for ``out`` (pickles across processes, object
    references inside the main process).  ``final``: ``out`` is the
    server's output ring (see the module docstring).

    A worker takes from its ring only what it starts at once: one item, or
    one batch.  What it has taken is claimed (cpp/claims.hpp), so if the
    worker dies, exactly that fails with WorkerCrashedError; everything else
    is still in the ring for its siblings or its replacement.
    """
    mark = http.HTTP_MARK if final else http.NO_MARK
    customised = type(worker).stream is not Worker.stream or worker.num_stream_threads > 0
    if customised:
        _serve_via_stream(worker, inp, out, codec, mark)
    elif worker.batch_size > 1:
        _serve_batches(worker, inp, out, codec, mark)
    else:
        _serve_items(worker, inp, out, codec, mark)


def _result(codec: Codec, mid: int, mark: int, y: Any) -> tuple[int, Any]:
    return codec.encode_result(y) if mid < mark else http.http_result(y)


def _error(codec: Codec, mid: int, mark: int, e: BaseException, tb: str | None = None) -> tuple[int, Any]:
    return codec.encode_error(e, tb) if mid < mark else http.http_error(e)


def _passed(flags: int, payload: Any, codec: Codec, mid: int, mark: int) -> tuple[int, Any]:
    return pass_error(flags, payload, codec) if mid < mark else http.http_pass(flags, payload)


def _serve_items(worker: Worker, inp: Any, out: Any, codec: Codec, mark: int) -> None:
    # The hot loop for one-at-a-time workers: it inlines what _admit() does
    # for batches, to keep per-item Python work to the minimum.
    preprocess = getattr(worker, 'preprocess', None)
    call = worker.call
    wrap = worker.batch_size == 1  # batches of one: call takes [x]
    gather = inp.gather
    push = out.push
    encode_result = codec.encode_result
    encode_error = codec.encode_error
    chunk_out = mark != http.NO_MARK  # a final worker answers a chunk with one chunk; others item by item
    runner: ChunkRunner | None = None
    while True:
        items = gather(1, 0.0, None)
        if items is None:
            return
        ((mid, flags, aux, payload),) = items
        if flags & FLAG_CHUNK:  # several items in one message (``_wire.chunks``)
            if runner is None:
                runner = ChunkRunner(inp)
            _serve_chunk(runner, mid, aux, payload, preprocess, call, wrap, codec, out, chunk_out)
            continue
        if flags & FLAG_ERROR:  # an upstream error: pass it through
            push(mid, *_passed(flags, payload, codec, mid, mark), aux)
            continue
        try:
            x = decode(flags, payload)
            if preprocess is not None:
                x = preprocess(x)
            y = call([x])[0] if wrap else call(x)
        except Exception as e:  # noqa: BLE001 - the user's exception is this item's result
            f, p = encode_error(e) if mid < mark else http.http_error(e)
        else:
            f, p = encode_result(y) if mid < mark else http.http_result(y)
        push(mid, f, p, aux)


def _serve_chunk(
    runner: ChunkRunner,
    ids: tuple[int, ...],
    aux: int,
    payload: bytes,
    preprocess: Callable[[Any], Any] | None,
    call: Callable[[Any], Any],
    wrap: bool,
    codec: Codec,
    out: Any,
    chunk_out: bool,
) -> None:
    """Runs the items of one chunk in order and answers them (one chunk of
    results when ``chunk_out``, else item by item).  Items that a stuck item
    kept waiting are handed back to the ring by ``runner`` and not run here."""
    encode_error = codec.encode_error
    try:
        pickled, values = _loads(payload)  # see _wire.chunks: (0, values) or (1, pickles)
    except Exception as e:  # noqa: BLE001 - an undecodable chunk: every item's error
        err = encode_error(e)
        out.push_many([(mid, *err) for mid in ids], aux)
        return

    def resend(j: int) -> tuple[int, bytes]:
        return 0, values[j] if pickled else _dumps(values[j], 5)

    n = len(ids)
    results: list[Any] = [None] * n
    status = bytearray(n)

    def answer(lo: int, hi: int) -> None:
        # One chunk of results for the collector (a final worker), else item by item.
        blob = encode_run(results[lo:hi]) if chunk_out else None
        if blob is not None:
            out.push_chunk(ids[lo:hi], bytes(status[lo:hi]), blob, aux)
            return
        encode_result = codec.encode_result
        out.push_many(
            [
                (ids[j], FLAG_ERROR, results[j]) if status[j] else (ids[j], *encode_result(results[j]))
                for j in range(lo, hi)
            ],
            aux,
        )

    popleft = runner.start_chunk(ids, resend, answer, aux).popleft
    try:
        while True:
            try:
                i = popleft()  # the next item not handed back (ChunkRunner)
            except IndexError:
                break
            try:
                x = _loads(values[i]) if pickled else values[i]
                if preprocess is not None:
                    x = preprocess(x)
                results[i] = call([x])[0] if wrap else call(x)
            except Exception as e:  # noqa: BLE001 - the user's exception is this item's result
                results[i] = encode_error(e)[1]
                status[i] = 1
    finally:
        flushed, ran = runner.end_chunk()
    if ran > flushed:
        answer(flushed, ran)
    if flushed:  # answered from the watcher's thread: settle their claims and meters here
        note_answered(ids[:flushed], bytes(status[:flushed]))


def _unchunked(
    items: list[tuple[Any, int, int, Any]], codec: Codec, reject: Callable[[int, int, Any, int], object]
) -> Iterator[tuple[int, int, int, Any]]:
    """The gathered messages with every chunk opened into its items.

    Chunks are sent only to workers of the plain item loop (``_wire.chunks``), so
    this is the safety net of the batching and streaming loops: a worker
    that set its own ``batch_size`` still sees every item, one by one."""
    for mid, flags, aux, payload in items:
        if not flags & FLAG_CHUNK:
            yield mid, flags, aux, payload
            continue
        try:
            pickled, values = _loads(payload)
        except Exception as e:  # noqa: BLE001 - an undecodable chunk: every item's error
            for token in mid:
                reject(token, *codec.encode_error(e), aux)
            continue
        for token, v in zip(mid, values, strict=True):
            yield token, 0, aux, v if pickled else _dumps(v, 5)


def _admit(
    items: list[tuple[int, int, int, Any]],
    preprocess: Callable[[Any], Any] | None,
    codec: Codec,
    reject: Callable[[int, int, Any, int], object],
    mark: int,
) -> tuple[list[int], list[Any]]:
    """Decode (and preprocess) a gathered batch of messages.

    Returns ``(ids, xs)`` of the items that go on to ``call``; every other
    item is handed to ``reject(id, flags, payload, aux)`` at once: upstream
    errors as they came (see ``_wire.codec.pass_error``), decode and ``preprocess``
    failures as that item's error.
    """
    ids: list[int] = []
    xs: list[Any] = []
    for mid, flags, aux, payload in _unchunked(items, codec, reject):
        if flags & FLAG_ERROR:
            reject(mid, *_passed(flags, payload, codec, mid, mark), aux)
            continue
        try:
            x = decode(flags, payload)
            if preprocess is not None:
                x = preprocess(x)
        except Exception as e:  # noqa: BLE001 - a decode or preprocess failure is this item's result
            reject(mid, *_error(codec, mid, mark, e), aux)
            continue
        ids.append(mid)
        xs.append(x)
    return ids, xs


def _batch_outcome(
    worker: Worker, ids: list[int], xs: list[Any], ys: Any, codec: Codec, mark: int
) -> list[tuple[int, int, Any]]:
    """The (id, flags, payload) messages for a batch's results, or its error.

    ``ys`` is what ``call`` returned for ``xs``, or the exception it raised.
    """
    tb = None
    if not isinstance(ys, Exception) and len(ys) != len(xs):
        msg = f'{type(worker).__name__}.call returned {len(ys)} results for a batch of {len(xs)} items'
        ys, tb = ValueError(msg), f'ValueError: {msg}\n'
    if isinstance(ys, Exception):
        err = codec.encode_error(ys, tb)
        return [(mid, *(err if mid < mark else http.http_error(ys))) for mid in ids]
    encode_result = codec.encode_result
    return [
        (mid, *(encode_result(y) if mid < mark else http.http_result(y)))
        for mid, y in zip(ids, ys, strict=False)  # len(ys) was checked above
    ]


def _serve_batches(worker: Worker, inp: Any, out: Any, codec: Codec, mark: int) -> None:
    preprocess = getattr(worker, 'preprocess', None)
    call = worker.call
    size, wait = worker.batch_size, float(worker.batch_wait_time)
    gather = inp.gather
    push_many = out.push_many
    while True:
        items = gather(size, wait, None)
        if items is None:
            return
        rejected: list[tuple[int, int, Any]] = []
        # The lambda runs only inside this _admit call, so it sees this round's list.
        ids, xs = _admit(items, preprocess, codec, lambda *m: rejected.append(m[:3]), mark)  # noqa: B023
        results = rejected
        for at in range(0, len(xs), size):  # more than one batch only from a chunk (_unchunked)
            bxs = xs[at : at + size]
            try:
                ys = call(bxs)
            except Exception as e:  # noqa: BLE001 - the user's exception is every item's result
                ys = e
            results += _batch_outcome(worker, ids[at : at + size], bxs, ys, codec, mark)
        push_many(results, 0)


def _serve_via_stream(worker: Worker, inp: Any, out: Any, codec: Codec, mark: int) -> None:
    """The general loop, for workers that customise ``stream`` or use stream threads.

    Items go into ``worker.stream`` as a generator; results come out in the
    same order, and are paired with their ids through a FIFO.
    """
    preprocess = getattr(worker, 'preprocess', None)
    size, wait = worker.batch_size, float(worker.batch_wait_time)
    batched = size > 1
    wrap = size == 1
    pending: collections.deque[Any] = collections.deque()  # ids, or (ids, xs) per batch
    push = out.push

    def inputs() -> Iterator[Any]:
        while True:
            items = inp.gather(size if batched else 1, wait if batched else 0.0, None)
            if items is None:
                return
            ids, xs = _admit(items, preprocess, codec, push, mark)
            if batched:
                for at in range(0, len(xs), size):  # more than one batch only from a chunk (_unchunked)
                    pending.append((ids[at : at + size], xs[at : at + size]))
                    yield xs[at : at + size]
            else:
                for mid, x in zip(ids, xs, strict=True):
                    pending.append(mid)
                    yield [x] if wrap else x

    for y in worker.stream(inputs()):
        if batched:
            ids, xs = pending.popleft()
            out.push_many(_batch_outcome(worker, ids, xs, y, codec, mark), 0)
        else:
            mid = pending.popleft()
            if isinstance(y, Exception):
                push(mid, *_error(codec, mid, mark, y), 0)
            else:
                push(mid, *_result(codec, mid, mark, y[0] if wrap else y), 0)
