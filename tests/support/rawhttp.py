"""A tiny blocking HTTP/1.1 client over raw sockets, for probes that a real client would not send.

Strategy: write exact bytes, read exactly one response back (Content-Length, chunked, or up to
EOF), and say whether the server then closed the connection. Strict about what it reads: a
malformed response raises `Malformed`, so every probe also checks our own response framing.

Does not: follow redirects, decompress, or retry.
"""
from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field

_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-9][0-9]{2}) [^\r\n]*")
_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+): ([^\r\n]*)")


class Malformed(Exception):
    """The server's response broke HTTP/1.1 framing."""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    all_headers: list[tuple[str, str]] = field(default_factory=list)

    def header_values(self, name: str) -> list[str]:
        return [v for n, v in self.all_headers if n == name]


class Conn:
    """One connection; `send()` bytes, `reply()` reads the next response."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._more():
                raise Malformed(f"EOF before {marker!r}: {self.buf[:200]!r}")
        out, _, self.buf = self.buf.partition(marker)
        return out

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                raise Malformed(f"EOF after {len(self.buf)} of {n} body bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self) -> tuple[int, list[tuple[str, str]]]:
        """The next final response's status and headers (1xx responses are skipped)."""
        while True:
            lines = self._until(b"\r\n\r\n").split(b"\r\n")
            status = _STATUS_LINE.fullmatch(lines[0])
            if status is None:
                raise Malformed(f"bad status line {lines[0]!r}")
            headers = []
            for line in lines[1:]:
                match = _HEADER.fullmatch(line)
                if match is None:
                    raise Malformed(f"bad header line {line!r}")
                headers.append((match[1].decode().lower(), match[2].decode("latin-1")))
            if not 100 <= int(status[1]) < 200:
                return int(status[1]), headers

    def chunks(self):
        """Yield the data of each chunk of a chunked body until the last one."""
        while True:
            size = self._until(b"\r\n")
            if not re.fullmatch(rb"[0-9a-f]+", size):
                raise Malformed(f"bad chunk size {size!r}")
            n = int(size, 16)
            data = self._exactly(n + 2)
            if data[-2:] != b"\r\n":
                raise Malformed("chunk data not followed by CRLF")
            if n == 0:
                return
            yield data[:-2]

    def reply(self, head_only: bool = False) -> Reply:
        status, headers = self.head()
        h = dict(headers)
        if head_only or status in (204, 304):
            body = b""
        elif "content-length" in h:
            body = self._exactly(int(h["content-length"]))
        elif h.get("transfer-encoding") == "chunked":
            body = b"".join(self.chunks())
        else:
            while self._more():
                pass
            body, self.buf = self.buf, b""
        return Reply(status, h, body, headers)

    def closed(self) -> bool:
        """True once the server has closed its side (reads EOF, nothing more pending)."""
        try:
            return not self.buf and not self._more()
        except ConnectionResetError:
            return True


def exchange(host: str, port: int, data: bytes, timeout: float = 10.0) -> tuple[Reply, bool]:
    """Send `data` on a fresh connection: the first reply, and whether the server then closed
    (only waited for when the reply says `Connection: close`; keep-alive means it stays open)."""
    with Conn(host, port, timeout) as conn:
        conn.send(data)
        reply = conn.reply()
        return reply, reply.headers.get("connection") == "close" and conn.closed()

def read_until(s: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    data = b""
    while marker not in data and len(data) < limit:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data if marker in data else b""
