"""Vision end to end on the real embedded SmolLM2-135M: with a tiny random projector built by
tests/tools/make_tiny_mmproj.py (`--mmproj`), and without one (images dropped, said once a request).

With random weights the answers mean nothing; what is checked is the path: the image's 64 tokens in
the prompt and the usage, different images → different greedy answers, the same image → the same
answer whether it came inline, by URL, or from the prefix cache, and a cache never reused across
different images. Every dialect sees the same prompt for the same conversation.
"""
from __future__ import annotations

import base64
import http.server
import json

import pytest

from support.servers import serve_http, sse_events, start_server_process, stop_server_process
from support.images import GRADIENT, INVERSE, PIXEL, data_uri

pytest.importorskip("gguf")
from tools import make_tiny_mmproj  # noqa: E402

pytestmark = pytest.mark.model
CHAT = "/v1/chat/completions"
QUESTION = "What is in this picture?"
N_IMAGE = make_tiny_mmproj.N_TOKENS


@pytest.fixture(scope="module")
def vision_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("vision")
    path = str(home / "tiny-mmproj.gguf")
    make_tiny_mmproj.write(path)
    running = start_server_process(str(home), "--mmproj", path, "-c", "2048", "-np", "2",
                                   "--max-tokens", "8")
    yield running
    assert stop_server_process(running) == 0


@pytest.fixture(scope="module")
def image_url():
    """GRADIENT served over HTTP on 127.0.0.1."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(GRADIENT)))
            self.end_headers()
            self.wfile.write(GRADIENT)
    with serve_http(Handler) as url:
        yield url + "/gradient.png"


def chat(server, *images: str, **extra) -> dict:
    content = [{"type": "text", "text": QUESTION}] + [{"type": "image_url", "image_url": {"url": u}}
                                                      for u in images]
    status, body = server.json("POST", CHAT, {"model": "m", "temperature": 0, **extra,
                                              "messages": [{"role": "user", "content": content}]},
                               timeout=600)
    assert status == 200, body
    return body


def answer(body: dict) -> str:
    return body["choices"][0]["message"]["content"]


def usage(body: dict) -> tuple[int, int]:
    return body["usage"]["prompt_tokens"], body["usage"]["prompt_tokens_details"]["cached_tokens"]


@pytest.fixture(scope="module")
def first_answers(vision_server):
    """In this order on a fresh server: no image, GRADIENT, INVERSE (2 slots: INVERSE takes the
    least recently used, the no-image one's)."""
    return [chat(vision_server), chat(vision_server, data_uri(GRADIENT)),
            chat(vision_server, data_uri(INVERSE))]


def test_images_are_seen(first_answers):
    plain, a, b = first_answers
    assert usage(a)[0] == usage(b)[0] == usage(plain)[0] + N_IMAGE  # the image's tokens are counted
    assert answer(a) != answer(b)  # greedy, and yet: the image changed the answer


def test_prefix_cache_keeps_images_apart(vision_server, first_answers):
    plain, a, b = first_answers
    n_prompt, cached = usage(b)
    assert cached < n_prompt - N_IMAGE  # B after A: only the text before the image is reused
    # each took a slot of its own (the least recently used): each comes back to its own cells
    for image, first in ((GRADIENT, a), (INVERSE, b)):
        again = chat(vision_server, data_uri(image))
        assert answer(again) == answer(first) and usage(again) == (n_prompt, n_prompt - 1)
    chat(vision_server)  # takes A's slot, the least recently used
    again = chat(vision_server, data_uri(GRADIENT))  # only B's slot has the text before the image:
    assert answer(again) == answer(a) and usage(again)[1] < n_prompt - N_IMAGE  # not B's image


def test_url_image_streamed(vision_server, first_answers, image_url):
    """The same bytes by URL are the same image (prefix identity is the bytes' hash)."""
    status, _, data = vision_server.request("POST", CHAT, {
        "model": "m", "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION},
                                                  {"type": "image_url", "image_url": image_url}]}]},
        timeout=600)
    events = [json.loads(d) for _, d in sse_events(data) if d != "[DONE]"]
    assert status == 200 and sse_events(data)[-1] == (None, "[DONE]")
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == answer(first_answers[1])
    assert events[-1]["usage"]["prompt_tokens"] == usage(first_answers[1])[0]


def test_every_dialect_sees_the_image(vision_server, first_answers):
    a = first_answers[1]
    b64 = base64.b64encode(GRADIENT).decode()
    block = {"role": "user", "content": [{"type": "text", "text": QUESTION},
                                         {"type": "image", "source": {"type": "base64",
                                                                      "media_type": "image/png",
                                                                      "data": b64}}]}
    status, counted = vision_server.json("POST", "/v1/messages/count_tokens", {"messages": [block]})
    assert status == 200 and counted["input_tokens"] == usage(a)[0]
    status, msg = vision_server.json("POST", "/v1/messages", {"max_tokens": 8, "temperature": 0,
                                                              "messages": [block]}, timeout=600)
    assert status == 200 and msg["content"][0]["text"] == answer(a)
    assert msg["usage"]["input_tokens"] + msg["usage"]["cache_read_input_tokens"] == usage(a)[0]
    status, resp = vision_server.json("POST", "/v1/responses", {
        "temperature": 0, "max_output_tokens": 8, "store": False,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": QUESTION},
                                               {"type": "input_image", "image_url": data_uri(GRADIENT)}]}]},
        timeout=600)
    assert status == 200 and resp["usage"]["input_tokens"] == usage(a)[0]
    assert resp["output"][-1]["content"][0]["text"] == answer(a)


def test_undecodable_image_is_a_400(vision_server):
    broken = PIXEL[:40]  # a PNG signature and header, no pixels
    status, body = vision_server.json("POST", CHAT, {"messages": [{"role": "user", "content": [
        {"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": data_uri(broken)}}]}]})
    assert status == 400 and body["error"]["param"] == "messages[0].content[1].image_url.url"
    assert "could not be decoded" in body["error"]["message"]


def test_without_projector_images_are_dropped(real_server):
    """The seed page: a text-only model answers 200; the log says so once for the request."""
    def warnings() -> int:
        with open(real_server.log, encoding="utf-8", errors="replace") as f:
            return f.read().count("no vision projector: the request's images are dropped")
    before = warnings()
    body = chat(real_server, data_uri(GRADIENT), "https://example.invalid/not-fetched.png", max_tokens=4)
    assert body["choices"][0]["message"]["content"] is not None
    plain = chat(real_server, max_tokens=4)
    assert usage(body)[0] == usage(plain)[0]  # nothing of the images reached the prompt
    assert warnings() == before + 1
