"""Fork scenarios, run as ``python tests/_forking.py BACKEND SCENARIO``.

Each scenario starts a server in this process, forks while it runs, lets the
child try to use it (and exit in the way the scenario says), and checks from
the parent that its own requests get their own results and that the server
keeps serving after the child is gone.  The last line printed is a JSON
report.  A script of its own, not a test function, because a forked child of
pytest would run pytest's own teardown; and a hang stays in this process
(the test gives it a deadline).

Scenarios:
  pool     a fork-context ``multiprocessing.Pool(1)`` task calls the server
           while the parent calls it too
  executor the same with ``ProcessPoolExecutor(mp_context=fork)``
  exit     after ``os.fork()`` the child tries a call, then ``sys.exit(0)``
  leave    the child leaves the ``with Server`` block, then exits normally
  stream   the child goes on with a stream the parent had started, then
           ``sys.exit(0)``; the parent finishes its stream
  uses     the child tries every use of the server (call, a new stream,
           async_call, backlog, debug_info, entering it again) and reports
           what each raised (mpserver: each must raise at once)
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _backends  # noqa: E402

_SERVER = None  # the server a forked child inherits


def _child_call(x):
    """In a forked child: what using the parent's server gave."""
    try:
        y = _SERVER.call(x, timeout=5)
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        return ['error', type(e).__name__, str(e)]
    return ['ok', y]


def _parent_calls(server, n):
    """The parent's own requests and what they returned."""
    return [[f'parent-{i}', server.call(f'parent-{i}', timeout=30)] for i in range(n)]


def _wait_child(pid, seconds):
    """The child's exit code, or None if it is still running after ``seconds`` (it is then killed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def _child_next(it):
    """In a forked child: what going on with the parent's stream gave."""
    try:
        return ['ok', [next(it) for _ in range(500)]]
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        return ['error', type(e).__name__, str(e)]


def _child_uses():
    """In a forked child: the exception type each use of the parent's server raised ('ok' if none)."""
    import asyncio

    uses = {
        'call': lambda: _SERVER.call('x', timeout=5),
        'stream': lambda: list(_SERVER.stream(range(3), timeout=5)),
        'async_call': lambda: asyncio.run(_SERVER.async_call('x', timeout=5)),
        'backlog': lambda: _SERVER.backlog,
        'debug_info': lambda: _SERVER.debug_info(),
        'enter': lambda: _SERVER.__enter__(),
    }
    out = {}
    for name, use in uses.items():
        t0 = time.monotonic()
        try:
            use()
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            out[name] = [type(e).__name__, 'forked child' in str(e), time.monotonic() - t0]
        else:
            out[name] = ['ok', False, time.monotonic() - t0]
    return ['uses', out]


def _fork_and_report(server, leave, stream=None, probe=None):
    """os.fork(): the child tries a call (or goes on with ``stream``),
    reports on a pipe, then exits (``sys.exit(0)``, or by leaving the
    ``with`` block when ``leave``)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        if probe is not None:
            tried = probe()
        else:
            tried = _child_call('FROM-FORKED-CHILD') if stream is None else _child_next(stream)
        os.write(w, json.dumps(tried).encode())
        os.close(w)
        if not leave:
            sys.exit(0)
        return 'child'
    os.close(w)
    parent = _parent_calls(server, 20)
    code = _wait_child(pid, 60)
    with os.fdopen(r) as f:
        child = json.loads(f.read() or '["none"]')
    report = {'child': child, 'child_exit': code, 'parent': parent}
    if stream is not None:
        report['stream'] = list(stream)
    return report


def main(backend_name, scenario):
    global _SERVER
    b = _backends.get_backend(backend_name)
    warnings.simplefilter('ignore', DeprecationWarning)  # "fork() with threads" on 3.12+
    report = {}
    with b.Server(b.ProcessServlet(b.w.Echo, cpus=2)) as server:
        _SERVER = server
        server.call('warm-up')
        if scenario in ('pool', 'executor'):
            ctx = multiprocessing.get_context('fork')
            if scenario == 'pool':
                with ctx.Pool(1) as pool:
                    pending = pool.apply_async(_child_call, ('FROM-POOL-CHILD',))
                    report['parent'] = _parent_calls(server, 20)
                    report['child'] = pending.get(timeout=60)
            else:
                with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
                    pending = ex.submit(_child_call, 'FROM-POOL-CHILD')
                    report['parent'] = _parent_calls(server, 20)
                    report['child'] = pending.result(timeout=60)
            report['child_exit'] = 0
        else:
            stream = None
            if scenario == 'stream':
                stream = server.stream(range(1000))
                assert next(stream) == 0
            probe = _child_uses if scenario == 'uses' else None
            outcome = _fork_and_report(server, scenario == 'leave', stream, probe)
            if outcome == 'child':  # the forked child, leaving the block
                pass
            else:
                report.update(outcome)
        if report:
            report['after'] = [server.call(f'after-{i}', timeout=30) for i in range(5)]
    if not report:  # the child, having left the block: exit normally
        sys.exit(0)
    print(json.dumps(report))


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
