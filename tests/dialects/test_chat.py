"""OpenAI Chat Completions over a scripted engine: golden JSON and SSE, errors, keys, routes."""
from __future__ import annotations

import json
import socket

import pytest

from support.rawhttp import read_until
from support.servers import KEY, sse_events, wait_for
from unsloth_min.core import ApiError, Finish, ReasoningDelta, ToolCallDelta, Usage

CHAT = "/v1/chat/completions"
HELLO = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}


def test_plain_completion_golden(scripted_server):
    scripted_server.engine.enqueue(["Hel", "lo"])
    status, body = scripted_server.json("POST", CHAT, HELLO)
    assert status == 200
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    del body["id"], body["created"]
    assert body == {
        "object": "chat.completion", "model": "scripted", "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello", "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9,
                  "prompt_tokens_details": {"cached_tokens": 0}},
    }
    req = scripted_server.engine.history[0]
    assert req.messages[0].role == "user" and req.messages[0].text == "hi"


def test_stream_golden_with_usage(scripted_server):
    scripted_server.engine.enqueue(["a", "b", Finish("length", Usage(7, 2, 3))])
    body = dict(HELLO, stream=True, stream_options={"include_usage": True})
    status, headers, data = scripted_server.request("POST", CHAT, body)
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache" and headers["x-accel-buffering"] == "no"
    assert headers["transfer-encoding"] == "chunked"
    events = sse_events(data)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    deltas = [c["choices"][0]["delta"] if c["choices"] else None for c in chunks]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "a"}, {"content": "b"}, {}, None]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, None, "length"]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9,
                                   "prompt_tokens_details": {"cached_tokens": 3}}


