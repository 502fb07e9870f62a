"""An asyncio HTTP server on 127.0.0.1 port 0 for the tests of unsloth_min.http, and the few
raw-socket reads they make (head, chunked body, one response) with asyncio streams.

Waits are bounded by `asyncio.wait_for(…, WAIT)`; `app` answers the paths the tests use.
"""
import asyncio
import socket

from unsloth_min.http import HttpError, HttpServer, Response, StreamResponse

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


async def started(handler=app, **kwargs) -> HttpServer:
    """A server listening on 127.0.0.1, on a port of its own; the caller shuts it down."""
    server = HttpServer(handler, **kwargs)
    await server.start("127.0.0.1", 0)
    return server


def with_server(main, handler=app, **kwargs):
    """Run `await main(server)` against a started server; shut it down afterwards."""
    async def go():
        server = await started(handler, **kwargs)
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
