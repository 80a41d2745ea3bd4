"""What the servlet tree gives the native HTTP front back (``cpp/http_message.hpp``).

The worker that makes a request's final result encodes it as an HTTP
response, in the worker's own process (never in the main process): ``bytes``
(and other buffers) as they are, ``str`` as UTF-8 text, anything else as
JSON.  An exception becomes a 500 with the JSON body ``{"error": type name,
"message": str(exc)}`` (plus ``"traceback"`` when the environment variable
``MPSERVER_HTTP_TRACEBACKS=1`` is set where the worker runs;
``serve_http(debug=True)`` sets it).  Which requests came through the front
is told by bit 63 of the request token (``_core.TOKEN_HTTP``), which travels
unchanged through the tree.  What goes in is ``_wire.http_request``.
"""

from __future__ import annotations

import json
import os
import struct
import traceback
from typing import Any

from mpserver import _core
from mpserver._wire.codec import decode

__all__ = ['HTTP_MARK', 'NO_MARK', 'http_result', 'http_error', 'http_pass']

FLAG_HTTP = int(_core.Flag.HTTP)
FLAG_CRASH = int(_core.Flag.CRASH)
#: Request tokens at least this large came through the HTTP front.
HTTP_MARK = int(_core.TOKEN_HTTP)
#: A mark no token reaches: workers that do not make final results.
NO_MARK = 1 << 64

_HEAD = struct.Struct('<HBB')  # status, body kind, reserved (HttpHead in cpp/wire.hpp)
assert _HEAD.size == _core.HTTP_HEAD_BYTES
_OCTETS, _TEXT, _JSON = 0, 1, 2
_HEAD_OK = {kind: _HEAD.pack(200, kind, 0) for kind in (_OCTETS, _TEXT, _JSON)}


def http_result(value: Any) -> tuple[int, bytes]:
    """``(flags, payload)`` of ``value`` as a 200 response."""
    t = type(value)
    if t is bytes:
        return FLAG_HTTP, _HEAD_OK[_OCTETS] + value
    if t is str:
        return FLAG_HTTP, _HEAD_OK[_TEXT] + value.encode('utf-8', 'surrogatepass')
    if isinstance(value, (bytes, bytearray, memoryview)):
        return FLAG_HTTP, _HEAD_OK[_OCTETS] + bytes(value)
    try:
        body = json.dumps(value, ensure_ascii=False, allow_nan=False).encode('utf-8', 'surrogatepass')
    except (TypeError, ValueError) as e:
        err = TypeError(f'the result cannot be sent as JSON: {e}')
        return http_error(err, with_traceback=False)
    return FLAG_HTTP, _HEAD_OK[_JSON] + body


def http_error(exc: BaseException, *, with_traceback: bool = True) -> tuple[int, bytes]:
    """``(flags, payload)`` of a 500 response for the exception ``exc``."""
    doc: dict[str, str] = {'error': type(exc).__name__, 'message': str(exc)}
    if with_traceback and os.environ.get('MPSERVER_HTTP_TRACEBACKS') == '1':
        tb = getattr(exc, '__mpserver_traceback__', None) or ''.join(traceback.format_exception(exc))
        doc['traceback'] = tb
    body = json.dumps(doc, ensure_ascii=False).encode('utf-8', 'surrogatepass')
    return FLAG_HTTP, _HEAD.pack(500, _JSON, 0) + body


def http_pass(flags: int, payload: Any) -> tuple[int, Any]:
    """An upstream error reaching the last stage of a request from the
    front: a crash report passes on as it is (the front answers 502 with
    its text); any other error becomes a
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