def test_stream_without_usage_has_no_usage_chunk(scripted_server):
    scripted_server.engine.enqueue(["x"])
    _, _, data = scripted_server.request("POST", CHAT, dict(HELLO, stream=True))
    chunks = [json.loads(d) for _, d in sse_events(data)[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_reasoning_and_tool_call_deltas(scripted_server):
    script = [ReasoningDelta("hmm"), ToolCallDelta(0, "call_1", "get_weather", ""),
              ToolCallDelta(0, None, None, '{"city":'), ToolCallDelta(0, None, None, '"Paris"}'),
              Finish("tool_calls", Usage(7, 5, 0))]
    scripted_server.engine.enqueue(script)
    _, body = scripted_server.json("POST", CHAT, HELLO)
    msg = body["choices"][0]["message"]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert msg["content"] is None and msg["reasoning_content"] == "hmm"
    assert msg["tool_calls"] == [{"id": "call_1", "type": "function",
                                  "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    scripted_server.engine.enqueue(script)
    _, _, data = scripted_server.request("POST", CHAT, dict(HELLO, stream=True))
    chunks = [json.loads(d) for _, d in sse_events(data)[:-1]]
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0] == {"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    assert calls[1] == {"index": 0, "function": {"arguments": '{"city":'}}


def test_reasoning_tokens_in_usage(scripted_server):
    scripted_server.engine.enqueue([ReasoningDelta("hm"), "a", Finish("stop", Usage(7, 4, 0, 3))])
    _, body = scripted_server.json("POST", CHAT, HELLO)
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 3}


def test_tool_fields_reach_the_engine(scripted_server):
    fn = {"name": "get_weather", "description": "d",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    body = dict(HELLO, tools=[{"type": "function", "function": fn}], parallel_tool_calls=False,
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}})
    scripted_server.json("POST", CHAT, body)
    req = scripted_server.engine.history[0]
    assert [(t.name, t.description, t.parameters) for t in req.tools] == [("get_weather", "d", fn["parameters"])]
    assert (req.tool_choice, req.tool_name, req.parallel_tool_calls) == ("function", "get_weather", False)
    assert req.response_schema == {"type": "object"}
    scripted_server.json("POST", CHAT, dict(HELLO, tools=body["tools"], response_format={"type": "json_object"}))
    req = scripted_server.engine.history[1]
    assert (req.tool_choice, req.response_schema, req.parallel_tool_calls) == ("auto", {}, True)
    scripted_server.json("POST", CHAT, dict(HELLO, tools=body["tools"], tool_choice="none"))
    assert scripted_server.engine.history[2].tool_choice == "none"


def test_request_fields_reach_the_engine(scripted_server):
    body = dict(HELLO, temperature=0.5, top_p=0.9, top_k=20, min_p=0.1, seed=42, max_tokens=9,
                max_completion_tokens=11, stop="END", presence_penalty=0.5, frequency_penalty=-0.5,
                repetition_penalty=1.1, enable_thinking=False)
    scripted_server.json("POST", CHAT, body)
    s = scripted_server.engine.history[0].sampling
    assert (s.temperature, s.top_p, s.top_k, s.min_p, s.seed) == (0.5, 0.9, 20, 0.1, 42)
    assert (s.max_tokens, s.stop) == (11, ("END",))
    assert (s.presence_penalty, s.frequency_penalty, s.repetition_penalty) == (0.5, -0.5, 1.1)
    assert scripted_server.engine.history[0].enable_thinking is False
    scripted_server.json("POST", CHAT, dict(HELLO, chat_template_kwargs={"enable_thinking": True}))
    assert scripted_server.engine.history[1].enable_thinking is True


@pytest.mark.parametrize("patch, param", [
    ({"temperature": 3}, "temperature"), ({"temperature": "hot"}, "temperature"),
    ({"max_tokens": -1}, "max_tokens"), ({"max_tokens": 1.5}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"), ({"top_p": 1.5}, "top_p"),
    ({"presence_penalty": 9}, "presence_penalty"), ({"stream": "yes"}, "stream"),
    ({"messages": []}, "messages"), ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages[0].content[0].type"),
    ({"stop": [1, 2]}, "stop"), ({"n": 2}, "n"), ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"seed": 1e30}, "seed"),
])
def test_bad_fields_are_400_naming_the_field(scripted_server, patch, param):
    body = dict(HELLO)
    body.update(patch)
    status, err = scripted_server.json("POST", CHAT, body)
    assert status == 400
    assert err["error"]["type"] == "invalid_request_error"
    assert err["error"]["param"] == param
    assert param.split(".")[0].split("[")[0] in err["error"]["message"]


@pytest.mark.parametrize("raw", [b"{", b"[1,2]", b"\xff\xfe", b'{"messages": NaN}', b""])
def test_bad_json_is_400(scripted_server, raw):
    status, err = scripted_server.json("POST", CHAT, raw)
    assert status == 400 and err["error"]["type"] == "invalid_request_error"


def test_engine_error_before_stream_is_json(scripted_server):
    err = ApiError(400, "invalid_request_error", "prompt is too long", code="context_length_exceeded")
    scripted_server.engine.enqueue([], error=err)
    status, body = scripted_server.json("POST", CHAT, dict(HELLO, stream=True))
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"


def test_error_after_first_byte_is_an_error_event(scripted_server):
    scripted_server.engine.enqueue(["a", RuntimeError("boom")])
    status, _, data = scripted_server.request("POST", CHAT, dict(HELLO, stream=True))
    events = sse_events(data)
    assert status == 200
    assert json.loads(events[-2][1])["error"]["type"] == "server_error"
    assert events[-1] == (None, "[DONE]")


def test_keys(scripted_server):
    status, headers, body = scripted_server.request("POST", CHAT, HELLO, key=False)
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert json.loads(body)["error"]["type"] == "authentication_error"
    wrong = {"Authorization": "Bearer sk-unsloth-" + "f" * 32}
    assert scripted_server.request("POST", CHAT, HELLO, headers=wrong, key=False)[0] == 401
    assert scripted_server.request("POST", CHAT, HELLO, headers={"x-api-key": KEY}, key=False)[0] == 200
    assert scripted_server.request("GET", "/health", key=False)[0] == 200
    status, _, body = scripted_server.request("POST", "/v1/messages", {}, key=False)
    assert status == 401 and json.loads(body) == {
        "type": "error", "error": {"type": "authentication_error", "message": json.loads(body)["error"]["message"]}}
    assert KEY not in body.decode()


def test_routes(scripted_server):
    assert scripted_server.json("GET", "/health", key=False) == (200, {"status": "ok"})
    status, body = scripted_server.json("GET", "/v1/models")
    assert status == 200 and body["object"] == "list"
    assert body["data"][0]["id"] == "scripted" and body["data"][0]["owned_by"] == "local"
    assert scripted_server.json("GET", "/v1/models/scripted")[1]["id"] == "scripted"
    status, body = scripted_server.json("GET", "/v1/models/nope")
    assert status == 404 and body["error"]["type"] == "not_found_error"
    status, body = scripted_server.json("GET", "/nope")
    assert status == 404 and body["error"]["type"] == "not_found_error"
    status, headers, _ = scripted_server.request("GET", CHAT)
    assert status == 405 and headers["allow"] == "POST"
    status, headers, body = scripted_server.request("HEAD", "/v1/models")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


def test_models_for_the_anthropic_sdk(scripted_server):
    """With `anthropic-version` (the Anthropic SDK's header) the list also carries Anthropic's
    fields, so `client.models.list()` / `retrieve()` read it; the OpenAI fields stay."""
    import anthropic

    client = anthropic.Anthropic(base_url=scripted_server.base_url, api_key=KEY, max_retries=0)
    page = client.models.list()
    assert [m.id for m in page.data] == ["scripted"] and page.has_more is False
    card = client.models.retrieve("scripted")
    assert card.type == "model" and card.display_name == "scripted" and card.created_at.year >= 2026
    raw = scripted_server.json("GET", "/v1/models", headers={"anthropic-version": "2023-06-01"})[1]
    assert raw["object"] == "list" and raw["data"][0]["owned_by"] == "local" and raw["last_id"] == "scripted"


def test_health_while_loading(scripted_server):
    scripted_server.app.engine = None
    assert scripted_server.json("GET", "/health", key=False) == (503, {"status": "loading"})
    assert scripted_server.json("POST", CHAT, HELLO)[0] == 503


def _raw_post(server, body: dict) -> socket.socket:
    data = json.dumps(body).encode()
    s = socket.create_connection((server.host, server.port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: "
              + str(len(data)).encode() + b"\r\n\r\n" + data)
    return s






@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_cancels_generation(scripted_server, stream):
    engine = scripted_server.engine
    engine.enqueue(["tok"] * 1000, delay=0.01)
    s = _raw_post(scripted_server, dict(HELLO, stream=stream))
    if stream:
        assert read_until(s, b"data:")
    else:
        assert wait_for(lambda: engine.history)
    s.close()
    assert wait_for(lambda: engine.cancelled == 1)
    engine.enqueue(["next"])
    assert scripted_server.json("POST", CHAT, HELLO)[1]["choices"][0]["message"]["content"] == "next"


@pytest.mark.parametrize("include_usage", [False, True])
def test_a_text_chunk_joined_from_its_fixed_parts_is_the_encoded_chunk(include_usage):
    """The hot path (the delta's JSON joined into the chunk's pre-encoded parts) frames exactly
    what encoding the whole chunk frames, for text JSON must escape."""
    from unsloth_min.core import ChatRequest, Message, TextDelta
    from unsloth_min.dialects.openai_chat import Encoder
    from unsloth_min.http.sse import sse_event
    enc = Encoder(ChatRequest(messages=[Message("user", "x")], stream=True, include_usage=include_usage), "m")
    for text in ['héllo "q" \n\t\\ \u2028 🙂', "\x00\x1f</script>", ""]:
        (name, data), = enc.on_text(TextDelta(text))
        assert sse_event(data, name) == sse_event(enc._chunk({"content": text})[1])
        (name, data), = enc.on_reasoning(ReasoningDelta(text))
        assert sse_event(data, name) == sse_event(enc._chunk({"reasoning_content": text})[1])
