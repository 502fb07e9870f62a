"""The asyncio HTTP server over raw TCP sockets: plain requests, errors and limits.

Every test runs a real server on 127.0.0.1 port 0 inside `asyncio.run` (support/aserver.py);
timeouts come from small `Limits` values, never from long sleeps. Streams, disconnects, shutdown
and SSE framing: test_http_streams.py.
"""
import asyncio
import json
import logging
import re

import pytest

from support.aserver import GET, app, connect, exchange, read_response, with_server
from unsloth_min.http import Limits, Response


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
