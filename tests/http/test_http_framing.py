"""RFC 9112 framing, probed over raw sockets against the whole app (scripted engine).

Strategy: every probe is a request a lenient server would answer 200 (a valid key, a valid JSON chat body)
but for one framing fault; it must get the stated status, `Connection: close`, and a closed socket.
The positive cases — chunked bodies, pipelining, 100-continue, HEAD — check the answers too.
"""
from __future__ import annotations

import json

import pytest

from support.servers import KEY
from support.rawhttp import Conn, exchange

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
START = b"POST /v1/chat/completions HTTP/1.1\r\n"
HEAD = (b"Host: localhost\r\nContent-Type: application/json\r\nAuthorization: Bearer "
        + KEY.encode() + b"\r\n")
CL = b"Content-Length: %d\r\n" % len(BODY)
TE = b"Transfer-Encoding: chunked\r\n"


def chunked(body: bytes, size: bytes = b"%x" % len(BODY), end: bytes = b"\r\n0\r\n\r\n") -> bytes:
    return size + b"\r\n" + body + end


VALID_CHUNKED = START + HEAD + TE + b"\r\n" + chunked(BODY)

FRAMING = {
    "CL and TE": (START + HEAD + CL + TE + b"\r\n" + chunked(BODY), 400),
    "TE and CL": (START + HEAD + TE + CL + b"\r\n" + BODY, 400),
    "two equal CL": (START + HEAD + CL + CL + b"\r\n" + BODY, 400),
    "two CL": (START + HEAD + CL + b"Content-Length: 0\r\n\r\n" + BODY, 400),
    "CL list": (START + HEAD + b"Content-Length: %d, %d\r\n\r\n" % (len(BODY), len(BODY)) + BODY, 400),
    "CL +": (START + HEAD + b"Content-Length: +%d\r\n\r\n" % len(BODY) + BODY, 400),
    "CL _": (START + HEAD + b"Content-Length: 1_0\r\n\r\n" + BODY[:10], 400),
    "CL space": (START + HEAD + b"Content-Length:  %d\r\n\r\n" % len(BODY) + BODY, 400),
    "CL hex": (START + HEAD + b"Content-Length: 0x%x\r\n\r\n" % len(BODY) + BODY, 400),
    "CL negative": (START + HEAD + b"Content-Length: -1\r\n\r\n", 400),
    "CL 20 digits": (START + HEAD + b"Content-Length: 00000000000000000001\r\n\r\nx", 400),
    "TE gzip": (START + HEAD + b"Transfer-Encoding: gzip\r\n\r\n" + BODY, 501),
    "TE gzip, chunked": (START + HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + chunked(BODY), 501),
    "TE identity": (START + HEAD + b"Transfer-Encoding: identity\r\n\r\n" + BODY, 501),
    "TE twice": (START + HEAD + TE + TE + b"\r\n" + chunked(BODY), 501),
    "TE chunkedx": (START + HEAD + b"Transfer-Encoding: chunkedx\r\n\r\n" + chunked(BODY), 501),
    "chunk 0x": (START + HEAD + TE + b"\r\n" + chunked(BODY, b"0x%x" % len(BODY)), 400),
    "chunk +": (START + HEAD + TE + b"\r\n" + chunked(BODY, b"+%x" % len(BODY)), 400),
    "chunk no CRLF": (START + HEAD + TE + b"\r\n" + chunked(BODY + b"X"), 400),
    "chunk short": (START + HEAD + TE + b"\r\n" + chunked(BODY[:-1]), 400),
    "chunk ext cap": (START + HEAD + TE + b"\r\n" + chunked(BODY, b"%x;e=" % len(BODY) + b"x" * 2000), 400),
    "trailer cap": (START + HEAD + TE + b"\r\n" + chunked(BODY, end=b"\r\n0\r\nT: " + b"t" * 17000
                                                          + b"\r\n\r\n"), 431),
    "bare LF": (START[:-2] + b"\n" + HEAD + CL + b"\r\n" + BODY, 400),
    "bare LF in headers": (START + HEAD + CL[:-2] + b"\n\r\n" + BODY, 400),
    "bare CR": (START + HEAD + b"X: a\rb\r\n" + CL + b"\r\n" + BODY, 400),
    "obs-fold": (START + HEAD + b"X: a\r\n b\r\n" + CL + b"\r\n" + BODY, 400),
    "space before colon": (START + HEAD + b"Content-Length : %d\r\n\r\n" % len(BODY) + BODY, 400),
    "tab before colon": (START + HEAD + b"X\t: a\r\n" + CL + b"\r\n" + BODY, 400),
    "NUL in value": (START + HEAD + b"X: a\x00b\r\n" + CL + b"\r\n" + BODY, 400),
    "ESC in value": (START + HEAD + b"X: a\x1b[0m\r\n" + CL + b"\r\n" + BODY, 400),
    "control in name": (START + HEAD + b"X\x01: a\r\n" + CL + b"\r\n" + BODY, 400),
    "missing Host": (START + HEAD.replace(b"Host: localhost\r\n", b"") + CL + b"\r\n" + BODY, 400),
    "repeated Host": (START + HEAD + b"Host: localhost\r\n" + CL + b"\r\n" + BODY, 400),
    "invalid Host": (START + HEAD.replace(b"localhost", b"local host") + CL + b"\r\n" + BODY, 400),
    "request line": (b"POST /v1/chat/completions?" + b"q" * 9000 + b" HTTP/1.1\r\n" + HEAD + CL
                     + b"\r\n" + BODY, 414),
    "header block": (START + HEAD + b"X-Pad: " + b"p" * 17000 + b"\r\n" + CL + b"\r\n" + BODY, 431),
    "many headers": (START + HEAD + b"X: 1\r\n" * 101 + CL + b"\r\n" + BODY, 431),
    "declared body": (START + HEAD + b"Content-Length: 67108865\r\n\r\n", 413),
    "chunked body": (START + HEAD + TE + b"\r\n4000001\r\n", 413),
    "HTTP/2.0": (START.replace(b"1.1", b"2.0") + HEAD + CL + b"\r\n" + BODY, 505),
    "HTTP/3": (START.replace(b"1.1", b"3") + HEAD + CL + b"\r\n" + BODY, 505),
    "h2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    "Expect": (START + HEAD + b"Expect: 200-ok\r\n" + CL + b"\r\n" + BODY, 417),
}


