"""The asyncio HTTP server over raw TCP sockets, plus SSE framing.

Every test runs a real server on 127.0.0.1 port 0 inside `asyncio.run`; waits are bounded by
`asyncio.wait_for`, and timeouts come from small `Limits` values, never from long sleeps.
"""

import asyncio
import json
import logging
import re
import socket

import pytest

from unsloth_min.http import (
    HttpError, HttpServer, Limits, Response, StreamResponse, sse_event,
)

WAIT = 5.0  # upper bound for anything a test waits on; normally done in milliseconds


async def app(request):
    if request.path == "/stream":
        return StreamResponse(200, [("Content-Type", "text/plain")], _items(b"hello", b"", b" world"))
    if request.path == "/slow":
        await asyncio.sleep(0.05)
    if request.path == "/teapot":
        raise HttpError(418, "short and stout")
    if request.path == "/boom":
        raise RuntimeError("boom")
    if request.path == "/empty":
        return Response(204)
    request.context["log"] = "model=m"
    body = f"{request.method} {request.target} ".encode() + request.body
    return Response(200, [("Content-Type", "text/plain")], body)


async def _items(*items):
    for item in items:
        yield item


def with_server(main, handler=app, **kwargs):
    """Run `await main(server)` against a started server; shut it down afterwards."""
    async def go():
        server = HttpServer(handler, **kwargs)
        await server.start("127.0.0.1", 0)
        try:
            return await asyncio.wait_for(main(server), WAIT)
        finally:
            await asyncio.wait_for(server.shutdown(grace=0.5), WAIT)
    return asyncio.run(go())


async def connect(server, rcvbuf=None):
    if rcvbuf is None:
        return await asyncio.open_connection(server.host, server.port)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((server.host, server.port))
    return await asyncio.open_connection(sock=sock)


async def read_head(reader):
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")[:-2]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers


async def read_chunked(reader):
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
        body += (await reader.readexactly(size + 2))[:-2]
        if size == 0:
            return body


async def read_response(reader, head_only=False):
    status, headers = await read_head(reader)
    if head_only or status == 204:
        return status, headers, b""
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding") == "chunked":
        return status, headers, await read_chunked(reader)
    return status, headers, await reader.read()


async def exchange(server, data: bytes):
    """Send `data` on a new connection; the first response and whether the server then closed."""
    reader, writer = await connect(server)
    writer.write(data)
    response = await read_response(reader)
    closed = await reader.read() == b""
    writer.close()
    return response, closed


GET = b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n"


# --- plain requests -------------------------------------------------------------------------

def test_get():
    async def main(server):
        reader, writer = await connect(server)
        writer.write(GET)
        status, headers, body = await read_response(reader)
        assert (status, body) == (200, b"GET /hello ")
        assert headers["content-length"] == "11" and headers["connection"] == "keep-alive"
        assert headers["server"] == "unsloth_min" and headers["date"].endswith("GMT")
        writer.close()
    with_server(main)


