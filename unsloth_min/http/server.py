"""asyncio HTTP/1.1 server: one `Connection` object per socket owns its whole lifecycle.

Strategy: `HttpServer` accepts sockets with `asyncio.start_server` and runs one `Connection`
per socket (uvicorn style). A connection loops: read a request head under `header_timeout`
(the wait for its first byte is the `keepalive_timeout`), send `100 Continue` if asked — unless
the `screen` hook refuses the head first (a wrong key), read the body under `body_timeout`, then
`_respond()`. That runs the handler *and* writes its response in
one task, while a second task keeps reading the socket: bytes that arrive are fed to the parser
(pipelined requests, answered later in order), and EOF or a reset cancels the response task.
Cancelling it cancels the handler or ends the stream, and a `StreamResponse` body always gets
`aclose()` in a `finally`, so the app stops generating within one token. Every write is
followed by `drain()` under `write_timeout`. Once headers are out, an error can only end the
connection, never become a 500. Framing errors get one error response with
`Connection: close`, then a short lingering close so the client reads it instead of a reset.

What it does not do: no TLS, HTTP/2 or WebSocket upgrades; no routing, auth or compression;
no response validation beyond refusing CR/LF in headers. A client that half-closes its side
(`shutdown(SHUT_WR)`) after a request counts as gone — the usual trade-off that makes
disconnect detection possible. While a handler runs, reading ahead stops once
`PIPELINE_BUFFER` bytes wait in the parser (back-pressure); a failed write still ends it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Optional, Union

from .parser import HttpError, Limits, Request, RequestParser
from .writer import (CONTINUE, LAST_CHUNK, Response, StreamResponse, check_head, chunk,
                     default_error_response, head, render)

log = logging.getLogger("unsloth_min.http")
access_log = logging.getLogger("unsloth_min.access")

READ_CHUNK = 64 * 1024  # bytes per socket read
PIPELINE_BUFFER = 1024 * 1024  # read ahead at most this much while a response is produced
LINGER_TIMEOUT = 2.0  # after an error response, drop input this long before closing...
LINGER_BYTES = 1024 * 1024  # ...or this much, so the client sees the response, not a RST
CLIENT_GONE = 499  # access-log status when the client left before a response (nginx's code)


Handler = Callable[[Request], Awaitable[Union[Response, StreamResponse]]]
ErrorRenderer = Callable[[int, str], Response]
Screen = Callable[[Request], Optional[Response]]  # a refusal of a request head, or None


class HttpServer:
    def __init__(self, handler: Handler, *, limits: Limits = Limits(),
                 error_response: ErrorRenderer | None = None, server_header: str = "unsloth_min",
                 screen: Screen | None = None):
        self.handler = handler
        self.screen = screen  # asked before `100 Continue`: a client is not told to send a body
        # that would be refused anyway (RFC 9110 §10.1.1)
        self.limits = limits
        self.error_response = error_response or default_error_response
        self.server_header = server_header
        self.host: str | None = None
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[Connection] = set()
        self._stopping = False
        self._stopped = asyncio.Event()

    async def start(self, host: str, port: int, sock=None) -> None:
        """Listen on host:port, or on `sock`, an already listening socket (the supervisor's)."""
        if sock is not None:
            self._server = await asyncio.start_server(self._on_connect, sock=sock)
        else:
            self._server = await asyncio.start_server(self._on_connect, host, port)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        log.info("listening on http://%s:%d", self.host, self.port)

    async def serve_forever(self) -> None:
        """Wait until `shutdown()` has finished (the socket already serves after `start()`)."""
        await self._stopped.wait()

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop accepting, close idle connections, give in-flight responses `grace` seconds."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.stop()
        tasks = {conn.task for conn in self._connections if conn.task is not None}
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._server is not None:
            await self._server.wait_closed()
        self._stopped.set()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        conn = Connection(self, reader, writer)
        if self._stopping or len(self._connections) >= self.limits.max_connections:
            await conn.reject(503, "Too many connections" if not self._stopping else "Shutting down")
            return
        # A task of our own, so that shutdown can cancel it without the stream callback's task
        # ending cancelled (asyncio 3.11 logs that as an error).
        conn.task = asyncio.create_task(conn.run())
        self._connections.add(conn)
        try:
            await asyncio.wait({conn.task})
        finally:
            conn.task.cancel()  # a no-op once done; passes on a cancellation of this task
            self._connections.discard(conn)
        if not conn.task.cancelled() and conn.task.exception() is not None:
            log.error("connection failed", exc_info=conn.task.exception())


class Refused(Exception):
    """The screen's answer to a head that asked for `100 Continue`."""

    def __init__(self, request: Request, response: Response):
        super().__init__(response.status)
        self.request, self.response = request, response


class Connection:
    """One client socket: reads requests, runs the handler, writes responses, in order."""

    def __init__(self, server: HttpServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter):
        self.server, self.reader, self.writer = server, reader, writer
        self.limits = server.limits
        self.parser = RequestParser(server.limits)
        self.peer = writer.get_extra_info("peername")
        self.task: asyncio.Task | None = None
        self.idle = False  # waiting for the next request: shutdown closes it at once
        self.closing = False  # shutdown began: finish the current response, then close
        self._eof = False

    def stop(self) -> None:
        self.closing = True
        if self.idle and self.task is not None:
            self.task.cancel()

    async def run(self) -> None:
        linger = False
        try:
            while not self.closing:
                request = await self._read_request()
                if request is None or not await self._respond(request):
                    break
        except HttpError as err:
            linger = await self._send_error(err)
        except Refused as refused:  # its body was never asked for: answer, then close
            linger = await self._send_refusal(refused.request, refused.response)
        except (OSError, asyncio.TimeoutError):
            pass  # reset by the peer, or a write timed out
        finally:
            await self._close(linger)

    async def reject(self, status: int, message: str) -> None:
        linger = False
        try:
            linger = await self._send_error(HttpError(status, message))
        finally:
            await self._close(linger)

    # --- reading -------------------------------------------------------------------------

    async def _read_request(self) -> Request | None:
        """The next complete request, or None when the peer left or idled out."""
        if not self.parser.started:
            self.idle = True
            try:  # the idle wait for the first byte: a timeout or EOF closes silently
                if not await self._receive(self.limits.keepalive_timeout):
                    return None
            except asyncio.TimeoutError:
                return None
            finally:
                self.idle = False
        request = await self._fill(self.parser.maybe_head, self.limits.header_timeout, "headers")
        if request is None:
            return None
        request.peer = self.peer
        if self.parser.maybe_body() is None:
            if request.expects_continue:  # a too-large Content-Length was already a 413
                refusal = self.server.screen(request) if self.server.screen else None
                if refusal is not None:
                    raise Refused(request, refusal)
                await self._write(CONTINUE)
            if await self._fill(self.parser.maybe_body, self.limits.body_timeout, "body") is None:
                return None
        return request

    async def _fill(self, step: Callable, timeout: float, what: str):
        """Read until `step()` gives a result within `timeout` (else 408); None on EOF."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (result := step()) is None:
            try:
                left = deadline - asyncio.get_running_loop().time()
                if not await self._receive(left):
                    return None
            except asyncio.TimeoutError:
                raise HttpError(408, f"Timed out reading the request {what}") from None
        return result

    async def _receive(self, timeout: float | None) -> bool:
        """Feed the parser one read; False on EOF or reset."""
        if self._eof:
            return False
        try:
            timeout = None if timeout is None else max(timeout, 0)
            data = await asyncio.wait_for(self.reader.read(READ_CHUNK), timeout)
        except ConnectionError:
            data = b""
        if not data:
            self._eof = True
            return False
        self.parser.feed(data)
        return True

    async def _watch_peer(self) -> None:
        """Read ahead while a response is produced; returns when the peer is gone."""
        while self.parser.buffered < PIPELINE_BUFFER:
            if not await self._receive(None):
                return
        await asyncio.Event().wait()  # back-pressure: stop reading until cancelled

    # --- responding ----------------------------------------------------------------------

    async def _respond(self, request: Request) -> bool:
        """Handle one request while watching the socket; True to keep the connection."""
        handling = asyncio.create_task(self._handle(request))
        watcher = asyncio.create_task(self._watch_peer())
        try:
            await asyncio.wait({handling, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            handling.cancel()  # a no-op when it finished; else the peer left or we shut down
            await asyncio.wait({handling, watcher})
        if handling.cancelled():
            return False
        error = handling.exception()
        if error is not None and not isinstance(error, (OSError, asyncio.TimeoutError)):
            log.error("writing the response failed", exc_info=error)
        return error is None and handling.result()

    async def _handle(self, request: Request) -> bool:
        started, status = time.monotonic(), CLIENT_GONE
        try:
            response = await self._call_handler(request)
            status = response.status
            keep = self._keep_alive(request, response)
            if isinstance(response, StreamResponse):
                return await self._send_stream(request, response, keep)
            head_only = request.method == "HEAD"
            await self._write(render(response, keep, self.server.server_header, head_only))
            return keep
        finally:
            host = self.peer[0] if self.peer else "-"
            access_log.info("%s %s %s %d %.3fs %s", host, request.method, request.path, status,
                            time.monotonic() - started, request.context.get("log", ""))

    async def _call_handler(self, request: Request) -> Response | StreamResponse:
        """The handler's response; a 500 (or its HttpError) when it fails."""
        try:
            response = await self.server.handler(request)
            if not isinstance(response, (Response, StreamResponse)):
                raise TypeError(f"handler returned {type(response).__name__}")
            check_head(response.status, response.headers)
            return response
        except HttpError as err:
            return self.server.error_response(err.status, err.message)
        except Exception:
            log.exception("handler failed: %s %s", request.method, request.path)
            return self.server.error_response(500, "Internal server error")

    def _keep_alive(self, request: Request, response: Response | StreamResponse) -> bool:
        if self.closing or not request.keep_alive:
            return False
        if any(n.lower() == "connection" and "close" in v.lower() for n, v in response.headers):
            return False
        # RFC 9112 §6.3 rule 8: without chunked coding, an HTTP/1.0 stream ends at close.
        return not (isinstance(response, StreamResponse) and request.version == "HTTP/1.0")

    async def _send_stream(self, request: Request, response: StreamResponse, keep: bool) -> bool:
        chunked = request.version == "HTTP/1.1"
        framing = [("Transfer-Encoding", "chunked")] if chunked else []
        body = response.body
        try:
            await self._write(head(response.status, response.headers, keep, framing,
                                   self.server.server_header))
            if request.method == "HEAD":
                return keep
            async for item in body:
                if item:  # an empty chunk would end the stream (RFC 9112 §7.1)
                    item = item.encode() if isinstance(item, str) else bytes(item)
                    await self._write(chunk(item) if chunked else item)
            if chunked:
                await self._write(LAST_CHUNK)
            return keep
        except Exception:
            if self.writer.transport.is_closing():
                raise  # the peer left or stopped reading: nothing to report
            # Headers are out: no 500 now; the missing final chunk tells it was cut short.
            log.exception("stream failed: %s %s", request.method, request.path)
            return False
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    log.exception("closing the stream body failed")

    async def _send_error(self, err: HttpError) -> bool:
        """Send a framing error with Connection: close; True if it was written."""
        log.info("%s rejected: %d %s", self.peer[0] if self.peer else "-", err.status, err.message)
        return await self._send_last(self.server.error_response(err.status, err.message))

    async def _send_refusal(self, request: Request, response: Response) -> bool:
        host = self.peer[0] if self.peer else "-"
        access_log.info("%s %s %s %d before 100-continue", host, request.method, request.path,
                        response.status)
        return await self._send_last(response)

    async def _send_last(self, response: Response) -> bool:
        """The connection's last response, with Connection: close; True if it was written."""
        try:
            await self._write(render(response, False, self.server.server_header))
        except (OSError, asyncio.TimeoutError):
            return False
        return True

    async def _write(self, data: bytes) -> None:
        self.writer.write(data)
        if not self.writer.transport.get_write_buffer_size() and not self.writer.transport.is_closing():
            return  # the socket took it all: nothing to drain (and no task per streamed token)
        try:
            await asyncio.wait_for(self.writer.drain(), self.limits.write_timeout)
        except asyncio.TimeoutError:
            self.writer.transport.abort()  # the client stopped reading: drop what is queued
            raise

    async def _close(self, linger: bool) -> None:
        try:
            if linger and not self._eof and self.writer.can_write_eof():
                self.writer.write_eof()
                await self._drop_input()
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), self.limits.write_timeout)
        except (OSError, asyncio.TimeoutError):
            self.writer.transport.abort()

    async def _drop_input(self) -> None:
        """Lingering close: read until EOF so unread input does not turn into a RST."""
        loop = asyncio.get_running_loop()
        deadline, dropped = loop.time() + LINGER_TIMEOUT, 0
        while dropped < LINGER_BYTES:
            try:
                data = await asyncio.wait_for(self.reader.read(READ_CHUNK), deadline - loop.time())
            except asyncio.TimeoutError:
                return
            if not data:
                return
            dropped += len(data)
