"""HTTP/1.1 layer: bytes <-> requests and responses. Knows nothing of LLMs or dialects.

`parser` is sans-IO (bytes in, `Request` out), `server` runs it on asyncio sockets, `sse`
frames server-sent events for a `StreamResponse`.
"""

from .parser import HttpError, Limits, Request, RequestParser
from .server import (
    ErrorRenderer,
    Handler,
    HttpServer,
    Response,
    StreamResponse,
    default_error_response,
)
from .sse import SSE_HEADERS, sse_event

__all__ = [
    "ErrorRenderer",
    "Handler",
    "HttpError",
    "HttpServer",
    "Limits",
    "Request",
    "RequestParser",
    "Response",
    "SSE_HEADERS",
    "StreamResponse",
    "default_error_response",
    "sse_event",
]
