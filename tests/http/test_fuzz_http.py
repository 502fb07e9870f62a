"""The HTTP parser under hypothesis: random bytes, generated requests, mutated valid requests.

Strategy: every input is parsed whole and one byte at a time (same verdict required), may only
raise `HttpError` with a status from `STATUSES`, and is compared with h11 — a strict, independent
parser — on its first request: whatever we accept h11 must accept with the same method, target,
version, headers and body (we may be stricter, never laxer). Known, RFC-sanctioned divergences are
named (`for_h11`, `CHUNK_BWS`) and counted. The budget is `UNSLOTH_MIN_FUZZ` examples per test
(default 300: seconds in `make test`; `make fuzz` raises it); each test prints its figures.
"""
from __future__ import annotations

import re
from collections import Counter

import h11
from hypothesis import given, strategies as st

from support.fuzzing import FUZZ, report
from unsloth_min.http import HttpError, Limits, RequestParser

LIMITS = Limits(max_request_line=256, max_header_bytes=512, max_headers=16, max_body=256)
STATUSES = {400, 413, 414, 417, 431, 501, 505}

VALID = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /v1/models?x=1 HTTP/1.0\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:8888\r\nContent-Type: application/json"
    b"\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
    b"POST /c HTTP/1.1\r\nHost: [::1]\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n"
    b"2\r\nde\r\n0\r\nT: v\r\n\r\n",
    b"HEAD /health HTTP/1.1\r\nhost: 127.0.0.1\r\nConnection: close\r\nExpect: 100-continue\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n",
]
PIECES = [b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b";", b",", b"\x00", b"\x7f", b"\x80", b"0",
          b"f", b"+", b"-", b"_", b"x", b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n",
          b"Host: b\r\n", b"HTTP/1.1", b"HTTP/2.0", b"\r\n\r\n", b"0\r\n\r\n", b"ffffffffffffffff"]
NAMES = [b"Host", b"Content-Length", b"Transfer-Encoding", b"Expect", b"Connection", b"X", b"X Y",
         b"", b"X\x01", b"Content-Length ", b"x-\xff"]
VALUES = [b"", b"a", b"localhost", b"[::1]:80", b"3", b" 3", b"+3", b"3, 3", b"0x3", b"1_0",
          b"chunked", b"Chunked", b"gzip, chunked", b"chunked, chunked", b"identity", b"100-continue",
          b"close", b"a\x00b", b"a\rb", b"\xe9t\xe9", b"99999999999999999999"]