@pytest.mark.parametrize("name", FRAMING)
def test_framing_fault(scripted_server, name):
    data, status = FRAMING[name]
    reply, closed = exchange(scripted_server.host, scripted_server.port, data)
    assert reply.status == status
    assert reply.headers["connection"] == "close" and closed
    assert json.loads(reply.body)["error"]["message"]
    assert scripted_server.engine.history == []


def test_valid_chunked_body_with_extensions_and_trailers(scripted_server):
    scripted_server.engine.enqueue(["chunked ", "ok"])
    data = START + HEAD + TE + b"\r\n" + b"3;a=b\r\n" + BODY[:3] + b"\r\n" + b"%X ; c\r\n" % (
        len(BODY) - 3) + BODY[3:] + b"\r\n0\r\nX-Checksum: 1\r\n\r\n"
    reply, closed = exchange(scripted_server.host, scripted_server.port, data)
    assert reply.status == 200 and not closed
    assert json.loads(reply.body)["choices"][0]["message"]["content"] == "chunked ok"


def test_pipelined_requests_answered_in_order(scripted_server):
    scripted_server.engine.enqueue(["one"], delay=0.05)
    scripted_server.engine.enqueue(["two"])
    stream = json.dumps({"messages": [{"role": "user", "content": "x"}], "stream": True}).encode()
    with Conn(scripted_server.host, scripted_server.port) as conn:
        conn.send(START + HEAD + CL + b"\r\n" + BODY + VALID_CHUNKED
                  + START + HEAD + b"Content-Length: %d\r\n\r\n" % len(stream) + stream
                  + b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
                  + KEY.encode() + b"\r\nConnection: close\r\n\r\n")
        first, second, third, fourth = (conn.reply() for _ in range(4))
        assert json.loads(first.body)["choices"][0]["message"]["content"] == "one"
        assert json.loads(second.body)["choices"][0]["message"]["content"] == "two"
        assert third.headers["content-type"].startswith("text/event-stream")
        assert third.body.endswith(b"data: [DONE]\n\n")
        assert json.loads(fourth.body)["object"] == "list" and fourth.headers["connection"] == "close"
        assert conn.closed()


def test_expect_100_continue(scripted_server):
    with Conn(scripted_server.host, scripted_server.port) as conn:
        conn.send(START + HEAD + CL + b"Expect: 100-continue\r\n\r\n")
        assert conn._until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue"
        conn.send(BODY)
        assert conn.reply().status == 200
        conn.send(START + HEAD + b"Content-Length: 67108865\r\nExpect: 100-continue\r\n\r\n")
        reply = conn.reply()  # refused at once: no 100, and no body is waited for
        assert reply.status == 413 and reply.headers["connection"] == "close" and conn.closed()


@pytest.mark.parametrize("path, head, status, shape", [
    (b"/v1/chat/completions", HEAD.replace(KEY.encode(), b"sk-wrong"), 401, "error"),
    (b"/v1/messages", HEAD.replace(b"Authorization: Bearer " + KEY.encode(), b"x-api-key: nope"), 401,
     "type"),
    (b"/v1/chat/completions", HEAD.replace(b"application/json", b"text/plain"), 415, "error"),
    (b"/v1/chat/completions", HEAD.replace(b"Host: localhost", b"Host: evil.example"), 403, "error"),
])
def test_expect_100_continue_is_refused_before_the_body(scripted_server, path, head, status, shape):
    """RFC 9110 §10.1.1: a head the server would refuse gets its final answer instead of 100,
    in the route's error shape, and the body is never asked for."""
    with Conn(scripted_server.host, scripted_server.port) as conn:
        conn.send(b"POST " + path + b" HTTP/1.1\r\n" + head + CL + b"Expect: 100-continue\r\n\r\n")
        reply = conn.reply()
        assert reply.status == status and reply.headers["connection"] == "close"
        assert shape in json.loads(reply.body) and conn.closed()


def test_head(scripted_server):
    get = b"GET /v1/models HTTP/1.1\r\n" + HEAD
    with Conn(scripted_server.host, scripted_server.port) as conn:
        conn.send(get.replace(b"GET", b"HEAD", 1) + b"\r\n" + get + b"\r\n")
        head, full = conn.reply(head_only=True), conn.reply()
        assert head.status == full.status == 200
        assert int(head.headers["content-length"]) == len(full.body) > 0
        conn.send(b"HEAD /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
                  b"HEAD /v1/chat/completions HTTP/1.1\r\n" + HEAD + b"\r\n" + get + b"\r\n")
        assert conn.reply(head_only=True).status == 200
        wrong = conn.reply(head_only=True)
        assert wrong.status == 405 and wrong.headers["allow"] == "POST"
        assert conn.reply().body == full.body  # no stray body bytes after either HEAD
