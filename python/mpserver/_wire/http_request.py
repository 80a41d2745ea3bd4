"""What the native HTTP front puts into the servlet tree (``cpp/http_message.hpp``).

A request's body as ``bytes`` (the default), or, for a route that asked for
whole requests, a request record that :func:`decode_request` turns into an
:class:`HttpRequest` in the worker.  What comes back out is
``_wire.http_response``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mpserver import _core

__all__ = ['HttpRequest', 'decode_request']


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