GOOD_FIELDS = [(b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked"), (b"X", b""),
               (b"Connection", b"close"), (b"Expect", b"100-continue"), (b"X-Y", b"a  b")]


def parse_all(data: bytes, bytewise: bool):
    """('ok', requests) or ('error', status, requests before it); incomplete tails are dropped."""
    parser, out = RequestParser(LIMITS), []
    pieces = [data[i:i + 1] for i in range(len(data))] if bytewise else [data]
    try:
        for piece in pieces:
            parser.feed(piece)
            while (request := parser.maybe_request()) is not None:
                out.append(request)
    except HttpError as err:
        assert err.status in STATUSES, err
        return "error", err.status, out
    return "ok", out


def for_h11(data: bytes) -> bytes:
    """The same request as h11 should see it: RFC 9112 §2.2 lets us skip empty lines before the
    request line, which h11 refuses."""
    return re.sub(rb"^(\r\n)+", b"", data)


CHUNK_BWS = re.compile(rb"(?m)^[0-9A-Fa-f]+[ \t]+;")  # RFC 9112 §7.1.1 BWS; h11 refuses it


def h11_first(data: bytes):
    """h11's verdict on the first request: ('ok', (method, target, version, headers, body)),
    ('error',), or ('incomplete',)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=LIMITS.max_header_bytes * 4)
    if not data:
        return ("incomplete",)  # receive_data(b"") would mean EOF to h11
    conn.receive_data(data)
    head, body = None, b""
    try:
        while True:
            event = conn.next_event()
            if event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.ConnectionClosed):
                return ("incomplete",)
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in head.headers]
                return "ok", (head.method.decode(), head.target.decode("latin-1"),
                              "HTTP/" + head.http_version.decode(), headers, body)
    except h11.RemoteProtocolError:
        return ("error",)


def check(data: bytes, stats: Counter) -> None:
    stats["inputs"] += 1
    whole = parse_all(data, bytewise=False)
    assert parse_all(data, bytewise=True) == whole, "fed whole and byte by byte disagree"
    requests = whole[-1]
    stats["accepted" if requests else "refused" if whole[0] == "error" else "incomplete"] += 1
    if whole[0] == "error" and not requests:
        stats[f"status {whole[1]}"] += 1
    theirs = h11_first(for_h11(data))
    if requests:
        first = requests[0]
        ours = (first.method, first.target, first.version, first.headers, first.body)
        if theirs == ("error",) and CHUNK_BWS.search(data):
            stats["laxer than h11: chunk BWS"] += 1
            return
        assert theirs == ("ok", ours), f"we accepted what h11 reads differently: {theirs}"
    elif whole[0] == "error" and theirs[0] == "ok":
        stats["stricter than h11"] += 1


def mutate(data: bytes, edits: list) -> bytes:
    for op, pos, piece in edits:
        pos %= len(data) + 1
        if op == "insert":
            data = data[:pos] + piece + data[pos:]
        elif op == "delete":
            data = data[:pos] + data[pos + len(piece):]
        elif op == "replace":
            data = data[:pos] + piece + data[pos + 1:]
        else:  # repeat a line, the classic smuggling shape
            start = data.rfind(b"\n", 0, pos) + 1
            end = data.find(b"\n", pos) + 1 or len(data)
            data = data[:end] + data[start:end] + data[end:]
    return data


EDITS = st.lists(st.tuples(st.sampled_from(["insert", "delete", "replace", "repeat"]),
                           st.integers(0, 400), st.sampled_from(PIECES)), min_size=1, max_size=4)


def one_of_weighted(common: list, rare: list):
    return st.sampled_from(common * 4 + rare)


@st.composite
def generated(draw) -> bytes:
    """A request assembled from tricky parts, mostly well-formed so that deep paths are reached."""
    method = draw(one_of_weighted([b"GET", b"POST"], [b"HEAD", b"OPTIONS", b"PRI", b"G\x00T", b""]))
    target = draw(one_of_weighted([b"/", b"/a?b"], [b"*", b"http://h:1/p", b"x", b"/\x80", b"//"]))
    version = draw(one_of_weighted([b"HTTP/1.1"], [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"http/1.1"]))
    eol = draw(one_of_weighted([b"\r\n"], [b"\n", b"\r"]))
    lines = [method + b" " + target + b" " + version]
    if draw(st.integers(0, 4)):
        lines.append(b"Host: a")
    for _ in range(draw(st.integers(0, 4))):
        name, value = draw(one_of_weighted(GOOD_FIELDS, [(None, None)]))
        if name is None:  # a random, mostly bad, pair
            name, value = draw(st.sampled_from(NAMES)), draw(st.sampled_from(VALUES))
        lines.append(name + draw(one_of_weighted([b": ", b":"], [b" : ", b":\t", b": \x0b"])) + value)
    body = draw(st.sampled_from([b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n", b"0\r\n\r\n",
                                 b"3 ;e\r\nabc\r\n0\r\n\r\n", b"g\r\n", b"3\r\nabcX0\r\n\r\n",
                                 b"3\r\nabc\r\n0\r\nT: v\r\n\r\n", b"3\r\nabc\r\n0\r\nT v\r\n\r\n"]))
    return eol.join(lines) + eol + eol + body


SOUP = st.lists(st.one_of(st.sampled_from(PIECES + NAMES + VALUES), st.binary(max_size=6)),
                max_size=40).map(b"".join)


def test_fuzz_random_bytes(capsys):
    stats = Counter()
    FUZZ(given(st.binary(max_size=300) | SOUP)(lambda data: check(data, stats)))()
    report(capsys, "http random bytes and token soup", stats)


def test_fuzz_generated_requests(capsys):
    stats = Counter()
    FUZZ(given(generated())(lambda data: check(data, stats)))()
    report(capsys, "http generated", stats)


def test_fuzz_mutated_valid_requests(capsys):
    stats = Counter()
    FUZZ(given(st.sampled_from(VALID), EDITS)(lambda data, edits: check(mutate(data, edits), stats)))()
    report(capsys, "http mutated", stats)


def test_valid_corpus_is_accepted_like_h11():
    stats = Counter()
    for data in VALID:
        check(data, stats)
    assert stats["accepted"] == len(VALID)
