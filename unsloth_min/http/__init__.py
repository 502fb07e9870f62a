"""HTTP/1.1 layer: bytes <-> requests and responses. Knows nothing of LLMs or dialects.

`parser` is sans-IO (bytes in, `Request` out), `writer` its twin (responses out as bytes),
`fields` the field-value grammars the parser and the guard read, `server` runs both on asyncio
sockets, `sse` frames server-sent events for a `StreamResponse`.
"""

from .fields import host_name, is_token_list, parse_media_type
from .parser import HttpError, Limits, Request, RequestParser
from .server import ErrorRenderer, Handler, HttpServer
from .writer import Response, StreamResponse, default_error_response
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
    "host_name",
    "is_token_list",
    "parse_media_type",
    "sse_event",
]
