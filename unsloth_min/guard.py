"""Browser-borne attacks: which Host, which Origin, which body type a request may carry.

Strategy: a browser on any web page can reach a server on 127.0.0.1, so three doors are closed
before a request reaches auth or a route (Jupyter's and Ollama's lessons, and llama.cpp's CORS one):
- DNS rebinding: `evil.example` re-resolved to 127.0.0.1 makes the browser send
  `Host: evil.example`. Bound to loopback, only `localhost`, `127.0.0.1`, `[::1]` (any port) and
  the `--allowed-host` names pass; anything else is a 403. `--allowed-host` also applies on a
  non-loopback bind once given, and `*` turns the check off. The host checked is the request's
  effective authority as the parser read it (an absolute-form target's overrides Host, and one
  with userinfo never gets here: it is a 400).
- Cross-site "simple" requests: a form or `fetch(no-cors)` can POST `text/plain` without a
  preflight; we only take `application/json` (the parsed media type, parameters allowed, charset
  utf-8 if any), so those are a 415 and never reach a route.
- CORS is off unless `--cors-origin` lists origins. A listed Origin gets its own value back
  (with `Vary: Origin`), `*` gets `*`; an unlisted Origin is never echoed, and
  `Access-Control-Allow-Credentials` is never sent. A preflight from an unlisted Origin is a 403.
`check_bind` states the last rule: a non-loopback address is only served when a key exists (with
server tools the server runs code for whoever gets in).

What it does not do: parse — the HTTP layer reads the authority, the Content-Type and header
lists (http/fields.py), this module only decides; no auth (app.py), no rate limits, no TLS.
Origin is not a credential, so a request with an unlisted Origin is still served (its browser
just cannot read the answer).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .core import ApiError
from .http import Request, Response, StreamResponse, host_name, is_token_list

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
ANY = "*"
CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "authorization, content-type, x-api-key, anthropic-version, anthropic-beta"
CORS_MAX_AGE = "600"  # seconds a browser may cache a preflight answer
SHOWN_CHARS = 100  # of a refused Host or Origin in the error message


def is_loopback(host: str) -> bool:
    """Whether a bind address only listens on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, has_key: bool) -> None:
    """Refuse to serve beyond loopback without a key (RuntimeError: the CLI prints it)."""
    if not is_loopback(host) and not has_key:
        raise RuntimeError(f"refusing to listen on {host} without an API key: create one with "
                           "`python -m unsloth_min keys create` or pass --api-key")


def origin_key(origin: str) -> str:
    """Origins compare on scheme://host[:port], case-insensitively, without a trailing slash."""
    return origin.strip(" \t").rstrip("/").lower()


@dataclass(frozen=True)
class Guard:
    check_host: bool = True  # bound to loopback, or --allowed-host given
    allowed_hosts: frozenset = frozenset()
    cors_origins: frozenset = frozenset()  # origin_key() values; ANY for every origin

    @classmethod
    def for_bind(cls, bind: str, allowed_hosts=(), cors_origins=()) -> "Guard":
        hosts = frozenset(host_name(h.strip()) if h != ANY else ANY for h in allowed_hosts)
        return cls(check_host=(is_loopback(bind) or bool(hosts)) and ANY not in hosts,
                   allowed_hosts=hosts, cors_origins=frozenset(map(origin_key, cors_origins)))

    def check(self, request: Request) -> Response | None:
        """Before auth: a preflight's answer, or None to go on; 403 or 415 as an ApiError."""
        self._check_host(request)
        if request.method == "OPTIONS" and request.header("access-control-request-method"):
            return self._preflight(request)
        if request.method == "POST":
            check_json(request)
        return None

    def decorate(self, request: Request, response: Response | StreamResponse):
        """CORS headers on an actual response, for a listed Origin only."""
        if self.cors_origins:
            allow = self._allowed_origin(request.header("origin"))
            if allow is not None:
                response.headers.append(("Access-Control-Allow-Origin", allow))
            if ANY not in self.cors_origins:
                response.headers.append(("Vary", "Origin"))
        return response

    def _check_host(self, request: Request) -> None:
        host = request.authority
        if not self.check_host or host is None:  # HTTP/1.0 without Host: not a browser
            return
        name = host_name(host)
        if name not in LOOPBACK_NAMES and name not in self.allowed_hosts:
            raise ApiError(403, "permission_error", f"Host {host[:SHOWN_CHARS]!r} is not allowed "
                           "(DNS rebinding protection); start the server with --allowed-host "
                           "NAME to accept it.")

    def _allowed_origin(self, origin: str | None) -> str | None:
        if origin is None or not self.cors_origins:
            return None
        if ANY in self.cors_origins:
            return ANY
        return origin if origin_key(origin) in self.cors_origins else None

    def _preflight(self, request: Request) -> Response:
        """Fetch standard §3.2.3: 204 with the allowed methods and headers, cached a while."""
        origin = request.header("origin")
        if self._allowed_origin(origin) is None:
            shown = repr(origin[:SHOWN_CHARS]) if origin else "(none)"
            raise ApiError(403, "permission_error", f"Cross-origin requests from {shown} are not "
                           "allowed; start the server with --cors-origin ORIGIN to accept them.")
        asked = request.header("access-control-request-headers", "").strip(" \t")
        headers = asked if is_token_list(asked) else CORS_HEADERS
        return Response(204, [("Access-Control-Allow-Methods", CORS_METHODS),  # decorate() adds
                              ("Access-Control-Allow-Headers", headers),  # the Origin's part
                              ("Access-Control-Max-Age", CORS_MAX_AGE)])


def check_json(request: Request) -> None:
    """415 unless the body is declared `application/json` (charset, if any, utf-8)."""
    parsed = request.content_type
    charset = parsed[1].get("charset", "utf-8").lower() if parsed else ""
    if parsed is None or parsed[0] != "application/json" or charset not in ("utf-8", "utf8"):
        value = request.header("content-type")
        shown = repr(value[:SHOWN_CHARS]) if value is not None else "none"
        raise ApiError(415, "invalid_request_error", f"Unsupported Content-Type {shown}: send "
                       "'Content-Type: application/json'.")
