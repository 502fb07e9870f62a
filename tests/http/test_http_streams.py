"""The asyncio HTTP server's streams over raw TCP sockets: chunk framing, a client that leaves or
stops reading, an error mid-stream, shutdown with streams open, and SSE framing.
"""
import asyncio
import logging

import pytest

from support.aserver import (
    GET, WAIT, app, connect, exchange, read_head, read_response, started, with_server,
)
from unsloth_min.http import Limits, StreamResponse, sse_event


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


# --- shutdown ------------------------------------------------------------------------------------

def test_shutdown_ends_open_stream():
    tokens = BlockingTokens()

    async def handler(request):
        return StreamResponse(200, [], tokens)

    async def go():
        server = await started(handler)
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
    release, waiting = asyncio.Event(), asyncio.Event()

    async def handler(request):
        if request.path == "/wait":
            waiting.set()
            await release.wait()
        return await app(request)

    async def go():
        server = await started(handler)
        idle_reader, idle_writer = await connect(server)
        idle_writer.write(GET)
        await read_response(idle_reader)
        busy_reader, busy_writer = await connect(server)
        busy_writer.write(b"GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.wait_for(waiting.wait(), WAIT)
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
