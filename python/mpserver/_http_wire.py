"""What crosses the servlet tree for the native HTTP front (``cpp/http_message.hpp``).

Into the tree: a request's body as ``bytes`` (the default), or, for a route
that asked for whole requests, a request record that :func:`decode_request`
turns into an :class:`HttpRequest` in the worker.

Out of the tree: the worker that makes a request's final result encodes it
as an HTTP response, in the worker's own process (never in the main
process): ``bytes`` (and other buffers) as they are, ``str`` as UTF-8 text,
anything else as JSON.  An exception becomes a 500 with the JSON body
``{"error": type name, "message": str(exc)}`` (plus ``"traceback"`` when the
environment variable ``MPSERVER_HTTP_TRACEBACKS=1`` is set where the worker
runs; ``serve_http(debug=True)`` sets it).  Which requests came through the
front is told by bit 63 of the request token (``_core.TOKEN_HTTP``), which
travels unchanged through the tree.
"""

from __future__ import annotations

import os
import struct
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from . import _core

__all__ = ['HttpRequest', 'decode_request', 'http_result', 'http_error', 'http_pass']

FLAG_HTTP = int(_core.Flag.HTTP)
FLAG_REQUEST = int(_core.Flag.REQUEST)
FLAG_ERROR = int(_core.Flag.ERROR)
FLAG_CRASH = int(_core.Flag.CRASH)
#: Request tokens at least this large came through the HTTP front.
HTTP_MARK = int(_core.TOKEN_HTTP)
#: A mark no token reaches: workers that do not make final results.
NO_MARK = 1 << 64

_HEAD = struct.Struct('<HBB')  # status, body kind, reserved (HttpHead in cpp/wire.hpp)
assert _HEAD.size == _core.HTTP_HEAD_BYTES
_OCTETS, _TEXT, _JSON = 0, 1, 2
_HEAD_OK = {kind: _HEAD.pack(200, kind, 0) for kind in (_OCTETS, _TEXT, _JSON)}


class HttpRequest:
    """A whole HTTP request, as a worker of a route served with
    ``request=True`` receives it.

    ``headers`` maps lower-case header names to their values (a header given
    several times has its values joined with ``", "``, as HTTP allows);
    ``raw_headers`` keeps them as they came, in order.
    """

    __slots__ = ('method', 'path', 'query', 'headers', 'raw_headers', 'body')

    def __init__(
        self,
        method: str,
        path: str,
        query: str = '',
        raw_headers: list[tuple[str, str]] | None = None,
        body: bytes = b'',
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.raw_headers = list(raw_headers or [])
        headers: dict[str, str] = {}
        for name, value in self.raw_headers:
            key = name.lower()
            headers[key] = f'{headers[key]}, {value}' if key in headers else value
        self.headers: Mapping[str, str] = headers
        self.body = body

    def text(self, encoding: str = 'utf-8') -> str:
        """The body as text."""
        return self.body.decode(encoding)

    def json(self) -> Any:
        """The body parsed as JSON."""
        import json

        return json.loads(self.body)

    def __repr__(self) -> str:
        q = f'?{self.query}' if self.query else ''
        return f'<HttpRequest {self.method} {self.path}{q} ({len(self.body)} bytes)>'

    def __reduce__(self) -> tuple[Any, ...]:  # travels on to later stages like any value
        return (HttpRequest, (self.method, self.path, self.query, self.raw_headers, self.body))


def decode_request(payload: Any) -> HttpRequest:
    """The :class:`HttpRequest` of a request record (parsed by the core, the
    same code the front and its fuzz target run)."""
    parts = _core.decode_request_record(payload if type(payload) is bytes else bytes(payload))
    if parts is None:
        raise ValueError('corrupt HTTP request record')
    method, path, query, headers, body = parts
    return HttpRequest(
        method.decode('latin-1'),
        path.decode('latin-1'),
        query.decode('latin-1'),
        [(n.decode('latin-1'), v.decode('latin-1')) for n, v in headers],
        body,
    )


def http_result(value: Any) -> tuple[int, bytes]:
    """``(flags, payload)`` of ``value`` as a 200 response."""
    t = type(value)
    if t is bytes:
        return FLAG_HTTP, _HEAD_OK[_OCTETS] + value
    if t is str:
        return FLAG_HTTP, _HEAD_OK[_TEXT] + value.encode('utf-8', 'surrogatepass')
    if isinstance(value, (bytes, bytearray, memoryview)):
        return FLAG_HTTP, _HEAD_OK[_OCTETS] + bytes(value)
    import json

    try:
        body = json.dumps(value, ensure_ascii=False, allow_nan=False).encode('utf-8', 'surrogatepass')
    except (TypeError, ValueError) as e:
        err = TypeError(f'the result cannot be sent as JSON: {e}')
        return http_error(err, with_traceback=False)
    return FLAG_HTTP, _HEAD_OK[_JSON] + body


def http_error(exc: BaseException, *, with_traceback: bool = True) -> tuple[int, bytes]:
    """``(flags, payload)`` of a 500 response for the exception ``exc``."""
    import json

    doc: dict[str, str] = {'error': type(exc).__name__, 'message': str(exc)}
    if with_traceback and os.environ.get('MPSERVER_HTTP_TRACEBACKS') == '1':
        tb = getattr(exc, '__mpserver_traceback__', None) or ''.join(traceback.format_exception(exc))
        doc['traceback'] = tb
    body = json.dumps(doc, ensure_ascii=False).encode('utf-8', 'surrogatepass')
    return FLAG_HTTP, _HEAD.pack(500, _JSON, 0) + body


def http_pass(flags: int, payload: Any, decode: Callable[[int, Any], Any]) -> tuple[int, Any]:
    """An upstream error reaching the last stage of a request from the
    front: a crash report passes on as it is (the front answers 502 with
    its text); any other error (decoded with ``decode``, _wire's) becomes a
    500 response here."""
    if flags & FLAG_CRASH:
        return flags, payload
    try:
        exc = decode(flags, payload)
    except Exception as e:  # noqa: BLE001 - an undecodable error is still this request's error
        exc = e
    if not isinstance(exc, BaseException):
        exc = RuntimeError(repr(exc))
    return http_error(exc)
