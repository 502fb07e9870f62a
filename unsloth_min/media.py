"""Images from the wire to checked bytes: base64 and `data:` URIs decoded, http(s) URLs fetched.

Strategy: each dialect turns an image part into an `Image` with one pure call — `image_from_url`
(a `data:` URI is decoded on the spot, an http(s) URL is kept to fetch) or `image_from_base64` — and
the bytes must start like an image (PNG, JPEG, GIF, WebP, BMP), else 400 naming the part. The app
then calls `load_images` once per request: it enforces the per-request image count and fetches the
remote images concurrently, each in a worker thread (blocking `http.client`; the event loop never
waits). A fetch has one deadline for everything (connect, redirects, head, body — a timer shuts
the socket down when it passes, so a server trickling bytes cannot stretch it), a size cap (the
Content-Length is checked first, then the bytes are counted as they arrive), at most
`max_redirects` redirects, http(s) only, and never follows a redirect to a private, loopback or
link-local address unless the URL it started from was itself on loopback — so a public URL cannot
be turned into a way into this machine's network (SSRF). The socket connects to the very address
that was checked: no second DNS lookup to race. `fetch` is the server's one HTTP client: the
web_search tool fetches its result pages with it too (its own headers, cap and deadline).

Does not: decode pixels (llama.cpp's mtmd does, in the engine), cache fetched images, send cookies
or credentials, use a proxy, bound the DNS lookup (getaddrinfo has no timeout), or fetch anything
when the model cannot see images (they are dropped).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, replace

from .core import ChatRequest, Image, bad_request

MAX_IMAGES = 16                     # per request; each image costs tens to thousands of KV cells
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # per image, fetched or inline (OpenAI's own cap is 20 MB)
FETCH_TIMEOUT_S = 10.0              # one deadline for a whole fetch, redirects included
MAX_REDIRECTS = 3
REDIRECTS = (301, 302, 303, 307, 308)
READ_CHUNK = 64 * 1024
IMAGE_HEADERS = {"User-Agent": "unsloth_min (image fetch)", "Accept": "image/*"}

# leading bytes → media type; what llama.cpp's decoder (stb_image) reads, plus WebP
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
              (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"), (b"BM", "image/bmp"))


@dataclass(frozen=True)
class MediaLimits:
    max_images: int = MAX_IMAGES
    max_bytes: int = MAX_IMAGE_BYTES
    timeout_s: float = FETCH_TIMEOUT_S
    max_redirects: int = MAX_REDIRECTS


class FetchError(Exception):
    """Why a remote image could not be fetched (said to the client, naming the part)."""


# ---- parse (pure: the dialects call these) -------------------------------------------------------
def sniff(data: bytes) -> str | None:
    """The media type the bytes start like, or None when they are no image we know."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((media for magic, media in SIGNATURES if data.startswith(magic)), None)


def checked_image(data: bytes, where: str, limits: MediaLimits = MediaLimits()) -> Image:
    if len(data) > limits.max_bytes:
        raise bad_request(f"Invalid '{where}': the image is larger than {limits.max_bytes} bytes.",
                          param=where)
    media = sniff(data)
    if media is None:
        raise bad_request(f"Invalid '{where}': the data is not an image (PNG, JPEG, GIF, WebP or BMP "
                          "expected).", param=where, code="invalid_image")
    return Image(data=data, media_type=media, where=where)


def image_from_base64(data: str, where: str) -> Image:
    """A base64 payload (Anthropic's `source.data`, a data URI's tail)."""
    text = "".join(data.split())  # line breaks are common in pasted base64
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"Invalid '{where}': not valid base64.", param=where,
                          code="invalid_image") from None
    return checked_image(raw, where)


def image_from_url(url: str, where: str) -> Image:
    """An image URL part: `data:` URIs decoded now, http(s) URLs kept for `load_images`."""
    if url[:5].lower() == "data:":
        header, comma, payload = url[5:].partition(",")
        if not comma:
            raise bad_request(f"Invalid '{where}': a data: URI needs a ',' before its data.", param=where,
                              code="invalid_image")
        if header.lower().endswith(";base64"):
            return image_from_base64(payload, where)
        return checked_image(urllib.parse.unquote_to_bytes(payload), where)
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https") or len(url) > 8192:
        raise bad_request(f"Invalid '{where}': expected an http(s) URL or a data: URI.", param=where,
                          code="invalid_image_url")
    return Image(url=url, where=where)


# ---- fetch (blocking: run in a thread) -----------------------------------------------------------
def is_private(ip: str) -> bool:
    """Not a public unicast address: private, loopback, link-local, CGNAT, reserved, multicast."""
    addr = ipaddress.ip_address(ip.split("%")[0])
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return not addr.is_global or addr.is_multicast


def redirect_allowed(origin_ip: str, target_ip: str) -> bool:
    """A redirect may lead to a private address only from a URL that was on loopback already."""
    return not is_private(target_ip) or ipaddress.ip_address(origin_ip.split("%")[0]).is_loopback