def test_post_content_length_and_chunked():
    async def main(server):
        reader, writer = await connect(server)
        writer.write(b"POST /e?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        assert (await read_response(reader))[2] == b"POST /e?q=1 hello"
        writer.write(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n")
        assert (await read_response(reader))[2] == b"POST /c abcde"
        writer.close()
    with_server(main)


def test_pipelined_requests_answered_in_order():
    async def main(server):
        reader, writer = await connect(server)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n" + GET
                     + b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok")
        bodies = [(await read_response(reader))[2] for _ in range(3)]
        assert bodies == [b"GET /slow ", b"GET /hello ", b"POST /p ok"]
        writer.close()
    with_server(main)


def test_request_sent_while_handler_runs_is_kept():
    release = asyncio.Event()

    async def handler(request):
        if request.path == "/wait":
            await release.wait()
        return await app(request)

    async def main(server):
        reader, writer = await connect(server)
        writer.write(b"GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0)
        writer.write(GET)  # read by the disconnect watcher, fed to the parser
        await writer.drain()
        release.set()
        assert (await read_response(reader))[2] == b"GET /wait "
        assert (await read_response(reader))[2] == b"GET /hello "
        writer.close()
    with_server(main, handler)


def test_head_has_headers_but_no_body():
    async def main(server):
        reader, writer = await connect(server)
        writer.write(b"HEAD /hello HTTP/1.1\r\nHost: a\r\n\r\n" + GET)
        status, headers, _ = await read_response(reader, head_only=True)
        assert status == 200 and headers["content-length"] == "12"  # len(b"HEAD /hello ")
        assert (await read_response(reader))[2] == b"GET /hello "  # no stray body bytes
        writer.close()
    with_server(main)


def test_204_has_no_content_length():
    async def main(server):
        (status, headers, _), _ = await exchange(server, b"GET /empty HTTP/1.1\r\nHost: a\r\n"
                                                  b"Connection: close\r\n\r\n")
        assert status == 204 and "content-length" not in headers
    with_server(main)


def test_expect_100_continue():
    async def main(server):
        reader, writer = await connect(server)
        writer.write(b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert await reader.readexactly(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"data")
        assert (await read_response(reader))[2] == b"POST /u data"
        writer.close()
    with_server(main)


def test_expect_100_continue_over_limit_gets_413_at_once():
    async def main(server):
        (status, headers, _), closed = await exchange(
            server, b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n"
                    b"Expect: 100-continue\r\n\r\n")
        assert status == 413 and headers["connection"] == "close" and closed
    with_server(main, limits=Limits(max_body=10))


def test_keep_alive_reuse_and_connection_close():
    peers = []

    async def handler(request):
        peers.append(request.peer)
        return await app(request)

    async def main(server):
        reader, writer = await connect(server)
        for _ in range(3):
            writer.write(GET)
            assert (await read_response(reader))[1]["connection"] == "keep-alive"
        writer.write(b"GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        status, headers, _ = await read_response(reader)
        assert headers["connection"] == "close" and await reader.read() == b""
        assert len(set(peers)) == 1 and peers[0] == writer.get_extra_info("sockname")
        writer.close()
    with_server(main, handler)


def test_http10_closes_unless_keep_alive():
    async def main(server):
        (_, headers, body), closed = await exchange(server, b"GET /hello HTTP/1.0\r\n\r\n")
        assert headers["connection"] == "close" and closed and body == b"GET /hello "
        reader, writer = await connect(server)
        writer.write(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert (await read_response(reader))[1]["connection"] == "keep-alive"
        writer.close()
    with_server(main)


# --- streaming --------------------------------------------------------------------------------

def test_stream_exact_chunk_framing():
    async def main(server):
        reader, writer = await connect(server)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        status, headers = await read_head(reader)
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        assert "content-length" not in headers and headers["connection"] == "close"
        # the empty item is skipped: an empty chunk would end the stream
        assert await reader.read() == b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        writer.close()
    with_server(main)


def test_stream_then_keep_alive_request():
    async def main(server):
        reader, writer = await connect(server)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n" + GET)
        assert (await read_response(reader))[2] == b"hello world"
        assert (await read_response(reader))[2] == b"GET /hello "
        writer.close()
    with_server(main)


def test_stream_over_http10_is_close_delimited():
    async def main(server):
        (status, headers, body), closed = await exchange(
            server, b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert "transfer-encoding" not in headers and headers["connection"] == "close"
        assert body == b"hello world" and closed
    with_server(main)


class BlockingTokens:
    """A stream body that yields one token, then blocks until cancelled; records aclose()."""

    def __init__(self):
        self.cancelled, self.closed, self.started = asyncio.Event(), asyncio.Event(), False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if not self.started:
            self.started = True
            return b"tok"
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def aclose(self):
        self.closed.set()


def test_client_disconnect_mid_stream_cancels_and_closes_body():
    tokens = BlockingTokens()

    async def handler(request):
        return StreamResponse(200, [], tokens)

    async def main(server):
        reader, writer = await connect(server)
        writer.write(GET)
        await read_head(reader)
        assert await reader.readexactly(8) == b"3\r\ntok\r\n"
        writer.close()
        await asyncio.wait_for(tokens.cancelled.wait(), WAIT)
        await asyncio.wait_for(tokens.closed.wait(), WAIT)
    with_server(main, handler)


def test_client_disconnect_cancels_waiting_handler():
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(request):
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main(server):
        reader, writer = await connect(server)
        writer.write(GET)
        await asyncio.wait_for(started.wait(), WAIT)
        writer.close()
        await asyncio.wait_for(cancelled.wait(), WAIT)
    with_server(main, handler)


def test_error_mid_stream_ends_connection_without_500(caplog):
    async def failing():
        yield b"a"
        raise RuntimeError("generation failed")

    async def handler(request):
        return StreamResponse(200, [], failing())

    async def main(server):
        reader, writer = await connect(server)
        writer.write(GET)
        status, _ = await read_head(reader)
        assert status == 200
        assert await reader.read() == b"1\r\na\r\n"  # no final chunk: the client sees it cut short
        writer.close()
    with caplog.at_level(logging.ERROR, logger="unsloth_min.http"):
        with_server(main, handler)
    assert any("stream failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_client_that_stops_reading_hits_write_timeout():
    closed = asyncio.Event()

    async def endless():
        try:
            while True:
                yield b"x" * 256 * 1024
        finally:
            closed.set()

    async def handler(request):
        return StreamResponse(200, [], endless())

    async def main(server):
        reader, writer = await connect(server, rcvbuf=4096)
        writer.write(GET)
        await asyncio.wait_for(closed.wait(), WAIT)  # never read a byte
        writer.close()
    with_server(main, handler, limits=Limits(write_timeout=0.2))


# --- errors and limits ---------------------------------------------------------------------------

SMALL = Limits(max_request_line=64, max_header_bytes=256, max_headers=5, max_body=100)


@pytest.mark.parametrize("data, status", [
    (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 300 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: v\r\n" * 6 + b"\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n80\r\n", 413),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: a\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
])
def test_framing_errors_over_the_socket(data, status):
    async def main(server):
        (got, headers, body), closed = await exchange(server, data)
        assert got == status and headers["connection"] == "close" and closed
        assert json.loads(body)["error"]["type"] == "invalid_request_error"
    with_server(main, limits=SMALL)


def test_custom_error_response():
    def render(status, message):
        return Response(status, [("Content-Type", "text/plain")], f"custom {status}".encode())

    async def main(server):
        (status, headers, body), closed = await exchange(server, b"GET / HTTP/1.1\r\n\r\n")
        assert (status, body, closed) == (400, b"custom 400", True)
        assert headers["content-type"] == "text/plain"
        (status, _, body), closed = await exchange(
            server, b"GET /boom HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert (status, body, closed) == (500, b"custom 500", True)
    with_server(main, error_response=render)


def test_handler_exception_is_500_and_logged(caplog):
    async def main(server):
        reader, writer = await connect(server)
        writer.write(b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\n" + GET)
        status, _, body = await read_response(reader)
        assert status == 500 and json.loads(body)["error"]["message"] == "Internal server error"
        assert (await read_response(reader))[0] == 200  # the connection survives
        writer.close()
    with caplog.at_level(logging.ERROR, logger="unsloth_min.http"):
        with_server(main)
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


def test_handler_http_error_and_bad_headers():
    async def bad(request):
        if request.path == "/inject":
            return Response(200, [("X", "a\r\nSet-Cookie: b")])
        return await app(request)

    async def main(server):
        close = b"Host: a\r\nConnection: close\r\n\r\n"
        (status, _, body), _ = await exchange(server, b"GET /teapot HTTP/1.1\r\n" + close)
        assert status == 418 and json.loads(body)["error"]["message"] == "short and stout"
        (status, headers, _), _ = await exchange(server, b"GET /inject HTTP/1.1\r\n" + close)
        assert status == 500 and "set-cookie" not in headers
    with_server(main, bad)


def test_header_timeout_is_408():
    async def main(server):
        (status, headers, _), closed = await exchange(server, b"GET / HTTP/1.1\r\nHost:")
        assert status == 408 and headers["connection"] == "close" and closed
    with_server(main, limits=Limits(header_timeout=0.2))


def test_body_timeout_is_408():
    async def main(server):
        data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"
        (status, _, _), closed = await exchange(server, data)
        assert status == 408 and closed
    with_server(main, limits=Limits(body_timeout=0.2))


def test_idle_keep_alive_closes_silently():
    async def main(server):
        reader, writer = await connect(server)
        writer.write(GET)
        await read_response(reader)
        assert await reader.read() == b""  # closed after keepalive_timeout, no bytes sent
        writer.close()
    with_server(main, limits=Limits(keepalive_timeout=0.2))


def test_max_connections_gets_503():
    async def main(server):
        reader, writer = await connect(server)
        writer.write(GET)
        await read_response(reader)  # the first connection is registered and kept alive
        (status, headers, _), closed = await exchange(server, GET)
        assert status == 503 and headers["connection"] == "close" and closed
        writer.write(GET)
        assert (await read_response(reader))[0] == 200
        writer.close()
    with_server(main, limits=Limits(max_connections=1))


def test_access_log_line(caplog):
    async def main(server):
        (status, _, _), _ = await exchange(
            server, b"GET /hello?k=v HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer sk-secret\r\n"
                    b"Connection: close\r\n\r\n")
        assert status == 200
    with caplog.at_level(logging.INFO, logger="unsloth_min.access"):
        with_server(main)
    lines = [r.getMessage() for r in caplog.records if r.name == "unsloth_min.access"]
    assert len(lines) == 1
    assert re.fullmatch(r"127\.0\.0\.1 GET /hello 200 \d+\.\d{3}s model=m", lines[0])
    assert not any("sk-secret" in r.getMessage() for r in caplog.records)


# --- shutdown ------------------------------------------------------------------------------------

def test_shutdown_ends_open_stream():
    tokens = BlockingTokens()

    async def handler(request):
        return StreamResponse(200, [], tokens)

    async def go():
        server = HttpServer(handler)
        await server.start("127.0.0.1", 0)
        reader, writer = await connect(server)
        writer.write(GET)
        await read_head(reader)
        assert await reader.readexactly(8) == b"3\r\ntok\r\n"
        await asyncio.wait_for(server.shutdown(grace=0.1), WAIT)
        assert tokens.cancelled.is_set() and tokens.closed.is_set()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
        with pytest.raises(OSError):
            await connect(server)
    asyncio.run(go())


def test_shutdown_lets_in_flight_finish_and_closes_idle():
    release, started = asyncio.Event(), asyncio.Event()

    async def handler(request):
        if request.path == "/wait":
            started.set()
            await release.wait()
        return await app(request)

    async def go():
        server = HttpServer(handler)
        await server.start("127.0.0.1", 0)
        idle_reader, idle_writer = await connect(server)
        idle_writer.write(GET)
        await read_response(idle_reader)
        busy_reader, busy_writer = await connect(server)
        busy_writer.write(b"GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.wait_for(started.wait(), WAIT)
        stopping = asyncio.create_task(server.shutdown(grace=WAIT))
        serving = asyncio.create_task(server.serve_forever())
        assert await asyncio.wait_for(idle_reader.read(), WAIT) == b""  # idle: closed at once
        release.set()
        _, headers, body = await asyncio.wait_for(read_response(busy_reader), WAIT)
        assert body == b"GET /wait " and headers["connection"] == "close"
        await asyncio.wait_for(asyncio.gather(stopping, serving), WAIT)
        idle_writer.close()
        busy_writer.close()
    asyncio.run(go())


# --- SSE -----------------------------------------------------------------------------------------

def test_sse_event():
    assert sse_event({"a": "é", "b": [1, 2]}) == 'data: {"a":"é","b":[1,2]}\n\n'.encode()
    assert sse_event([1], event="ping") == b"event: ping\ndata: [1]\n\n"
    assert sse_event("one\ntwo\r\nthree\rfour") == (
        b"data: one\ndata: two\ndata: three\ndata: four\n\n")
    assert sse_event("[DONE]") == b"data: [DONE]\n\n"
    assert sse_event("a\u2028b") == "data: a\u2028b\n\n".encode()  # not an SSE line end
    with pytest.raises(ValueError):
        sse_event("x", event="a\nb")
