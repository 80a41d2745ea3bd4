"""The live view (Server.watch), ``python -m mpserver top`` and its channel
(the announcement files of ``_observe/announce.py``), and the progress-bar example.
mpserver only: mpservice has none of this.

Scripts that need a terminal or another process run as subprocesses with
the package under test first on PYTHONPATH; every one that starts a server
gets its own announcement directory (XDG_RUNTIME_DIR), so servers of other
test runs on the machine are never seen.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import logging
import os
import pty
import re
import select
import stat
import struct
import subprocess
import sys
import termios
import textwrap
import time

import mpserver
import pytest
from mpserver import AsyncServer, ProcessServlet, SequentialServlet, Server, ThreadServlet, Worker
from mpserver._cli.top import Monitor
from mpserver._observe import announce
from mpserver._observe.watch import Watch, render

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HOME = os.path.dirname(os.path.dirname(os.path.abspath(mpserver.__file__)))

#: A server for the subprocess tests: a process stage and a thread stage,
#: streaming until its stdin closes (or for ``argv[1]`` seconds).
SERVING = textwrap.dedent(
    """
    import os
    import sys
    import threading
    import time

    from mpserver import ProcessServlet, SequentialServlet, Server, ThreadServlet, Worker


    class Square(Worker):
        def call(self, x):
            time.sleep(0.0005)
            return x * x


    class Inc(Worker):
        def call(self, x):
            return x + 1


    if __name__ == '__main__':
        seconds = float(sys.argv[1])
        tree = SequentialServlet(ProcessServlet(Square, cpus=2), ThreadServlet(Inc))
        with Server(tree) as server:
            if len(sys.argv) > 2:
                watch = server.watch(interval=float(sys.argv[2]))
            print('ready', os.getpid(), flush=True)
            done = threading.Event()
            if seconds <= 0:  # until stdin closes
                threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
            t0 = time.monotonic()
            while not done.is_set() and (seconds <= 0 or time.monotonic() - t0 < seconds):
                assert list(server.stream(range(200))) == [x * x + 1 for x in range(200)]
        print('done', flush=True)
    """
)


class Square(Worker):
    def call(self, x):
        return x * x


class Inc(Worker):
    def call(self, x):
        return x + 1


def child_env(runtime_dir, **extra) -> dict:
    env = dict(os.environ)
    for name in ('MPSERVER_INSTALL', 'PYTHONSAFEPATH', 'MPSERVER_TOP', 'COLUMNS', 'LINES'):
        env.pop(name, None)
    env['PYTHONPATH'] = os.pathsep.join([HOME, *(p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p)])
    env['XDG_RUNTIME_DIR'] = str(runtime_dir)
    env.update(extra)
    return env


def top(runtime_dir, *args, timeout=120, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, '-m', 'mpserver', 'top', *args],
        env=child_env(runtime_dir, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def runtime_dir(tmp_path, monkeypatch):
    """A private announcement directory, for this process and its children."""
    d = tmp_path / 'run'
    d.mkdir(mode=0o700)
    monkeypatch.setenv('XDG_RUNTIME_DIR', str(d))
    monkeypatch.delenv('MPSERVER_TOP', raising=False)
    return d


@pytest.fixture
def serving(tmp_path, runtime_dir):
    """Starts SERVING in a subprocess (serving until stdin closes); yields its pid."""
    script = tmp_path / 'serving.py'
    script.write_text(SERVING)
    proc = subprocess.Popen(
        [sys.executable, str(script), '0'],
        env=child_env(runtime_dir),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith('ready'), line + proc.stderr.read()
        yield proc
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ----------------------------------------------------------------- watch


def test_watch_draws_the_tree_into_a_file():
    buf = io.StringIO()
    tree = SequentialServlet(ProcessServlet(Square, cpus=2), ThreadServlet(Inc))
    with Server(tree) as server:
        with server.watch(interval=0.05, file=buf) as watch:
            assert isinstance(watch, Watch) and watch.running
            for _ in range(5):
                assert list(server.stream(range(100))) == [x * x + 1 for x in range(100)]
            time.sleep(0.2)
        assert not watch.running
        assert buf.getvalue(), 'nothing drawn'
        watch.stop()  # again: nothing happens
    out = buf.getvalue()
    for text in (
        'servlet / worker',
        '0 SequentialServlet',
        '0.0 ProcessServlet(Square)',
        '0.1 ThreadServlet(Inc)',
        'Square-process-0',
        'Square-process-1',
        'Inc-thread-0',
        'requests/s',
        '500 completed',
    ):
        assert text in out, f'{text!r} not in\n{out}'
    assert '\x1b[' not in out, 'escape sequences written to a file'


def test_watch_ends_by_itself_when_the_server_stops():
    buf = io.StringIO()
    with Server(ThreadServlet(Inc)) as server:
        watch = server.watch(interval=0.05, file=buf)
        assert [server.call(x) for x in range(3)] == [1, 2, 3]
    watch._thread.join(10)
    assert not watch.running
    assert 'ThreadServlet(Inc)' in buf.getvalue()
    watch.stop()


def test_watch_needs_a_running_server_and_a_positive_interval():
    server = Server(ThreadServlet(Inc))
    with pytest.raises(RuntimeError, match='not started'):
        server.watch()
    with server:
        for bad in (0, -1, float('nan'), True, '1'):
            with pytest.raises(ValueError, match='interval'):
                server.watch(bad, file=io.StringIO())
    with pytest.raises(RuntimeError, match='stopped'):
        server.watch()


def test_async_server_watch():
    buf = io.StringIO()

    async def main():
        async with AsyncServer(ThreadServlet(Inc)) as server:
            with server.watch(interval=0.05, file=buf):
                assert [await server.call(x) for x in range(10)] == list(range(1, 11))
                await asyncio.sleep(0.1)

    asyncio.run(main())
    assert 'Inc-thread-0' in buf.getvalue()


def test_render_without_and_with_a_previous_snapshot():
    from rich.console import Console

    with Server(SequentialServlet(ThreadServlet(Square), ThreadServlet(Inc))) as server:
        first = server.stats()
        list(server.stream(range(50)))
        time.sleep(0.01)
        second = server.stats()
    frames = []
    for before in (None, first):
        console = Console(file=io.StringIO(), width=120)
        console.print(render(second, before, 'a title'))
        out = console.file.getvalue()
        assert 'a title' in out and '0.1 ThreadServlet(Inc)' in out and 'Square-thread-0' in out
        frames.append(out)
    # Rates need two snapshots: the first frame has none, the second has them.
    assert '– requests/s' in frames[0] and '– requests/s' not in frames[1]
    assert '50 completed' in frames[0] and '50 completed' in frames[1]


def test_watch_in_a_pseudo_terminal(tmp_path, runtime_dir):
    """A real terminal: the table is redrawn in place, with the labels, and
    the program ends cleanly when the server stops under the view."""
    script = tmp_path / 'watched.py'
    script.write_text(SERVING)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 40, 140, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, str(script), '2', '0.2'],
        env=child_env(runtime_dir, TERM='xterm-256color'),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not data:
                break
            chunks.append(data)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    out = b''.join(chunks).decode(errors='replace')
    assert rc == 0, out
    assert 'Traceback' not in out, out
    assert 'ProcessServlet(Square)' in out and 'Square-process-1' in out and 'ThreadServlet(Inc)' in out, out
    # The view ended when the server stopped, before the program went on:
    # the cursor is shown again and the program's next line starts a line.
    assert '\x1b[?25h' in out, 'the cursor was left hidden'
    assert '\ndone' in out.replace('\r', '').replace('\x1b[?25h', ''), out[-500:]
    assert out.count('servlet / worker') >= 3, 'the table was not redrawn'
    assert '\x1b[' in out, 'no cursor movement: not drawn as a live view'


# ----------------------------------------------------------------- top


def test_top_once_shows_a_server_of_another_process(serving, runtime_dir):
    pid = serving.pid
    for args in ([str(pid)], []):  # by pid, and the only server there is
        proc = top(runtime_dir, *args, '--once', '--interval', '0.3')
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = proc.stdout
        for text in (
            f'pid {pid}',
            '0 SequentialServlet',
            '0.0 ProcessServlet(Square)',
            '0.1 ThreadServlet(Inc)',
            'Square-process-0',
            'Square-process-1',
            'Inc-thread-0',
        ):
            assert text in out, f'{text!r} not in\n{out}'
        assert 'Traceback' not in proc.stderr


def test_top_follows_a_server_until_it_stops(serving, runtime_dir):
    live = subprocess.Popen(
        [sys.executable, '-m', 'mpserver', 'top', str(serving.pid), '--interval', '0.2'],
        env=child_env(runtime_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)
        assert live.poll() is None, live.communicate()
        serving.stdin.close()  # the server stops
        assert serving.wait(60) == 0
        out, err = live.communicate(timeout=60)
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()
    assert live.returncode == 0, out + err
    assert 'ProcessServlet(Square)' in out and 'the server stopped' in out, out + err


def test_top_without_a_server_says_so(tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir(mode=0o700)
    for args in ([], ['12345678']):
        proc = top(empty, *args, '--once')
        assert proc.returncode == 1
        assert 'no running mpserver server found' in proc.stderr, proc.stderr
        assert 'Traceback' not in proc.stderr


def test_top_lists_the_processes_when_there_are_several(tmp_path, runtime_dir):
    script = tmp_path / 'serving.py'
    script.write_text(SERVING)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), '0'],
            env=child_env(runtime_dir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout.readline().startswith('ready')
        proc = top(runtime_dir, '--once')
        assert proc.returncode == 0, proc.stderr
        for p in procs:
            assert str(p.pid) in proc.stdout
        assert 'python -m mpserver top PID' in proc.stdout
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(60)


def test_top_help_and_usage_errors(runtime_dir):
    proc = top(runtime_dir, '--help')
    assert proc.returncode == 0 and '--once' in proc.stdout
    proc = top(runtime_dir, 'not-a-pid')
    assert proc.returncode == 2 and 'invalid int value' in proc.stderr
    proc = top(runtime_dir, '--interval', '0')
    assert proc.returncode == 2 and 'interval' in proc.stderr


# ----------------------------------------------------------------- the channel


def test_a_running_server_announces_itself(runtime_dir):
    folder = runtime_dir / 'mpserver'
    with Server(SequentialServlet(ThreadServlet(Square), ThreadServlet(Inc))) as server:
        (path,) = folder.iterdir()
        assert re.fullmatch(rf'{os.getpid()}-\d+\.json', path.name), path.name
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        d = json.loads(path.read_text())
        assert d['pid'] == os.getpid() and d['capacity'] == server.capacity
        assert d['meter_fd'] == server._running().meter.fd
        assert d['layout']['children'][1]['label'] == 'ThreadServlet(Inc)'
        assert d['mpserver'] == mpserver.__version__
        (entry,) = announce.servers(os.getpid())
        # Attached from /proc as `top` does, the numbers are the server's own.
        list(server.stream(range(30)))
        monitor = Monitor(entry)
        mine, theirs = server.stats(), monitor.stats()
        assert theirs.completed == mine.completed == 30
        assert [s.items_in for s in theirs.walk()] == [s.items_in for s in mine.walk()] == [30, 30, 30]
    assert list(folder.iterdir()) == []  # withdrawn at exit


def test_mpserver_top_0_turns_the_announcement_off(runtime_dir, monkeypatch):
    monkeypatch.setenv('MPSERVER_TOP', '0')
    with Server(ThreadServlet(Inc)) as server:
        assert server.call(1) == 2
        assert not (runtime_dir / 'mpserver').exists() or list((runtime_dir / 'mpserver').iterdir()) == []


def test_a_failed_announcement_never_stops_a_server(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv('MPSERVER_TOP', raising=False)
    blocker = tmp_path / 'file'
    blocker.write_text('')
    monkeypatch.setenv('XDG_RUNTIME_DIR', str(blocker))  # mkdir under a file fails
    with caplog.at_level(logging.DEBUG, logger='mpserver'):
        with Server(ThreadServlet(Inc)) as server:
            assert server.call(1) == 2
    assert any('not announced' in r.getMessage() for r in caplog.records)

    # A directory others can read or write is not used (and said so).
    shared = tmp_path / 'shared'
    (shared / 'mpserver').mkdir(parents=True, mode=0o755)
    os.chmod(shared / 'mpserver', 0o755)
    monkeypatch.setenv('XDG_RUNTIME_DIR', str(shared))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='mpserver'):
        with Server(ThreadServlet(Inc)) as server:
            assert server.call(1) == 2
            assert list((shared / 'mpserver').iterdir()) == []
    assert any('not a private directory' in r.getMessage() for r in caplog.records)
    assert announce.servers() == []


def test_files_of_dead_processes_are_removed(runtime_dir):
    folder = runtime_dir / 'mpserver'
    folder.mkdir(mode=0o700)
    gone = subprocess.Popen([sys.executable, '-c', 'pass'])
    gone.wait()
    stale = folder / f'{gone.pid}-0.json'
    entry = {'format': announce.FORMAT, 'pid': gone.pid, 'proc_start': 1, 'started': time.time(), 'capacity': 1}
    entry.update({'meter_fd': 3, 'layout': {}, 'python': '', 'mpserver': ''})
    stale.write_text(json.dumps(entry))
    # A live pid whose start time differs: a reused pid, as stale.
    reused = folder / f'{os.getpid()}-99.json'
    reused.write_text(json.dumps(dict(entry, pid=os.getpid(), proc_start=-1)))
    assert announce.servers() == []
    assert list(folder.iterdir()) == []
    # A server that starts sweeps away files of processes that are gone.
    stale.write_text(json.dumps(entry))
    with Server(ThreadServlet(Inc)):
        assert [p.name.split('-')[0] for p in folder.iterdir()] == [str(os.getpid())]


def test_a_server_still_running_at_interpreter_exit_withdraws(tmp_path, runtime_dir):
    script = tmp_path / 'left_running.py'
    script.write_text(
        textwrap.dedent(
            """
            from mpserver import ProcessServlet, Server, Worker


            class Inc(Worker):
                def call(self, x):
                    return x + 1


            if __name__ == '__main__':
                server = Server(ProcessServlet(Inc))
                server.__enter__()  # never left
                print(server.call(1), flush=True)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], env=child_env(runtime_dir), capture_output=True, text=True, timeout=120
    )
    assert (proc.returncode, proc.stdout) == (0, '2\n'), proc.stderr
    assert list((runtime_dir / 'mpserver').iterdir()) == []


# ----------------------------------------------------------------- progress


def test_the_progress_example_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'examples', 'progress.py')],
        cwd=tmp_path,
        env=child_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == 'True\n'
    assert '500/500' in proc.stderr and 'squares' in proc.stderr, proc.stderr
