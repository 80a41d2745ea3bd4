"""Hostile clients against the native HTTP front (cpp/http_front.hpp).

mpserver only (mpservice has no native front).  One server for the whole
module, with small limits so every limit is cheap to cross: reads time out
after READ_TIMEOUT, idle keep-alive connections after IDLE_TIMEOUT, bodies
over MAX_BODY are 413, headers over MAX_HEADER 431.  Clients are raw
sockets (what a broken or malicious client sends is not what an HTTP
library would let us send); after every case a normal request must still be
answered correctly (by httpx, an independent client).  Bugs of the front
found here were fixed in the front; their tests stay as regression tests.

Timing: only upper bounds, each at least 3x what the front promises (two
shared cores); the whole module takes about 15 s (each test is bounded by
the timeout mark below).
"""

from __future__ import annotations

import itertools
import json
import logging
import resource
import selectors
import socket
import threading
import time

import pytest

httpx = pytest.importorskip('httpx')

import _http_workers  # noqa: E402
from mpserver import HttpService, Server  # noqa: E402

pytestmark = pytest.mark.timeout(40)

READ_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0
MAX_BODY = 64 << 10
MAX_HEADER = 4 << 10
# Upper bounds for "closed by the front": 3x its own timeout, plus slack for a loaded machine.
READ_BOUND = 3 * READ_TIMEOUT + 2.0
IDLE_BOUND = 3 * IDLE_TIMEOUT + 2.0

_serial = itertools.count()


@pytest.fixture(scope='module')
def front():
    server = Server(_http_workers.echo_servlet())
    svc = server.start_http(
        port=0,
        timeout=20,
        read_timeout=READ_TIMEOUT,
        idle_timeout=IDLE_TIMEOUT,
        max_body=MAX_BODY,
        max_header=MAX_HEADER,
        threads=2,
        access_log=True,
    )
    try:
        assert httpx.get(svc.url + '/readyz', timeout=10).status_code == 200
        yield svc
    finally:
        svc.stop(5)


# ------------------------------------------------------------------ helpers


def assert_serves(svc: HttpService) -> None:
    """A normal request gets its own answer."""
    body = b'still serving %d' % next(_serial)
    r = httpx.post(svc.url + '/', content=body, timeout=10)
    assert (r.status_code, r.headers['content-type'], r.content) == (200, 'application/octet-stream', body)


def connect(svc: HttpService, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(('127.0.0.1', svc.port), timeout=timeout)


def read_all(sock: socket.socket, bound: float = 10.0) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or `bound` seconds pass (False)."""
    out = b''
    deadline = time.monotonic() + bound
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return out, True
        except TimeoutError:
            break
        if not chunk:
            return out, True
        out += chunk
    return out, False


def exchange(svc: HttpService, data: bytes, bound: float = 10.0, half_close: bool = False) -> tuple[bytes, bool]:
    with connect(svc) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        return read_all(s, bound)


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The responses in `data`: (status, lower-case headers, body)."""
    out = []
    while data:
        head, sep, data = data.partition(b'\r\n\r\n')
        assert sep, f'an incomplete response head: {head!r}'
        status_line, *lines = head.decode('latin-1').split('\r\n')
        version, status, _ = status_line.split(' ', 2)
        assert version in ('HTTP/1.1', 'HTTP/1.0'), status_line
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(':', 1) for line in lines)}
        n = int(headers.get('content-length', '0'))
        assert len(data) >= n, f'a truncated body: {headers}, {data!r}'
        out.append((int(status), headers, data[:n]))
        data = data[n:]
    return out


