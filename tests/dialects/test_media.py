"""Images on the wire: parsing in each dialect, the URL fetcher against a local server, the app's
per-request handling (count cap, fetch only for a model that sees images, 400 naming the part)."""
from __future__ import annotations

import base64
import http.server
import time

import pytest

from support.servers import serve_http
from support.images import GRADIENT, PIXEL, data_uri
from unsloth_min import media
from unsloth_min.core import ApiError, Image, Message, Text
from unsloth_min.dialects import anthropic_messages, openai_chat, openai_responses
from unsloth_min.engine.template import message_dict
from unsloth_min.engine.vision import pseudo_tokens
from unsloth_min.media import FetchError, MediaLimits

CHAT = "/v1/chat/completions"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 20


def raises_400(call, param: str) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    assert info.value.status == 400 and info.value.param == param
    assert param in info.value.message  # the message names the part too
    return info.value


# ---- parsing -------------------------------------------------------------------------------------
@pytest.mark.parametrize("data, media_type", [(PIXEL, "image/png"), (JPEG, "image/jpeg"),
                                              (b"GIF89a" + b"\x00" * 9, "image/gif"),
                                              (WEBP, "image/webp"), (b"BM" + b"\x00" * 9, "image/bmp"),
                                              (b"hello", None), (b"", None), (b"RIFF1234WAVE", None)])
def test_sniff(data, media_type):
    assert media.sniff(data) == media_type


def test_data_uris():
    assert media.image_from_url(data_uri(PIXEL), "p") == Image(data=PIXEL, media_type="image/png")
    assert media.image_from_url(data_uri(PIXEL), "p").where == "p"
    wrapped = "data:image/png;base64," + "\n".join(base64.b64encode(PIXEL).decode().rstrip("="))
    assert media.image_from_url(wrapped, "p").data == PIXEL  # line breaks, missing padding
    assert media.image_from_url(data_uri(JPEG, "image/png"), "p").media_type == "image/jpeg"  # sniffed
    assert media.image_from_url("data:image/png," + "%89PNG%0D%0A%1A%0A", "p").data == PIXEL[:8]
    assert media.image_from_url("https://example.com/a.png", "p") == Image(url="https://example.com/a.png")


@pytest.mark.parametrize("url, what", [
    ("data:image/png;base64,@@@@", "not valid base64"),
    ("data:image/png;base64," + base64.b64encode(b"just text").decode(), "not an image"),
    ("data:image/png;base64", "needs a ','"),
    ("ftp://example.com/a.png", "http(s) URL"), ("file:///etc/passwd", "http(s) URL"),
    ("example.com/a.png", "http(s) URL")])
def test_bad_image_urls(url, what):
    assert what in raises_400(lambda: media.image_from_url(url, "messages[0].content[1]"),
                              "messages[0].content[1]").message


def test_chat_image_parts():
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": data_uri(PIXEL), "detail": "low"}},
        {"type": "image_url", "image_url": "https://example.com/b.png"}]}]}
    parts = openai_chat.parse_request(body).messages[0].parts
    assert parts == [Text("look"), Image(data=PIXEL, media_type="image/png"),
                     Image(url="https://example.com/b.png")]
    assert [p.where for p in parts[1:]] == ["messages[0].content[1].image_url.url",
                                            "messages[0].content[2].image_url"]
    body["messages"][0]["content"][1]["image_url"]["url"] = "data:image/png;base64,!!"
    raises_400(lambda: openai_chat.parse_request(body), "messages[0].content[1].image_url.url")


def test_anthropic_image_blocks():
    def parse(source):
        body = {"max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": source}]}]}
        return anthropic_messages.parse_request(body).messages[0].parts[0]
    b64 = base64.b64encode(PIXEL).decode()
    assert parse({"type": "base64", "media_type": "image/png", "data": b64}) == Image(
        data=PIXEL, media_type="image/png")
    assert parse({"type": "url", "url": "https://x.com/c.jpg"}) == Image(url="https://x.com/c.jpg")
    not_image = base64.b64encode(b"text, not pixels").decode()
    raises_400(lambda: parse({"type": "base64", "media_type": "image/png", "data": not_image}),
               "messages[0].content[0].source.data")
    raises_400(lambda: parse({"type": "url", "url": "gopher://x"}), "messages[0].content[0].source.url")


