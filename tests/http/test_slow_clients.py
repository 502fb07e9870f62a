"""Slow, idle and greedy clients against the whole app (scripted engine), over raw sockets.

Strategy: timeouts are small `Limits` values, so nothing here sleeps long: a slowloris drip gets 408 once
the header deadline passes however steadily it drips; a stalled body gets 408; idle connections
are closed silently; the connection cap answers 503; a client that stops reading its stream is
dropped after the write timeout and its generation is cancelled.
"""
from __future__ import annotations

import dataclasses
import json
import select
import socket
import time

from support.servers import KEY, serve_scripted, wait_for
from support.rawhttp import Conn, exchange
from unsloth_min.http import Limits

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
HEAD = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\n")
REQUEST = HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY
FAST = Limits(header_timeout=0.5, body_timeout=0.5, keepalive_timeout=0.5, write_timeout=0.3,
              max_connections=8)


def test_slowloris_drip_gets_408_at_the_header_deadline():
    with serve_scripted(FAST) as server, Conn(server.host, server.port) as conn:
        started = time.monotonic()
        for byte in REQUEST[:-len(BODY) - 4]:  # never the blank line that ends the head
            if select.select([conn.sock], [], [], 0.02)[0]:  # each byte well within any
                break  # per-read timeout; stop once the server has answered
            conn.send(bytes([byte]))
        reply = conn.reply()
        assert reply.status == 408 and reply.headers["connection"] == "close"
        assert 0.4 < time.monotonic() - started < 2.0 and conn.closed()
        assert server.engine.history == []


def test_stalled_body_gets_408():
    with serve_scripted(FAST) as server:
        reply, closed = exchange(server.host, server.port, REQUEST[:-5])
        assert reply.status == 408 and closed and server.engine.history == []


def test_idle_connections_close_silently():
    with serve_scripted(FAST) as server:
        with Conn(server.host, server.port) as silent, Conn(server.host, server.port) as kept:
            kept.send(REQUEST)
            assert kept.reply().headers["connection"] == "keep-alive"
            started = time.monotonic()
            assert silent.closed() and kept.closed()  # EOF, no bytes: nothing was sent to them
            assert time.monotonic() - started < 3.0


def test_connection_cap_gets_503_then_recovers():
    with serve_scripted(dataclasses.replace(FAST, keepalive_timeout=5)) as server:
        held = [Conn(server.host, server.port) for _ in range(8)]
        held[0].send(REQUEST)
        assert held[0].reply().status == 200  # the server has registered them
        reply, closed = exchange(server.host, server.port, REQUEST)
        assert reply.status == 503 and closed
        assert json.loads(reply.body)["error"]["type"] == "server_error"
        for conn in held:
            conn.close()
        assert wait_for(lambda: exchange(server.host, server.port, REQUEST)[0].status == 200)


def test_stream_reader_that_stops_reading_is_dropped_and_cancelled():
    with serve_scripted(FAST) as server:
        server.engine.enqueue(["x" * 65536] * 1000)  # 64 MiB: far more than socket buffers
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((server.host, server.port))
        stream = json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
        sock.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % len(stream) + stream)
        # never read: the server's writes stall, write_timeout fires, the generation is cancelled
        assert wait_for(lambda: server.engine.cancelled == 1)
        assert server.engine.finished == 0
        sock.close()
        reply, _ = exchange(server.host, server.port, REQUEST)  # the server is fine
        assert reply.status == 200 and server.engine.finished == 1
