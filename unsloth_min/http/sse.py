"""Server-sent events framing: one event as the bytes of one `text/event-stream` message.

Strategy: an event is `event: NAME` (optional) plus one `data:` line per line of the payload,
ended by an empty line (WHATWG HTML §9.2.6). JSON payloads are compact and keep non-ASCII text
as UTF-8, so a token costs a handful of bytes. Lines are split on CRLF, CR or LF only — the
three line ends the SSE grammar knows — not on `str.splitlines()`'s wider set.

What it does not do: no `id:` or `retry:` fields, no comments or keep-alive pings, no writing;
the caller yields these bytes as items of a `StreamResponse`.
"""

from __future__ import annotations

import json
import re

# X-Accel-Buffering: nginx (and proxies that copy it) would otherwise hold events back in a buffer.
SSE_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"),
               ("X-Accel-Buffering", "no")]

_LINE_END = re.compile(r"\r\n|\r|\n")
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # one, not one per event


def sse_event(data: str | dict | list | bytes, event: str | None = None) -> bytes:
    """`event: X\\ndata: ...\\n\\n` as UTF-8; dicts and lists are sent as compact JSON, bytes
    as JSON already encoded (one line: the caller's promise)."""
    if event is not None and _LINE_END.search(event):
        raise ValueError("an SSE event name cannot contain a line break")
    head = f"event: {event}\n" if event is not None else ""
    if isinstance(data, bytes):
        return b"".join((head.encode(), b"data: ", data, b"\n\n"))
    if isinstance(data, str):
        body = "\n".join(f"data: {line}" for line in _LINE_END.split(data))
    else:  # JSON escapes every control character: one line
        body = "data: " + _JSON.encode(data)
    return f"{head}{body}\n\n".encode("utf-8")
