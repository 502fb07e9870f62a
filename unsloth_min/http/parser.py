"""Sans-IO HTTP/1.1 request parser: bytes in, `Request` objects (or `HttpError`) out.

Strategy: the parser owns one growing buffer. `feed()` appends bytes; `maybe_head()` pops
CRLF-terminated lines off the front until the empty line that ends the head, then validates the
whole head at once and decides the body framing (RFC 9112 §6.3); `maybe_body()` then reads a
Content-Length or chunked body. Each `maybe_*` returns None for "need more data", so the same
bytes fed whole or one byte at a time give the same result. Bytes after a complete request stay
buffered for the next one (pipelining). Everything is checked on raw bytes with anchored regexes
before it is decoded or passed to int(); field values are read with fields.py's grammars. Every
limit is a named field of `Limits`, mapped to its status (414, 431, 413) and checked while data
is still incomplete, so a client can never make us buffer more than the limit. The request
carries its effective authority — the absolute-form target's, else the Host header's (RFC 9112
§3.2.2) — so no later layer re-parses the target to learn which host was asked for.

What it does not do: no sockets, clocks or timeouts (the server owns those, the `*_timeout`
fields merely live here with the other limits); no responses; no percent-decoding of the path;
no CONNECT (authority-form) targets; no obs-fold, bare-LF or raw non-ASCII-target leniency —
those are rejected (400). Stricter than RFC 9112 on purpose, where smuggling lives: a second
`Content-Length` line (even an equal one) and any whitespace in its value beyond the one
customary SP are 400s, as is a trailer line that would not pass as a header line, and so is
userinfo in an absolute-form target (RFC 9110 §4.2.4: `http://evil@localhost/` is no request
for localhost).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .fields import HOST, TOKEN, host_name, list_items, parse_media_type


@dataclass(frozen=True)
class Limits:
    """Named limits, each with the status it maps to and the reason for its size."""

    max_request_line: int = 8 * 1024  # 414; nginx's large_client_header_buffers default
    max_header_bytes: int = 16 * 1024  # 431; between nginx (8K) and IIS (16K)
    max_headers: int = 100  # 431; Apache's LimitRequestFields
    max_body: int = 64 * 1024 * 1024  # 413; base64 images in chat requests are large
    header_timeout: float = 10.0  # 408 + close; slowloris: the head must arrive in time
    body_timeout: float = 30.0  # 408 + close; a stalled upload must not hold a connection
    keepalive_timeout: float = 30.0  # idle keep-alive connection closed silently
    write_timeout: float = 60.0  # a client that stops reading: close and cancel the response
    max_connections: int = 512  # 503 + close; bounds memory and file descriptors


MAX_CHUNK_LINE = 1024  # 400; chunk size plus extensions, which we ignore (RFC 9112 §7.1.1)

_TOKEN = re.compile(TOKEN.encode())  # methods and field names, checked on the raw bytes
_VERSION = re.compile(rb"HTTP/[0-9](?:\.[0-9])?")  # well-formed, maybe not one we speak
_BAD_TARGET = re.compile(rb"[^\x21-\x7e]")  # RFC 3986: printable ASCII; the rest is %-encoded
_ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://([^/?#]*)")  # scheme://authority
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # controls except HTAB (RFC 9110 §5.5)
_CONTENT_LENGTH = re.compile(rb" ?[0-9]{1,19}")  # the raw value: fits an int64; no sign,
#   no list, no `1_0`, no whitespace a lenient int() or a front proxy might skip
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;.*)?")  # hex size, ignored extensions


class HttpError(Exception):
    """A request the parser (or a handler) refuses; `status` is what the client gets."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    peer: tuple | None = None
    context: dict = field(default_factory=dict)
    authority: str | None = None  # the target's if absolute-form, else Host's (RFC 9112 §3.2.2)

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header `name` (any case), or `default`."""
        name = name.lower()
        return next((v for n, v in self.headers if n == name), default)

    def _tokens(self, name: str) -> set[str]:
        return {t.lower() for n, v in self.headers if n == name for t in list_items(v)}

    @property
    def content_type(self) -> tuple[str, dict[str, str]] | None:
        """The one Content-Type as (media type, parameters); None if absent, repeated or malformed."""
        values = [v for n, v in self.headers if n == "content-type"]
        return parse_media_type(values[0]) if len(values) == 1 else None

    @property
    def keep_alive(self) -> bool:
        """RFC 9112 §9.3: 1.1 persists unless `close`; 1.0 only with `keep-alive`."""
        tokens = self._tokens("connection")
        if "close" in tokens:
            return False
        return self.version == "HTTP/1.1" or "keep-alive" in tokens

    @property
    def expects_continue(self) -> bool:
        """RFC 9110 §10.1.1: `Expect: 100-continue`, ignored on HTTP/1.0."""
        return self.version == "HTTP/1.1" and "100-continue" in self._tokens("expect")


class RequestParser:
    """Feed bytes; take requests out with `maybe_request()` or `maybe_head()` + `maybe_body()`."""

    def __init__(self, limits: Limits = Limits()):
        self.limits = limits
        self._buf = bytearray()
        self._lines: list[bytes] = []  # head lines so far, request line first
        self._head_bytes = 0  # header-section bytes so far, for max_header_bytes
        self._request: Request | None = None  # head returned, body not yet complete
        self._body: _LengthBody | _ChunkedBody | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def started(self) -> bool:
        """True once any byte of the next request head has arrived."""
        return bool(self._buf or self._lines)

    def maybe_request(self) -> Request | None:
        """A complete request (head and body), or None for "need more data"."""
        if self._request is None and self.maybe_head() is None:
            return None
        request = self._request
        return request if self.maybe_body() is not None else None

    def maybe_head(self) -> Request | None:
        """The next request with an empty body, once its head is complete; else None."""
        if self._request is not None:
            raise RuntimeError("maybe_head() called before the previous body was read")
        if not self._maybe_head_lines():
            return None
        request, length = _parse_head(self._lines, self.limits)
        self._lines, self._head_bytes = [], 0
        self._request = request
        self._body = _ChunkedBody(self.limits) if length is None else _LengthBody(length)
        return request

    def maybe_body(self) -> bytes | None:
        """The body of the request `maybe_head()` returned, once complete; else None."""
        if self._request is None or self._body is None:
            raise RuntimeError("maybe_body() called without a request head")
        body = self._body.maybe_read(self._buf)
        if body is not None:
            self._request.body = body
            self._request = self._body = None
        return body

    def _maybe_head_lines(self) -> bool:
        """Collect head lines up to the empty line; True once it is there."""
        limits = self.limits
        while True:
            if not self._lines:
                line = _take_line(self._buf, limits.max_request_line, 414, "request line")
                if line:
                    self._lines.append(line)
                elif line is None:
                    return False
                # RFC 9112 §2.2: ignore empty lines received before the request line.
                continue
            budget = max(limits.max_header_bytes - self._head_bytes, 0)
            line = _take_line(self._buf, budget, 431, "header section")
            if line is None:
                return False
            if not line:
                return True
            self._head_bytes += len(line) + 2
            self._lines.append(line)
            if len(self._lines) - 1 > limits.max_headers:
                raise HttpError(431, "Too many header fields")


def _take_line(buf: bytearray, limit: int, status: int, what: str) -> bytes | None:
    """Pop one line of at most `limit` bytes (CRLF removed) off `buf`; None if incomplete."""
    end = buf.find(b"\n", 0, limit + 2)
    if end < 0:
        if len(buf) >= limit + 2:
            raise HttpError(status, f"The {what} is too long")
        return None
    if end == 0 or buf[end - 1] != 0x0D:
        raise HttpError(400, "Bare LF: lines must end with CRLF")  # RFC 9112 §2.2
    line = bytes(buf[: end - 1])
    if b"\r" in line:
        raise HttpError(400, "Bare CR in a line")  # RFC 9112 §2.2
    del buf[: end + 1]
    return line


def _parse_head(lines: list[bytes], limits: Limits) -> tuple[Request, int | None]:
    """Validate a complete head; returns the request and its body length (None = chunked)."""
    method, target, version = _parse_request_line(lines[0])
    path, query, authority = _split_target(method, target)
    headers = [_parse_header(line) for line in lines[1:]]
    hosts = [v for n, v in headers if n == "host"]
    if len(hosts) > 1:
        raise HttpError(400, "Repeated Host header")  # RFC 9112 §3.2
    if not hosts and version == b"HTTP/1.1":
        raise HttpError(400, "Missing Host header")  # RFC 9112 §3.2
    if hosts and not HOST.fullmatch(hosts[0]):
        raise HttpError(400, "Invalid Host header")  # RFC 9112 §3.2: uri-host [":" port]
    request = Request(method.decode("ascii"), target.decode("latin-1"), path, query,
                      version.decode("ascii"), headers,
                      authority=authority if authority is not None else next(iter(hosts), None))
    if request.version == "HTTP/1.1" and request._tokens("expect") - {"100-continue"}:
        raise HttpError(417, "Only Expect: 100-continue is supported")  # RFC 9110 §10.1.1
    return request, _body_length(request, limits)


def _parse_request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    parts = line.split(b" ")
    if len(parts) != 3:  # RFC 9112 §3: exactly one SP between the three parts
        raise HttpError(400, "Malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HttpError(400, "Invalid method")
    if not target or _BAD_TARGET.search(target):
        raise HttpError(400, "Invalid request target")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if _VERSION.fullmatch(version):
            raise HttpError(505, "HTTP version not supported")
        raise HttpError(400, "Malformed HTTP version")
    return method, target, version


def _split_target(method: bytes, target: bytes) -> tuple[str, str, str | None]:
    """(path, query, authority) of an origin-form, absolute-form or asterisk-form target
    (RFC 9112 §3.2); the authority only for absolute-form, where it overrides Host (§3.2.2)."""
    if target == b"*":
        if method != b"OPTIONS":  # RFC 9112 §3.2.4: asterisk-form is for OPTIONS only
            raise HttpError(400, "Asterisk-form target is only allowed with OPTIONS")
        return "*", "", None
    authority = None
    if not target.startswith(b"/"):
        match = _ABSOLUTE.match(target)
        if not match:  # authority-form (CONNECT) and anything else
            raise HttpError(400, "Invalid request target")
        authority = _absolute_authority(match[1])
        target = target[match.end():] or b"/"  # RFC 9112 §3.2.2: the path of an absolute URI
        if not target.startswith((b"/", b"?")):
            raise HttpError(400, "Invalid request target")
        if target.startswith(b"?"):
            target = b"/" + target
    path, _, query = target.partition(b"?")
    return path.decode("latin-1"), query.decode("latin-1"), authority


def _absolute_authority(raw: bytes) -> str:
    """The `host[:port]` of an absolute-form target, checked as strictly as a Host header."""
    authority = raw.decode("ascii")  # _BAD_TARGET let only printable ASCII through
    if "@" in authority:  # RFC 9110 §4.2.4: userinfo is deprecated; treat it as an error
        raise HttpError(400, "Userinfo in the request target")
    if not HOST.fullmatch(authority) or not host_name(authority):  # RFC 9110 §4.2.1: no empty host
        raise HttpError(400, "Invalid authority in the request target")
    return authority


def _parse_header(line: bytes) -> tuple[str, str]:
    if line[:1] in (b" ", b"\t"):
        raise HttpError(400, "Obsolete line folding in headers")  # RFC 9112 §5.2
    name, colon, raw = line.partition(b":")
    if not colon:
        raise HttpError(400, "Header line without a colon")
    if name[-1:] in (b" ", b"\t"):
        raise HttpError(400, "Whitespace between header name and colon")  # RFC 9112 §5.1
    if not _TOKEN.fullmatch(name):
        raise HttpError(400, "Invalid header name")
    value = raw.strip(b" \t")  # OWS around the value (RFC 9112 §5.1), on bytes
    if _BAD_VALUE.search(value):
        raise HttpError(400, "Control character in header value")
    if name.lower() == b"content-length" and not _CONTENT_LENGTH.fullmatch(raw):
        raise HttpError(400, "Invalid Content-Length")  # checked on the raw bytes
    return name.decode("ascii").lower(), value.decode("latin-1")


def _body_length(request: Request, limits: Limits) -> int | None:
    """RFC 9112 §6.3 for requests: chunked (None), Content-Length, or no body (0)."""
    codings = [v for n, v in request.headers if n == "transfer-encoding"]
    lengths = [v for n, v in request.headers if n == "content-length"]
    if codings:
        if lengths:  # RFC 9112 §6.1: both at once is how requests are smuggled
            raise HttpError(400, "Both Content-Length and Transfer-Encoding")
        if request.version == "HTTP/1.0":  # RFC 9112 §6.1: treat the framing as faulty
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if ",".join(codings).lower() != "chunked":
            raise HttpError(501, "Only Transfer-Encoding: chunked is supported")
        return None
    if not lengths:
        return 0
    if len(lengths) > 1:  # RFC 9112 §6.3 rule 5 allows equal copies; a proxy may not agree
        raise HttpError(400, "Repeated Content-Length header")
    length = int(lengths[0])  # 1-19 ASCII digits (_CONTENT_LENGTH): none of int()'s leniency applies
    if length > limits.max_body:
        raise HttpError(413, "Request body too large")
    return length


class _LengthBody:
    def __init__(self, length: int):
        self.length = length

    def maybe_read(self, buf: bytearray) -> bytes | None:
        if len(buf) < self.length:
            return None
        body = bytes(buf[: self.length])
        del buf[: self.length]
        return body


class _ChunkedBody:
    """RFC 9112 §7.1: size line, data, CRLF, ... `0` line, trailer lines (dropped), CRLF."""

    def __init__(self, limits: Limits):
        self.max_body = limits.max_body
        self.trailer_budget = limits.max_header_bytes
        self.parts: list[bytes] = []
        self.total = 0
        self.left = 0  # data bytes left in the current chunk
        self.state = "size"

    def maybe_read(self, buf: bytearray) -> bytes | None:
        while True:
            if self.state == "size":
                if not self._size_line(buf):
                    return None
            elif self.state == "data":
                if not buf:
                    return None
                part = bytes(buf[: self.left])
                del buf[: len(part)]
                self.parts.append(part)
                self.left -= len(part)
                self.state = "data" if self.left else "crlf"
            elif self.state == "crlf":
                head = bytes(buf[:2])
                if not b"\r\n".startswith(head):
                    raise HttpError(400, "Chunk data not followed by CRLF")  # RFC 9112 §7.1
                if len(head) < 2:
                    return None
                del buf[:2]
                self.state = "size"
            elif self._trailer_done(buf):
                return b"".join(self.parts)
            else:
                return None

    def _size_line(self, buf: bytearray) -> bool:
        line = _take_line(buf, MAX_CHUNK_LINE, 400, "chunk size line")
        if line is None:
            return False
        match = _CHUNK_SIZE.fullmatch(line)
        if not match:
            raise HttpError(400, "Invalid chunk size")
        self.left = int(match[1], 16)
        self.total += self.left
        if self.total > self.max_body:
            raise HttpError(413, "Request body too large")
        self.state = "data" if self.left else "trailers"
        return True

    def _trailer_done(self, buf: bytearray) -> bool:
        """Read, check and drop trailer lines (RFC 9112 §7.1.2); True at the final empty line."""
        while (line := _take_line(buf, max(self.trailer_budget, 0), 431, "trailer section")):
            self.trailer_budget -= len(line) + 2
            _parse_header(line)  # a malformed trailer is as bad as a malformed header
        return line is not None