def wait_counts(svc: HttpService, ok, bound: float = 10.0) -> dict[str, int]:
    """The front's counts once ok(counts) holds (they are updated as
    connections end), or the last ones after `bound` seconds."""
    deadline = time.monotonic() + bound
    while not ok(c := svc.counts()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return c


def post(body: bytes, path: bytes = b'/', extra: bytes = b'') -> bytes:
    return b'POST %s HTTP/1.1\r\nHost: t\r\n%sContent-Length: %d\r\n\r\n%s' % (path, extra, len(body), body)


def is_error(resp: tuple[int, dict[str, str], bytes], status: int, error: str) -> bool:
    code, headers, body = resp
    return (
        code == status
        and headers['content-type'] == 'application/json'
        and json.loads(body)['error'] == error
        and headers.get('connection', '').lower() == 'close'
    )


# ------------------------------------------------------------------ truncated, oversized, malformed


@pytest.mark.parametrize(
    'sent',
    [
        b'POS',
        b'POST / HTT',
        b'POST / HTTP/1.1\r\nHost: t\r\nContent-Le',
        b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n',
        b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhel',
    ],
    ids=['method', 'request-line', 'header', 'no-blank-line', 'body'],
)
def test_a_truncated_request_then_close_is_closed_without_an_answer(front, sent):
    before = front.counts()
    data, closed = exchange(front, sent, half_close=True)
    assert (data, closed) == (b'', True)
    # And a client that closes outright (no half-close, nothing read).
    with connect(front) as s:
        s.sendall(sent)
    c = wait_counts(front, lambda c: c['accepted'] >= before['accepted'] + 2 and c['connections'] == 0)
    assert c['requests'] == before['requests'] and c['responses'] == before['responses'], (before, c)
    assert_serves(front)


@pytest.mark.parametrize(
    'extra',
    [b'X-Big: ' + b'a' * (MAX_HEADER + 100) + b'\r\n', b'X-Small: a\r\n' * (3 * MAX_HEADER // 12)],
    ids=['one-big-header', 'many-headers'],
)
def test_headers_over_max_header_are_431_and_the_connection_closes(front, extra):
    data, closed = exchange(front, post(b'x', extra=extra))
    assert closed
    [resp] = responses(data)
    assert is_error(resp, 431, 'HeaderTooLarge'), resp
    # Just under the limit is fine.
    r = httpx.post(front.url + '/', content=b'ok', headers={'x-pad': 'p' * (MAX_HEADER - 300)}, timeout=10)
    assert (r.status_code, r.content) == (200, b'ok')
    assert_serves(front)


def test_many_small_headers_just_over_max_header_are_431(front):
    data, closed = exchange(
        front, post(b'x', extra=b'Connection: close\r\n' + b'X-Small: a\r\n' * (MAX_HEADER * 6 // 5 // 12))
    )
    assert is_error(responses(data)[0], 431, 'HeaderTooLarge'), data[:200]
    assert_serves(front)


def test_a_body_over_max_body_is_413_before_the_client_sends_it(front):
    with connect(front) as s:
        # Only the head: the front answers from the Content-Length alone.
        s.sendall(b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n' % (MAX_BODY + 1))
        data, closed = read_all(s, bound=10)
    assert closed
    [resp] = responses(data)
    assert is_error(resp, 413, 'PayloadTooLarge'), resp
    # Sent whole anyway: still 413 (the front does not wait for the body).
    data, closed = exchange(front, post(b'b' * (4 * MAX_BODY)))
    assert closed and is_error(responses(data)[0], 413, 'PayloadTooLarge'), data[:200]
    # Chunked, no length announced: 413 once the chunks pass the limit.
    chunk = b'%x\r\n%s\r\n' % (8192, b'c' * 8192)
    chunked = b'POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n' + chunk * 12 + b'0\r\n\r\n'
    data, closed = exchange(front, chunked)
    assert closed and is_error(responses(data)[0], 413, 'PayloadTooLarge'), data[:200]
    # Exactly max_body passes.
    r = httpx.post(front.url + '/', content=b'm' * MAX_BODY, timeout=10)
    assert (r.status_code, len(r.content)) == (200, MAX_BODY)
    assert_serves(front)


def test_a_content_length_claiming_more_than_sent_is_closed_by_the_read_timeout(front):
    with connect(front) as s:
        s.sendall(b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc')
        t0 = time.monotonic()
        data, closed = read_all(s, bound=READ_BOUND + 5)
        took = time.monotonic() - t0
    assert (data, closed) == (b'', True)
    assert took < READ_BOUND, f'closed after {took:.2f} s (read_timeout {READ_TIMEOUT} s)'
    assert_serves(front)


def test_a_content_length_claiming_less_leaves_the_rest_to_be_parsed_as_the_next_request(front):
    # The rest is not a request: answered 400, then closed.
    data, closed = exchange(front, b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhello\r\n\r\n')
    first, second = responses(data)
    assert (first[0], first[2]) == (200, b'he')
    assert is_error(second, 400, 'BadRequest') and closed, second
    # The rest is a request of its own: answered as one, in order.
    smuggled = post(b'ok', extra=b'Connection: close\r\n')
    data, closed = exchange(front, b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi' + smuggled)
    assert [(code, body) for code, _, body in responses(data)] == [(200, b'hi'), (200, b'ok')] and closed
    # The rest is the start of a request that never ends: closed by the read timeout.
    data, closed = exchange(front, b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhello', bound=READ_BOUND)
    assert [(code, body) for code, _, body in responses(data)] == [(200, b'he')] and closed
    assert_serves(front)


@pytest.mark.parametrize(
    'sent',
    [
        b'\x00\xff\x13\x10garbage\r\n\r\n',
        b'GARBAGE\r\n\r\n',
        b'G@T / HTTP/1.1\r\nHost: t\r\n\r\n',
        b'GET / HTTP/9.9\r\nHost: t\r\n\r\n',
        b'GET / HTTP/1.1x\r\nHost: t\r\n\r\n',
        b'GET / FTP/1.1\r\nHost: t\r\n\r\n',
        b'POST /a b HTTP/1.1\r\nHost: t\r\n\r\n',
        b'POST / HTTP/1.1\nHost: t\nContent-Length: 1\n\nx',
        b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n',
        b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\n',
        b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd',
        b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n',
        b'POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n',
        b'POST / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n',
        b'POST / HTTP/1.1\r\nHost: t\r\nNo Colon\r\nContent-Length: 0\r\n\r\n',
    ],
    ids=[
        'binary',
        'garbage',
        'bad-method-char',
        'http-9.9',
        'version-suffix',
        'not-http',
        'space-in-target',
        'bare-lf',
        'negative-length',
        'huge-length',
        'two-lengths',
        'length-and-chunked',
        'bad-chunk-size',
        'nul-in-header',
        'header-without-colon',
    ],
)
def test_malformed_requests_are_400_and_the_connection_closes(front, sent):
    before = front.counts()
    data, closed = exchange(front, sent)
    assert closed
    [resp] = responses(data)
    assert is_error(resp, 400, 'BadRequest'), resp
    assert json.loads(resp[2])['message'].startswith('malformed HTTP request: ')
    c = wait_counts(front, lambda c: c['bad'] > before['bad'])
    assert c['bad'] == before['bad'] + 1 and c['requests'] == before['requests'], (before, c)
    assert_serves(front)


def test_an_unknown_but_well_formed_method_is_405_not_400(front):
    data, closed = exchange(front, b'FROB / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n')
    [(code, headers, _)] = responses(data)
    assert (code, headers['allow'], closed) == (405, 'POST', True)
    assert_serves(front)


def test_a_transfer_encoding_without_chunked_is_400(front):
    data, closed = exchange(
        front, b'POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nabc'
    )
    assert is_error(responses(data)[0], 400, 'BadRequest'), data


def test_the_access_log_line_of_a_malformed_request_is_its_own(front):
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    log = logging.getLogger('mpserver.access')
    handler = Keep()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        exchange(front, post(b'', path=b'/first') + b'POST / HTTP/1.1\r\nHost: t\r\nX: ' + b'a' * MAX_HEADER)
        deadline = time.monotonic() + 10
        while sum(not line.startswith('POST / 200 ') for line in seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        log.removeHandler(handler)
        log.setLevel(logging.NOTSET)
    seen = [line for line in seen if not line.startswith('POST / 200 ')]  # assert_serves of earlier tests
    assert len(seen) == 2 and seen[0].startswith('POST /first 404 '), seen
    assert not seen[1].startswith('POST /first '), seen


# ------------------------------------------------------------------ slow, idle and many clients


def _dribble(svc: HttpService, head: bytes, rest: bytes, every: float, out: dict) -> None:
    """Sends `head`, then `rest` one byte per `every` seconds until the front
    closes the connection; out['closed_after'] = seconds from the first
    byte (None: it never did)."""
    out['closed_after'] = None
    with connect(svc) as s, selectors.DefaultSelector() as sel:
        sel.register(s, selectors.EVENT_READ)
        t0 = time.monotonic()
        try:
            s.sendall(head)
            for byte in rest:
                s.send(bytes([byte]))
                if sel.select(every) and not s.recv(4096):
                    break
            else:
                return
        except OSError:
            pass
        out['closed_after'] = time.monotonic() - t0


@pytest.mark.parametrize('part', ['header', 'body'])
def test_a_slow_client_is_cut_off_by_the_read_timeout_while_others_are_served(front, part):
    head = b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n'
    # One byte per 200 ms, never finishing: of a header line, or of the body.
    head, rest = (head, b'X-Slow: ' + b's' * 1000) if part == 'header' else (head + b'\r\n', b'b' * 1000)
    results: list[dict] = [{} for _ in range(3)]
    threads = [threading.Thread(target=_dribble, args=(front, head, rest, 0.2, r), daemon=True) for r in results]
    for t in threads:
        t.start()
    served = 0
    while any(t.is_alive() for t in threads):
        assert_serves(front)
        served += 1
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert served >= 3
    for r in results:
        assert r['closed_after'] is not None and r['closed_after'] < READ_BOUND, results
    assert_serves(front)


def test_2000_idle_connections_do_not_stop_serving_and_are_closed_after_the_idle_timeout(front):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 4500:  # ours and the front's, in this process
        if hard != resource.RLIM_INFINITY and hard < 4500:
            pytest.skip(f'needs 4500 file descriptors, the hard limit is {hard}')
        resource.setrlimit(resource.RLIMIT_NOFILE, (4500, hard))
    n = 2000
    socks = []
    try:
        for _ in range(n):
            socks.append(connect(front))
        # A few of them had a request answered first: idle keep-alive connections.
        for s in socks[:20]:
            s.sendall(post(b'k'))
            data = b''
            while not data.endswith(b'\r\n\r\nk'):
                chunk = s.recv(4096)
                assert chunk, data
                data += chunk
        opened = time.monotonic()
        c = wait_counts(front, lambda c: c['connections'] >= n)
        assert c['connections'] >= n, c
        for _ in range(3):
            assert_serves(front)
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        open_ = set(socks)
        while open_ and time.monotonic() - opened < IDLE_BOUND + 5:
            for key, _ in sel.select(0.5):
                try:
                    gone = not key.fileobj.recv(4096)
                except OSError:
                    gone = True
                assert gone, 'an idle connection was sent something'
                sel.unregister(key.fileobj)
                open_.discard(key.fileobj)
        took = time.monotonic() - opened
        assert not open_, f'{len(open_)} of {n} idle connections still open after {took:.1f} s'
        assert took < IDLE_BOUND, f'the idle connections were closed after {took:.2f} s (idle_timeout {IDLE_TIMEOUT})'
        sel.close()
    finally:
        for s in socks:
            s.close()
    c = wait_counts(front, lambda c: c['connections'] == 0)
    assert c['connections'] == 0, c
    assert_serves(front)


# ------------------------------------------------------------------ protocol features under stress


def test_expect_100_continue(front):
    with connect(front) as s:
        s.sendall(b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n')
        go = b''
        while not go.endswith(b'\r\n\r\n'):
            chunk = s.recv(4096)
            assert chunk, go
            go += chunk
        assert go == b'HTTP/1.1 100 Continue\r\n\r\n'
        s.sendall(b'abc')
        # The same connection goes on: a second request, then close.
        s.sendall(post(b'again', extra=b'Connection: close\r\n'))
        data, closed = read_all(s)
    assert [(code, body) for code, _, body in responses(data)] == [(200, b'abc'), (200, b'again')] and closed
    # A client that does not wait for the go-ahead.
    data, closed = exchange(front, post(b'xyz', extra=b'Expect: 100-continue\r\nConnection: close\r\n'))
    assert data.startswith(b'HTTP/1.1 100 Continue\r\n\r\n') and closed, data
    assert [(code, body) for code, _, body in responses(data[25:])] == [(200, b'xyz')]
    # Too large: 413 instead of the go-ahead.
    with connect(front) as s:
        s.sendall(b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n' % (MAX_BODY + 1))
        data, closed = read_all(s)
    assert closed and is_error(responses(data)[0], 413, 'PayloadTooLarge'), data
    # A go-ahead the client never uses: closed by the read timeout.
    with connect(front) as s:
        s.sendall(b'POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n')
        data, closed = read_all(s, bound=READ_BOUND)
    assert (data, closed) == (b'HTTP/1.1 100 Continue\r\n\r\n', True)
    assert_serves(front)


def test_pipelined_requests_in_one_write_are_answered_in_order(front):
    # The first is slow; the later ones must not overtake it.
    burst = (
        post(b'sleep:0.3')
        + post(b'second')
        + b'GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n'
        + post(b'', path=b'/nowhere')
        + post(b'last', extra=b'Connection: close\r\n')
    )
    data, closed = exchange(front, burst)
    got = [(code, body) for code, _, body in responses(data)]
    assert got[:3] == [(200, b'slept'), (200, b'second'), (200, b'ok\n')] and closed, got
    assert got[3][0] == 404 and got[4] == (200, b'last'), got
    # Many small ones at once.
    data, closed = exchange(
        front, b''.join(post(b'%d' % i) for i in range(200)) + post(b'end', extra=b'Connection: close\r\n')
    )
    assert [body for _, _, body in responses(data)] == [b'%d' % i for i in range(200)] + [b'end'] and closed
    assert_serves(front)


def test_a_request_then_half_close_is_still_answered(front):
    data, closed = exchange(front, post(b'sleep:0.2') + post(b'after'), half_close=True)
    assert [(code, body) for code, _, body in responses(data)] == [(200, b'slept'), (200, b'after')] and closed
    assert_serves(front)


@pytest.mark.parametrize('how', ['close', 'reset'])
def test_a_client_gone_before_its_response(front, how):
    before = wait_counts(front, lambda c: c['connections'] == 0 and c['in_flight'] == 0)
    s = connect(front)
    if how == 'reset':  # SO_LINGER 0: close sends RST
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
    s.sendall(post(b'sleep:0.5'))
    c = wait_counts(front, lambda c: c['in_flight'] == 1)
    assert c['in_flight'] == 1, c
    s.close()
    # The result comes, is "answered" to nobody, and the connection ends.
    c = wait_counts(
        front, lambda c: c['in_flight'] == 0 and c['connections'] == 0 and c['responses'] > before['responses']
    )
    assert c['in_flight'] == 0 and c['connections'] == 0, c
    assert c['requests'] == before['requests'] + 1 and c['responses'] == before['responses'] + 1, (before, c)
    assert c['timed_out'] == before['timed_out'], c
    assert_serves(front)


def test_a_client_that_never_reads_its_responses_is_cut_off(front):
    """It pipelines large requests and reads nothing: the front's writes
    stall, and the write timeout (read_timeout) ends the connection."""
    one = post(b'z' * (MAX_BODY - 1000))
    burst = one * 300  # ~19 MB of answers: more than the socket buffers hold
    with connect(front) as s:
        s.setblocking(False)
        sent = 0
        t0 = time.monotonic()
        cut = None
        while sent < len(burst) and time.monotonic() - t0 < READ_BOUND + 10:
            try:
                sent += s.send(burst[sent : sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
            except OSError as e:
                cut = e
                break
        took = time.monotonic() - t0
        assert cut is not None, f'sent {sent} of {len(burst)} bytes in {took:.1f} s, never cut off'
    assert took < READ_BOUND + 3, f'cut off after {took:.2f} s'
    assert_serves(front)
