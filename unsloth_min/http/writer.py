"""The write side of HTTP/1.1, sans-IO: response types in, bytes out — the twin of `parser.py`.

Strategy: `render` turns a whole `Response` into bytes with Content-Length (RFC 9110 §8.6), `head`
writes a status line and headers with the framing fields the server owns (Content-Length,
Transfer-Encoding, Connection are never taken from a handler), `chunk`/`LAST_CHUNK` frame a
chunked body (RFC 9112 §7.1). `check_head` refuses what would corrupt the framing before a byte is
written.

Does not: touch sockets, time out, or decide keep-alive (server.py does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import AsyncIterator

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
SERVER_OWNED = {"content-length", "transfer-encoding", "connection"}  # framing is ours


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


@dataclass
class StreamResponse:
    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]  # each item is one chunk, followed by drain()


def default_error_response(status: int, message: str) -> Response:
    body = {"error": {"message": message, "type": "invalid_request_error"}}
    return Response(status, [("Content-Type", "application/json")], json.dumps(body).encode())


def render(response: Response, keep: bool, server: str, head_only: bool = False) -> bytes:
    """A whole Response as bytes, with Content-Length where the status may have a body."""
    body = response.body if may_have_body(response.status) else b""
    framing = [("Content-Length", str(len(body)))] if may_have_body(response.status) else []
    start = head(response.status, response.headers, keep, framing, server)
    return start if head_only else start + body


def head(status: int, headers: list, keep: bool, framing: list, server: str) -> bytes:
    """Status line and headers; Date and Server unless the handler set them, then ours."""
    lines = [f"HTTP/1.1 {status} {reason(status)}"]
    names = {name.lower() for name, _ in headers}
    lines += [f"{n}: {v}" for n, v in headers if n.lower() not in SERVER_OWNED]
    if "date" not in names:
        lines.append(f"Date: {formatdate(usegmt=True)}")
    if "server" not in names:
        lines.append(f"Server: {server}")
    lines.append(f"Connection: {'keep-alive' if keep else 'close'}")
    lines += [f"{n}: {v}" for n, v in framing]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(item: bytes) -> bytes:
    """One chunk of a chunked body (never empty: an empty chunk ends the body)."""
    return b"%x\r\n%s\r\n" % (len(item), item)


def check_head(status: int, headers: list[tuple[str, str]]) -> None:
    """Refuse what would corrupt the framing: a bad status, CR/LF or non-latin-1 in headers."""
    if not 100 <= status <= 999:
        raise ValueError(f"invalid status {status}")
    for name, value in headers:
        text = f"{name}{value}"
        if "\r" in text or "\n" in text or "\0" in text or ":" in name:
            raise ValueError(f"invalid response header {name!r}")
        text.encode("latin-1")


def may_have_body(status: int) -> bool:
    return not (100 <= status < 200 or status in (204, 304))  # RFC 9110 §6.4.1


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""  # RFC 9112 §4: the reason phrase may be empty