def test_responses_input_image():
    def parse(url):
        body = {"input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                                       {"type": "input_image", "image_url": url}]}]}
        return openai_responses.parse_request(body).messages[0].parts[1]
    assert parse(data_uri(GRADIENT)) == Image(data=GRADIENT, media_type="image/png")
    assert parse("http://127.0.0.1/x.png") == Image(url="http://127.0.0.1/x.png")
    raises_400(lambda: parse("data:image/png;base64,AAAA"), "input[0].content[1].image_url")


def test_image_identity_in_prompts():
    """An image's positions in a prompt: negative (never a token), distinct, equal only for equal ids."""
    a = pseudo_tokens(b"sha-of-a", 64)
    assert a == pseudo_tokens(b"sha-of-a", 64) and len(set(a)) == 64 and max(a) < 0
    assert not set(a) & set(pseudo_tokens(b"sha-of-b", 64))


def test_template_marks_where_images_stood():
    m = Message("user", [Text("a "), Image(data=PIXEL), Text(" b"), Image(data=PIXEL)])
    assert message_dict(m, "<M>")["content"] == "a <M> b<M>"
    assert message_dict(m)["content"] == "a  b"  # no projector: dropped


# ---- the fetcher ---------------------------------------------------------------------------------
class Handler(http.server.BaseHTTPRequestHandler):
    """/img, /text, /missing, /big (declared too long), /stream (too long, no length), /slow,
    /redirect/N (N hops before /img), /away (to the address in the `to` query), /trickle/head and
    /trickle/body (a byte every 50 ms: each read is quick, the whole never ends)."""

    def log_message(self, *args):
        pass

    def send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {"Content-Length": str(len(body))}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the fetcher gave up on purpose
            pass

    def trickle(self, head: bool) -> None:
        data = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 200
        if not head:
            self.send_response(200)
            self.send_header("Content-Length", "200")
            self.end_headers()
            data = b"x" * 200
        try:
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):  # the fetcher gave up: as it should
            pass

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path == "/img":
            return self.send(200, GRADIENT)
        if path == "/text":
            return self.send(200, b"<html>not an image</html>")
        if path == "/big":
            return self.send(200, GRADIENT, {"Content-Length": str(10**9)})
        if path == "/stream":  # no Content-Length: read until close
            return self.send(200, GRADIENT * 10, {"Connection": "close"})
        if path == "/slow":
            time.sleep(1.0)
            return self.send(200, GRADIENT)
        if path.startswith("/redirect/"):
            n = int(path.rsplit("/", 1)[1])
            return self.send(302, b"", {"Location": f"/redirect/{n - 1}" if n > 1 else "/img",
                                        "Content-Length": "0"})
        if path.startswith("/trickle/"):
            return self.trickle(path == "/trickle/head")
        if path == "/away":
            return self.send(302, b"", {"Location": query[3:], "Content-Length": "0"})
        self.send(404, b"nope")


@pytest.fixture(scope="module")
def image_server():
    with serve_http(Handler) as url:
        yield url


def test_fetch(image_server):
    assert media.fetch(image_server + "/img") == GRADIENT
    assert media.fetch(image_server + "/redirect/3") == GRADIENT  # 3 redirects: the default limit


@pytest.mark.parametrize("path, limits, why", [
    ("/big", MediaLimits(max_bytes=5000), "larger than 5000 bytes"),
    ("/stream", MediaLimits(max_bytes=5000), "larger than 5000 bytes"),
    ("/slow", MediaLimits(timeout_s=0.3), "longer than 0.3 s"),
    ("/trickle/head", MediaLimits(timeout_s=0.3), "longer than 0.3 s"),  # no read ever times out:
    ("/trickle/body", MediaLimits(timeout_s=0.3), "longer than 0.3 s"),  # the deadline still holds
    ("/redirect/4", MediaLimits(), "redirects more than 3 times"),
    ("/redirect/2", MediaLimits(max_redirects=1), "redirects more than 1 times"),
    ("/missing", MediaLimits(), "HTTP 404"),
])
def test_fetch_limits(image_server, path, limits, why):
    started = time.monotonic()
    with pytest.raises(FetchError, match=why):
        media.fetch(image_server + path, limits)
    assert time.monotonic() - started < 2.0  # the slow server is cut off, not waited for (it never ends)


def test_fetch_image_errors_name_the_part(image_server):
    err = raises_400(lambda: media.fetch_image(Image(url=image_server + "/text", where="input[1]"),
                                               MediaLimits()), "input[1]")
    assert "not an image" in err.message
    err = raises_400(lambda: media.fetch_image(Image(url=image_server + "/missing", where="x.url"),
                                               MediaLimits()), "x.url")
    assert "Could not fetch" in err.message and "404" in err.message
    closed = "http://127.0.0.1:9/img"  # the discard port: nobody listens
    assert "Could not fetch" in raises_400(
        lambda: media.fetch_image(Image(url=closed, where="p"), MediaLimits()), "p").message


