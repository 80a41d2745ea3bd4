"""Serving over HTTP: mpserver's native front against uvicorn fronts and mosec, in one run.

    python benchmarks/serving.py                         # 3 rounds of 5 s measurements, print the tables
    python benchmarks/serving.py --duration 3 --rounds 1 # smoke run (about 2 minutes)
    python benchmarks/serving.py --write                 # the same, and write "Serving over HTTP" in docs/benchmarks.md
    python benchmarks/serving.py --json run.json         # also save the per-round values
    python benchmarks/serving.py --from-json run.json --write   # publish a saved run, measuring nothing

Run it from a source tree with ``PYTHONPATH=$PWD/python`` (as ``bench.py``)
or with mpserver installed; the load generator is ``wrk``
(``apt-get install -y wrk``), and the peers need ``uvicorn``, ``starlette``
and ``mosec`` (the ``bench`` extra).

Peers
-----

* ``native``: ``python -m mpserver serve benchmarks._http_models:MODEL --host
  127.0.0.1 --port P --capacity 1024``, mpserver's own HTTP front (``POST /``);
* ``mpserver+uvicorn``: uvicorn + Starlette holding an ``mpserver.AsyncServer``;
* ``mpservice+uvicorn``: the same app with ``mpservice.mpserver.AsyncServer`` 0.16.8;
* ``mosec``: a mosec ``Server`` with one worker stage (its Rust front feeds
  Python worker processes; ``POST /inference``).

The apps are in ``_http_apps.py``, the models in ``_http_models.py``; how
a peer is started, stopped and measured in ``_http_peers.py``, the report in
``_http_report.py``, and what every benchmark script shares (the ~1 ms
item's calibration, load accounting, run files, cells) in ``harness.py``.

Method
------

Each round starts every peer for every model in a fresh process tree
(its own session, so its process group can be signalled as a whole); the
peer order is rotated by one from round to round.  A started server is
polled with the real request (1 s timeout per try, up to 60 s) until it
answers 200, warmed up with 1 s of wrk at 32 connections, then measured at
1, 32 and 256 connections, each for ``--duration`` seconds:
``wrk -t1 -cC`` for 1 and 32 connections and ``-t2 -c256`` for 256 (one
wrk thread cannot keep 256 connections busy on its own), with
``http_wrk.lua``, whose ``done()`` hook prints the request count, errors
and latency percentiles as JSON.  Around each wrk run the script reads
utime + stime of the server's front process from ``/proc/PID/stat`` (the
main process; for mosec its Rust ``mosec`` process) and of the whole server
tree, and the machine's busy time from ``/proc/stat``; the front's CPU
share is its CPU seconds over the wall time, and "other processes" is the
machine's busy time minus this script, the server tree and wrk
(``harness.OtherLoad``).  The server is then
stopped: SIGTERM to its main process, SIGKILL to its process group and to
every process of its tree still alive after 10 s.  No server outlives the
script: the stop runs in a ``finally``, and SIGTERM to the script raises
``SystemExit`` so that it runs then too.

Cells are medians over rounds with the min-max range.  Ratios compare
medians of peers measured in the same run.  For the cpu model, the
response is the seconds the worker spent in its loop; the capacity
fraction is requests/s / (workers / mean service time), i.e. the share of
the workers' time spent computing.

The native front does not exist yet in every tree: if ``python -m mpserver
serve`` exits before answering, the column is reported as missing, with the
last line of its stderr, and the rest of the run goes on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys

import harness

sys.path.insert(0, harness.ROOT)  # the servers import benchmarks._http_models, and so do the modules below
import _http_report as http_report  # noqa: E402
from _http_peers import (  # noqa: E402
    BY_KEY,
    CONNECTIONS,
    PEERS,
    WARMUP_CONNECTIONS,
    WARMUP_SECONDS,
    NotServing,
    Peer,
    Running,
    measure,
    server_env,
    wrk,
)
from _http_report import DEFAULTS, REGION, Run  # noqa: E402
from harness import DOCS_PAGE, IMG_DIR, ROOT, log  # noqa: E402

from benchmarks import _http_models as models  # noqa: E402

INSTALL_WRK = 'apt-get install -y wrk'


def run_peer(run: Run, peer: Peer, model: str, env: dict[str, str], args: argparse.Namespace, label: str) -> None:
    if peer.key in run.missing:
        return
    server = Running(peer, model, env, args.logdir)
    try:
        try:
            server.wait_ready()
        except NotServing as e:
            run.missing[peer.key] = str(e)
            log(f'{label}  {peer.label:<28} not serving: {e}')
            return
        wrk(server.url, WARMUP_CONNECTIONS, WARMUP_SECONDS, service_time=False)
        for connections in CONNECTIONS:
            values = measure(server, connections, args.duration)
            for metric, value in values.items():
                run.values.setdefault((model, connections, peer.key, metric), []).append(value)
            extra = f'  capacity {values["capacity"]:.3f}' if 'capacity' in values else ''
            errors = f'  ERRORS {values["errors"]:.0f}' if values['errors'] else ''
            log(
                f'{label}  {model:<7} {peer.label:<28} c={connections:<3} {values["rps"]:>9,.0f} req/s  '
                f'p50 {values["p50_ms"]:7.2f} ms  p99 {values["p99_ms"]:7.2f} ms  front {values["front_cpu"]:.2f} '
                f'cores{extra}{errors}  [other processes: {values["other_cores"]:.2f} cores]'
            )
    finally:
        server.stop()


def run_all(args: argparse.Namespace, loops: int, after_round=None) -> Run:
    run = Run()
    env = server_env(loops)
    peers = [BY_KEY[k] for k in args.peers]
    for r in range(args.rounds):
        order = peers[r % len(peers) :] + peers[: r % len(peers)]
        model_order = models.MODELS if r % 2 == 0 else models.MODELS[::-1]
        for model in model_order:
            for peer in order:
                run_peer(run, peer, model, env, args, f'round {r + 1}/{args.rounds}')
        if after_round is not None:
            after_round(run, r + 1)
    return run


def _mpserver_origin(env: dict[str, str]) -> str:
    code = 'import mpserver, os; print(os.path.dirname(mpserver.__file__))'
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    where = proc.stdout.strip() or 'nowhere (import failed)'
    return os.path.relpath(where, ROOT) if where.startswith(ROOT) else where


def _wrk_version() -> str:
    proc = subprocess.run(['wrk', '--version'], capture_output=True, text=True, timeout=10)
    words = (proc.stdout + proc.stderr).split()
    return ' '.join(words[:2]) if words else 'wrk'


def main() -> int:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=Formatter)
    harness.add_run_options(
        p, rounds=DEFAULTS['rounds'], write='write the "Serving over HTTP" section of docs/benchmarks.md'
    )
    p.add_argument('--duration', type=float, default=DEFAULTS['duration'], help='seconds of wrk per measurement')
    p.add_argument(
        '--peer',
        dest='peers',
        action='append',
        choices=list(BY_KEY),
        help='only this peer (repeatable; not with --write)',
    )
    p.add_argument('--logdir', help="where the servers' output goes (default: a fresh temporary directory)")
    args = harness.parse_run_options(p)
    if args.write and args.peers:
        p.error('--write publishes the full run: it refuses --peer')
    args.peers = args.peers or [peer.key for peer in PEERS]

    if args.from_json:
        run, meta = http_report.load_run(harness.load_json(args.from_json))
    else:
        if shutil.which('wrk') is None:
            print(f'benchmarks/serving.py needs wrk, the HTTP load generator: {INSTALL_WRK}', file=sys.stderr)
            return 2
        if args.logdir is None:
            import tempfile

            args.logdir = tempfile.mkdtemp(prefix='mpserver-http-bench-')
        os.makedirs(args.logdir, exist_ok=True)
        # SIGTERM ends the run through the finally blocks that stop the servers.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        loops = harness.burn_loops()
        env = server_env(loops)
        meta = {
            'date': harness.now(),
            'cpu': harness.cpu_model(),
            'cores': os.cpu_count(),
            'python': harness.python_version(),
            'versions': ', '.join(
                f'{d} {harness.dist_version(d)}'
                for d in ('mpservice', 'mosec', 'uvicorn', 'starlette', 'uvloop', 'httptools')
            ),
            'mpserver': _mpserver_origin(env),
            'wrk': _wrk_version(),
            'loops': loops,
            'loop_ms': harness.seconds_per_burn(loops) * 1e3,
            'cpu_workers': models.workers('cpu'),
            'peers': args.peers,
            **{name: getattr(args, name) for name in ('rounds', 'duration')},
        }
        log(f'cpu model: {loops:,} loops (~1 ms); servers log to {args.logdir}')

        def save(run: Run, rounds_done: int) -> None:
            harness.save_json(args.json, http_report.dump_run(run, {**meta, 'rounds': rounds_done}))

        run = run_all(args, loops, save if args.json else None)

    if args.write and run.missing:
        # A published table has every column: a missing peer is a run to repeat, not a result.
        print(http_report.report(run, meta))
        log(f'not writing {DOCS_PAGE}: peers missing from this run: {", ".join(run.missing)}')
        return 1
    images = http_report.figures(run, meta['peers'], IMG_DIR) if args.write and not args.no_plots else []
    text = http_report.report(run, meta, images)
    print(text)
    if args.write:
        http_report.write_page(text)
        log(f'wrote the {REGION} region of {DOCS_PAGE}')
    # The native front may not exist yet; any other peer missing is a failure of the harness or its setup.
    return 1 if set(run.missing) - {'native'} else 0


if __name__ == '__main__':
    sys.exit(main())