class Deadline:
    """One deadline for a whole fetch. A socket timeout bounds each recv, not the sum: a server
    that trickles its head or body a byte at a time would hold the fetch for ever. So a timer shuts
    the socket in use down when the time is up, which ends whatever read is waiting on it."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0 or self.expired:
            raise TimeoutError
        return left

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
        if self.expired:
            self._expire()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                try:  # the plain socket's shutdown, also under TLS: SSLSocket's drops its state
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed

    def cancel(self) -> None:
        self._timer.cancel()


def _resolve(host: str, port: int) -> str:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise FetchError(f"cannot resolve {host!r} ({e.strerror})") from None
    return infos[0][4][0]


def _open(url: urllib.parse.SplitResult, ip: str, deadline: Deadline, headers: dict[str, str]):
    """A GET on a socket connected to `ip` (TLS checked against the URL's host name):
    (connection, response)."""
    port = url.port or (443 if url.scheme == "https" else 80)
    sock = socket.create_connection((ip, port), timeout=deadline.left())
    deadline.watch(sock)
    if url.scheme == "https":
        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=url.hostname,
                                                        do_handshake_on_connect=False)
        deadline.watch(sock)  # a new socket object: the plain one is detached
        sock.do_handshake()
    conn = http.client.HTTPConnection(url.hostname, port)
    conn.sock = sock  # http.client uses a socket it is given and never dials one itself
    path = urllib.parse.urlunsplit(("", "", url.path or "/", url.query, ""))
    conn.request("GET", path, headers={**headers, "Connection": "close"})
    return conn, conn.getresponse()


def _read_body(resp, limits: MediaLimits) -> bytes:
    length = resp.getheader("Content-Length")
    if length and length.isdigit() and int(length) > limits.max_bytes:
        raise FetchError(f"it is larger than {limits.max_bytes} bytes")
    body = bytearray()
    while not resp.isclosed():  # it closes itself (and the socket) after the last byte
        piece = resp.read(min(READ_CHUNK, limits.max_bytes + 1 - len(body)))
        if not piece:
            break
        body += piece
        if len(body) > limits.max_bytes:
            raise FetchError(f"it is larger than {limits.max_bytes} bytes")
    return bytes(body)


def fetch(url: str, limits: MediaLimits = MediaLimits(), headers: dict = IMAGE_HEADERS) -> bytes:
    """The body of `url` (GET with `headers`) after at most `limits.max_redirects` redirects;
    FetchError says why not."""
    deadline = Deadline(limits.timeout_s)
    try:
        body = _fetch(url, limits, deadline, headers)
    except (OSError, http.client.HTTPException) as e:  # TimeoutError: a connect ran past it
        if not deadline.expired and not isinstance(e, TimeoutError):
            raise
        body = None  # whatever a read cut short by the deadline said
    finally:
        deadline.cancel()
    if body is None or deadline.expired:
        raise FetchError(f"it took longer than {limits.timeout_s:g} s")
    return body


def _fetch(url: str, limits: MediaLimits, deadline: Deadline, headers: dict[str, str]) -> bytes:
    origin = None
    for _ in range(limits.max_redirects + 1):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"only http(s) URLs can be fetched, not {url[:100]!r}")
        ip = _resolve(parts.hostname, parts.port or 0)
        if origin is not None and not redirect_allowed(origin, ip):
            raise FetchError(f"it redirects to a private address ({parts.hostname})")
        origin = origin or ip
        conn, resp = _open(parts, ip, deadline, headers)
        try:
            if resp.status in REDIRECTS and resp.getheader("Location"):
                url = urllib.parse.urljoin(url, resp.getheader("Location"))
                continue
            if resp.status != 200:
                raise FetchError(f"the server answered HTTP {resp.status} {resp.reason}")
            return _read_body(resp, limits)
        finally:
            resp.close()
            conn.close()
    raise FetchError(f"it redirects more than {limits.max_redirects} times")


def fetch_image(image: Image, limits: MediaLimits) -> Image:
    """`image` with its bytes; a failure is a 400 naming the part."""
    try:
        data = fetch(image.url, limits)
    except FetchError as e:
        reason = str(e)
    except (OSError, http.client.HTTPException, ValueError) as e:
        reason = f"{type(e).__name__}: {e}"
    else:
        return replace(checked_image(data, image.where, limits), url=image.url)
    raise bad_request(f"Could not fetch the image in '{image.where}': {reason}.", param=image.where,
                      code="invalid_image_url")


# ---- per request ---------------------------------------------------------------------------------
async def load_images(req: ChatRequest, limits: MediaLimits, fetch_remote: bool) -> ChatRequest:
    """Check the image count; with `fetch_remote`, a copy of `req` whose URL images hold their
    fetched bytes (`req` itself keeps the URLs: a stored conversation must not keep the bytes)."""
    found = [p for m in req.messages for p in m.parts if isinstance(p, Image)]
    if len(found) > limits.max_images:
        raise bad_request(f"Too many images: {len(found)} in this request, at most "
                          f"{limits.max_images} are allowed.", code="too_many_images")
    remote = [p for p in found if p.data is None] if fetch_remote else []
    if not remote:
        return req
    fetched = await asyncio.gather(*(asyncio.to_thread(fetch_image, p, limits) for p in remote))
    loaded = dict(zip(map(id, remote), fetched))
    return replace(req, messages=[replace(m, parts=[loaded.get(id(p), p) for p in m.parts])
                                  for m in req.messages])