@pytest.mark.parametrize("ip, private", [("127.0.0.1", True), ("10.1.2.3", True), ("192.168.0.9", True),
                                         ("169.254.169.254", True), ("100.64.0.1", True), ("::1", True),
                                         ("fe80::1", True), ("::ffff:10.0.0.1", True), ("0.0.0.0", True),
                                         ("224.0.0.1", True), ("8.8.8.8", False),
                                         ("2606:4700:4700::1111", False)])
def test_private_addresses(ip, private):
    assert media.is_private(ip) is private
    assert media.redirect_allowed("8.8.8.8", ip) is not private  # from a public URL: public only
    assert media.redirect_allowed("127.0.0.1", ip)  # from loopback (a local test server): anywhere


def test_no_redirect_from_public_to_private(image_server, monkeypatch):
    """A public URL that redirects into this machine is refused before anything is sent there."""
    real_open, opened = media._open, []

    def resolve(host, port):
        return "93.184.215.14" if host == "public.test" else "127.0.0.1"

    def open_(url, ip, *rest):  # "the public host" is the local test server
        opened.append(url.geturl())
        return real_open(url, "127.0.0.1", *rest)
    monkeypatch.setattr(media, "_resolve", resolve)
    monkeypatch.setattr(media, "_open", open_)
    port = image_server.rsplit(":", 1)[1]
    assert media.fetch(f"http://public.test:{port}/img") == GRADIENT
    with pytest.raises(FetchError, match="private address"):
        media.fetch(f"http://public.test:{port}/away?to={image_server}/img")
    assert opened[-1].endswith("/away?to=" + image_server + "/img")  # never the private one


# ---- per request, through the app ----------------------------------------------------------------
def chat_with(*urls: str) -> dict:
    parts = [{"type": "text", "text": "look"}] + [{"type": "image_url", "image_url": {"url": u}}
                                                  for u in urls]
    return {"model": "m", "messages": [{"role": "user", "content": parts}]}


def test_app_fetches_only_for_a_model_that_sees(scripted_server, image_server):
    engine = scripted_server.engine
    assert scripted_server.json("POST", CHAT, chat_with(image_server + "/img"))[0] == 200
    assert engine.history[-1].messages[0].parts[1] == Image(url=image_server + "/img")  # dropped later
    engine.accepts_images = True
    assert scripted_server.json("POST", CHAT, chat_with(image_server + "/img", data_uri(PIXEL)))[0] == 200
    parts = engine.history[-1].messages[0].parts
    assert parts[1] == Image(data=GRADIENT, url=image_server + "/img", media_type="image/png")
    assert parts[2] == Image(data=PIXEL, media_type="image/png")


def test_a_stored_response_keeps_the_url_not_the_bytes(scripted_server, image_server):
    """The engine sees the fetched image; the stored Responses conversation keeps only its URL."""
    scripted_server.engine.accepts_images = True
    url = image_server + "/img"
    status, body = scripted_server.json("POST", "/v1/responses", {"model": "m", "input": [
        {"role": "user", "content": [{"type": "input_image", "image_url": url}]}]})
    assert status == 200
    assert scripted_server.engine.history[-1].messages[-1].parts[0].data == GRADIENT
    stored = scripted_server.app.responses.get(body["id"])
    images = [p for m in stored.conversation for p in m.parts if isinstance(p, Image)]
    assert images == [Image(url=url)]


def test_app_image_errors(scripted_server, image_server):
    scripted_server.engine.accepts_images = True
    status, body = scripted_server.json("POST", CHAT, chat_with(data_uri(PIXEL), image_server + "/text"))
    assert status == 400 and body["error"]["param"] == "messages[0].content[2].image_url.url"
    status, body = scripted_server.json("POST", "/v1/messages", {
        "model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": image_server + "/missing"}}]}]})
    assert status == 400 and body["type"] == "error" and "messages[0].content[0].source.url" in \
        body["error"]["message"]
    scripted_server.app.media = MediaLimits(max_images=2)
    status, body = scripted_server.json("POST", CHAT, chat_with(*[data_uri(PIXEL)] * 3))
    assert status == 400 and "Too many images: 3" in body["error"]["message"]
    assert len(scripted_server.engine.history) == 0
