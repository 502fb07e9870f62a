"""Anthropic Messages end to end on the real embedded SmolLM2-135M: the seed page's curl bodies and
the official `anthropic` SDK (its default `x-api-key` auth, `create`, `stream()`, `count_tokens`)."""
from __future__ import annotations

import http.client
import json

import anthropic
import pytest

from support.servers import KEY
from unsloth_min.engine.model import MIN_DEFAULT_CTX

pytestmark = pytest.mark.model
MESSAGES = "/v1/messages"
# a 1×1 PNG: the seed page's vision example, on a text-only model (the image is dropped)
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def client(real_server):
    return anthropic.Anthropic(base_url=real_server.base_url, api_key=KEY, max_retries=0, timeout=300)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def stream_head(server, path: str, body: dict, until: str) -> list[str]:
    """SSE event names of a streamed answer up to the first `until` event; then hang up (curl -N and
    Ctrl-C), which also frees the model for the next test."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
    conn.request("POST", path, json.dumps(body).encode(), {
        "Authorization": f"Bearer {server.key}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
    names = []
    while until not in names:
        line = resp.fp.readline().decode()
        assert line, "stream ended early"
        if line.startswith("event: "):
            names.append(line[7:].strip())
    conn.close()
    return names


def test_seed_basic_request(real_server):
    model_id = real_server.json("GET", "/v1/models")[1]["data"][0]["id"]
    status, body = real_server.json("POST", MESSAGES, {"model": "default", "max_tokens": 1024,
                                                       "messages": user("你好")}, timeout=600)
    assert status == 200 and body["type"] == "message" and body["model"] == model_id
    assert body["content"][0]["type"] == "text" and body["content"][0]["text"]
    assert body["stop_reason"] in ("end_turn", "max_tokens") and body["usage"]["output_tokens"] <= 1024
    status, body = real_server.json("POST", MESSAGES, {"model": "default", "messages": user("hi")})
    assert status == 400 and body["type"] == "error" and "max_tokens" in body["error"]["message"]


def test_seed_streams(real_server):
    lora = {"model": "qwen-local", "max_tokens": 1024, "messages": user("用两句话解释 LoRA。"),
            "stream": True}
    names = stream_head(real_server, MESSAGES, lora, "content_block_delta")
    assert [n for n in names if n != "ping"] == ["message_start", "content_block_start",
                                                 "content_block_delta"]
    vision = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "描述这张图片。"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PIXEL}}]}],
        "max_tokens": 200, "stream": True}
    assert stream_head(real_server, MESSAGES, vision, "content_block_delta")[-1] == "content_block_delta"
    server_tools = {"model": "qwen-local", "max_tokens": 1024, "stream": True,
                    "messages": user("搜索 Python 3.13 的特性"), "enable_tools": True,
                    "enabled_tools": ["web_search", "python"], "session_id": "my-session"}
    names = stream_head(real_server, MESSAGES, server_tools, "content_block_start")
    assert [n for n in names if n != "ping"] == ["message_start", "content_block_start"]


def test_seed_client_tools(real_server):
    status, body = real_server.json("POST", MESSAGES, {
        "model": "qwen-local", "max_tokens": 1024, "messages": user("东京的天气怎么样？"),
        "tools": [{"name": "get_weather", "description": "获取某个城市的当前天气",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                    "required": ["city"]}}],
        "tool_choice": {"type": "auto"}}, timeout=600)
    assert status == 200 and body["stop_reason"] in ("end_turn", "max_tokens", "tool_use")


def test_sdk_create_usage_matches_count_tokens(client, real_server):
    messages = user("Count: one, two,")
    r = client.messages.create(model="default", max_tokens=5, messages=messages,
                               extra_body={"temperature": 0})
    assert r.id.startswith("msg_") and r.type == "message" and r.role == "assistant"
    assert r.stop_reason == "max_tokens" and r.usage.output_tokens == 5
    counted = client.messages.count_tokens(model="default", messages=messages).input_tokens
    # Anthropic's usage: input_tokens excludes what was read from the (KV) cache
    assert r.usage.input_tokens + r.usage.cache_read_input_tokens == counted
    with_system = client.messages.count_tokens(model="default", messages=messages, system="Be terse.")
    assert with_system.input_tokens != counted  # (SmolLM's default system prompt is replaced)


def test_sdk_stream_matches_create(client):
    kw = dict(model="default", max_tokens=24, system="You are terse.", messages=user("Name three colors."),
              extra_body={"temperature": 0})
    plain = client.messages.create(**kw)
    with client.messages.stream(**kw) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == plain.content[0].text == final.content[0].text
    assert final.stop_reason == plain.stop_reason and final.usage.output_tokens == plain.usage.output_tokens
    assert (final.usage.input_tokens + final.usage.cache_read_input_tokens
            == plain.usage.input_tokens + plain.usage.cache_read_input_tokens)


def test_stop_sequence_and_prefill(client):
    kw = dict(model="default", max_tokens=30, messages=user("Tell me a story."),
              extra_body={"temperature": 0})
    text = client.messages.create(**kw).content[0].text
    word = text.split()[2]
    r = client.messages.create(stop_sequences=[word], **kw)
    assert r.stop_reason == "stop_sequence" and r.stop_sequence == word
    assert word not in r.content[0].text
    prefill = client.messages.create(model="default", max_tokens=8, extra_body={"temperature": 0},
                                     messages=user("Say something.") + [
                                         {"role": "assistant", "content": "Once upon a time"}])
    assert prefill.content[0].text and not prefill.content[0].text.startswith("Once upon a time")


def test_prompt_too_long_in_anthropic_shape(client):
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="default", max_tokens=5,
                               messages=user("hi " * (MIN_DEFAULT_CTX + 1000)))
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert e.value.body["error"]["message"].startswith("prompt is too long: ")


def test_wrong_key_is_anthropic_401(real_server):
    bad = anthropic.Anthropic(base_url=real_server.base_url, api_key="sk-unsloth-" + "0" * 32, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model="default", max_tokens=5, messages=user("hi"))
    assert e.value.body["error"]["type"] == "authentication_error"
    assert KEY not in json.dumps(e.value.body)
