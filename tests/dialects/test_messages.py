"""Anthropic Messages over a scripted engine: golden JSON and SSE, parsing, errors, pings, the SDK."""
from __future__ import annotations

import base64
import json
import socket
import time

import anthropic
import pytest

from support.servers import KEY, sse_events
from support.images import PIXEL
from unsloth_min.core import (ApiError, Finish, Image, Reasoning, ReasoningDelta, Text, ToolCall,
                              ToolCallDelta, ToolExecuted, ToolResult, Usage)
from unsloth_min.dialects import anthropic_messages

MESSAGES = "/v1/messages"
HELLO = {"model": "claude-x", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
USAGE_7 = {"input_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
           "output_tokens": 0}
TOOL_SCRIPT = [ToolCallDelta(0, "call_1", "get_weather", ""), ToolCallDelta(0, None, None, '{"city":'),
               ToolCallDelta(0, None, None, '"Paris"}'), Finish("tool_calls", Usage(7, 5, 0))]


def stream_events(server, body) -> list[tuple[str, dict]]:
    status, headers, data = server.request("POST", MESSAGES, dict(body, stream=True))
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    return [(name, json.loads(payload)) for name, payload in sse_events(data)]


def test_plain_message_golden(scripted_server):
    scripted_server.engine.enqueue(["Hel", "lo"])
    status, body = scripted_server.json("POST", MESSAGES, HELLO)
    assert status == 200 and body["id"].startswith("msg_")
    del body["id"]
    assert body == {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "Hello"}],
                    "model": "scripted", "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": dict(USAGE_7, output_tokens=2)}


def test_stream_golden(scripted_server):
    scripted_server.engine.enqueue([ReasoningDelta("hm"), "a", "b",
                                    Finish("stop_sequence", Usage(7, 2, 3), "END")])
    events = stream_events(scripted_server, HELLO)
    msg_id = events[0][1]["message"]["id"]
    assert msg_id.startswith("msg_")

    def block(i, kind, **kw):
        return ("content_block_" + kind, dict({"type": "content_block_" + kind, "index": i}, **kw))

    def delta(i, **d):
        return block(i, "delta", delta=d)
    assert events == [
        ("message_start", {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "content": [], "model": "scripted",
            "stop_reason": None, "stop_sequence": None, "usage": USAGE_7}}),
        block(0, "start", content_block={"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, type="thinking_delta", thinking="hm"),
        delta(0, type="signature_delta", signature=""),
        block(0, "stop"),
        block(1, "start", content_block={"type": "text", "text": ""}),
        delta(1, type="text_delta", text="a"),
        delta(1, type="text_delta", text="b"),
        block(1, "stop"),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
                           "usage": {"input_tokens": 4, "cache_creation_input_tokens": 0,
                                     "cache_read_input_tokens": 3, "output_tokens": 2}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_tool_use_blocks(scripted_server):
    scripted_server.engine.enqueue(TOOL_SCRIPT)
    _, body = scripted_server.json("POST", MESSAGES, HELLO)
    assert body["stop_reason"] == "tool_use"
    assert body["content"] == [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                "input": {"city": "Paris"}}]
    scripted_server.engine.enqueue(TOOL_SCRIPT)
    events = stream_events(scripted_server, HELLO)
    assert events[1][1]["content_block"] == {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                             "input": {}}
    assert [e[1]["delta"] for e in events if e[0] == "content_block_delta"] == [
        {"type": "input_json_delta", "partial_json": '{"city":'},
        {"type": "input_json_delta", "partial_json": '"Paris"}'}]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_server_tool_blocks(scripted_server):
    run = ToolExecuted(ToolCall("call_9", "python", '{"code": "1+1"}'), ToolResult("call_9", "2", "python"))
    scripted_server.engine.enqueue([run, "It is 2."])
    _, body = scripted_server.json("POST", MESSAGES, HELLO)
    use, result, text = body["content"]
    assert use["type"] == "server_tool_use" and use["id"].startswith("srvtoolu_")
    assert (use["name"], use["input"]) == ("python", {"code": "1+1"})
    assert result == {"type": "tool_result", "tool_use_id": use["id"], "name": "python", "content": "2",
                      "is_error": False}
    assert text == {"type": "text", "text": "It is 2."}
    scripted_server.engine.enqueue([run, "It is 2."])
    events = stream_events(scripted_server, HELLO)
    names = [n for n, _ in events]
    assert names[1:7] == ["content_block_start", "content_block_delta", "content_block_stop",
                          "tool_result", "content_block_start", "content_block_delta"]
    assert events[4][1] == dict(result, tool_use_id=events[1][1]["content_block"]["id"])
    assert events[5][1]["index"] == 1


def test_request_reaches_the_engine(scripted_server):
    png = base64.b64encode(PIXEL).decode()
    body = {
        "model": "m", "max_tokens": 9, "temperature": 0.5, "top_p": 0.9, "top_k": 20,
        "stop_sequences": ["END"], "metadata": {"user_id": "u"}, "thinking": {"type": "disabled"},
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "session_id": "s1", "enabled_tools": ["terminal"],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "look"},
                                         {"type": "image", "source": {"type": "base64", "media_type":
                                                                      "image/png", "data": png}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "x"},
                                              {"type": "redacted_thinking", "data": "zz"},
                                              {"type": "tool_use", "id": "toolu_a", "name": "get_weather",
                                               "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_a",
                                          "content": [{"type": "text", "text": "cold"}]},
                                         {"type": "text", "text": "and?"}]},
            {"role": "assistant", "content": "It is"},
        ]}
    assert scripted_server.json("POST", MESSAGES, body)[0] == 200
    req = scripted_server.engine.history[0]
    s = req.sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.stop) == (9, 0.5, 0.9, 20, ("END",))
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "tool", "user", "assistant"]
    assert req.messages[0].text == "Be brief.\nBe kind."
    assert req.messages[1].parts == [Text("look"), Image(data=PIXEL, media_type="image/png")]
    assert req.messages[2].parts == [Reasoning("t"), ToolCall("toolu_a", "get_weather", '{"city": "Oslo"}')]
    assert req.messages[3].parts == [ToolResult("toolu_a", "cold")]
    assert req.messages[5].text == "It is"  # a prefill: the engine continues it
    assert (req.tool_choice, req.tool_name, req.parallel_tool_calls) == ("function", "get_weather", False)
    assert req.tools[0].parameters == {"type": "object"} and req.enable_thinking is False
    assert (req.session_id, req.enabled_tools) == ("s1", ("bash",))


@pytest.mark.parametrize("choice, mapped", [({"type": "auto"}, "auto"), ({"type": "any"}, "required"),
                                            ({"type": "none"}, "none"), (None, "auto")])
def test_tool_choice_mapping(scripted_server, choice, mapped):
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    scripted_server.json("POST", MESSAGES, dict(HELLO, tools=tools, tool_choice=choice))
    assert scripted_server.engine.history[0].tool_choice == mapped


def test_server_tool_types_and_thinking(scripted_server):
    body = dict(HELLO, thinking={"type": "enabled", "budget_tokens": 2048},
                tools=[{"type": "web_search_20250305", "name": "web_search"}],
                output_config={"effort": "low",
                               "format": {"type": "json_schema", "schema": {"type": "object"}}})
    assert scripted_server.json("POST", MESSAGES, body)[0] == 200
    req = scripted_server.engine.history[0]
    assert req.enable_thinking is True and req.enable_tools and req.enabled_tools == ("web_search",)
    assert req.response_schema == {"type": "object"}


@pytest.mark.parametrize("patch, field", [
    ({"max_tokens": None}, "max_tokens"), ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "9"}, "max_tokens"), ({"temperature": 1.5}, "temperature"),
    ({"top_p": 2}, "top_p"), ({"stream": "yes"}, "stream"), ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "b"}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "@@@"}}]}]},
     "messages[0].content[0].source.data"),
    ({"system": 5}, "system"), ({"system": [{"type": "image"}]}, "system[0].type"),
    ({"stop_sequences": [1]}, "stop_sequences"), ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
    ({"tools": [{"type": "computer_20250124", "name": "c"}]}, "tools[0].type"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice"),
    ({"thinking": {"type": "maybe"}}, "thinking.type"), ({"metadata": "x"}, "metadata"),
    ({"output_config": {"format": {"type": "json_schema"}}}, "output_config.format.schema"),
])
def test_bad_fields_are_400_naming_the_field(scripted_server, patch, field):
    body = {k: v for k, v in dict(HELLO, **patch).items() if v is not None}
    status, err = scripted_server.json("POST", MESSAGES, body)
    assert status == 400
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert field in err["error"]["message"]
    assert not scripted_server.engine.history


def test_error_shapes(scripted_server):
    status, headers, body = scripted_server.request("POST", MESSAGES, HELLO, key=False)
    err = json.loads(body)
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert err["type"] == "error" and err["error"]["type"] == "authentication_error"
    assert scripted_server.request("POST", MESSAGES, HELLO, key=False, headers={"x-api-key": KEY})[0] == 200
    status, err = scripted_server.json("GET", MESSAGES)
    assert status == 405 and err["error"]["type"] == "invalid_request_error"
    status, err = scripted_server.json("POST", "/v1/messages/nope", HELLO)
    assert status == 404 and err == {"type": "error", "error": {"type": "not_found_error",
                                                                "message": err["error"]["message"]}}
    status, err = scripted_server.json("POST", MESSAGES, b"{")
    assert status == 400 and err["error"]["type"] == "invalid_request_error"
    scripted_server.app.engine = None
    status, err = scripted_server.json("POST", MESSAGES, HELLO)
    assert status == 503 and err["error"]["type"] == "overloaded_error"


def test_prompt_too_long_before_the_stream_is_json(scripted_server):
    err = ApiError(400, "invalid_request_error", "prompt is too long: 9000 tokens > 4095 maximum")
    scripted_server.engine.enqueue([], error=err)
    status, body = scripted_server.json("POST", MESSAGES, dict(HELLO, stream=True))
    assert status == 400 and body == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "prompt is too long: 9000 tokens > 4095 maximum"}}


def test_error_after_first_byte_is_an_error_event(scripted_server):
    scripted_server.engine.enqueue(["a", RuntimeError("boom")])
    events = stream_events(scripted_server, HELLO)
    assert events[-1] == ("error", {"type": "error", "error": {"type": "api_error",
                                                               "message": "generation failed"}})


def test_count_tokens(scripted_server):
    scripted_server.engine.prompt_tokens = 42
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "system": "s",
            "tools": [{"name": "f", "input_schema": {"type": "object"}}]}
    assert scripted_server.json("POST", "/v1/messages/count_tokens", body) == (200, {"input_tokens": 42})
    status, err = scripted_server.json("POST", "/v1/messages/count_tokens", {"model": "m"})
    assert status == 400 and err["type"] == "error" and "messages" in err["error"]["message"]
    assert not scripted_server.engine.history  # counting generates nothing


def test_pings_during_silence_keep_the_generation(scripted_server):
    """Pings while the prompt is evaluated; message_start comes with the first output."""
    scripted_server.app.heartbeat_s = 0.05
    scripted_server.engine.enqueue(["a", "b"], delay=0.3)
    events = stream_events(scripted_server, HELLO)
    names = [n for n, _ in events]
    first_text = names.index("content_block_start")
    assert names[first_text - 1] == "message_start" and set(names[:first_text - 1]) == {"ping"}
    assert names.count("ping") >= 3
    text = "".join(p["delta"]["text"] for n, p in events if n == "content_block_delta")
    assert text == "ab" and names[-1] == "message_stop"
    assert (scripted_server.engine.finished, scripted_server.engine.cancelled) == (1, 0)


def test_a_long_silence_gets_message_start_before_the_output(scripted_server, monkeypatch):
    """A prompt evaluated for longer than START_HOLD_S: message_start goes out then, so that a
    client counting only message events (Claude Code) gets a second window for the first output."""
    monkeypatch.setattr(anthropic_messages, "START_HOLD_S", 0.3)
    scripted_server.app.heartbeat_s = 0.05
    scripted_server.engine.enqueue(["a", "b"], delay=0.8)
    names = [n for n, _ in stream_events(scripted_server, HELLO)]
    start, first_text = names.index("message_start"), names.index("content_block_start")
    assert set(names[:start]) == {"ping"} and 3 <= start < first_text
    assert "ping" in names[start:first_text]  # (the output came later still)
    assert names.count("message_start") == 1 and names[-1] == "message_stop"


def test_disconnect_while_pinging_cancels(scripted_server):
    scripted_server.app.heartbeat_s = 0.05
    engine = scripted_server.engine
    engine.enqueue(["x"] * 50, delay=0.5)
    data = json.dumps(dict(HELLO, stream=True)).encode()
    s = socket.create_connection((scripted_server.host, scripted_server.port))
    s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nx-api-key: "
              + KEY.encode() + b"\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
    received = b""
    while received.count(b"event: ping") < 3:
        received += s.recv(4096)
    s.close()
    deadline = time.time() + 5
    while engine.cancelled != 1 and time.time() < deadline:
        time.sleep(0.01)
    assert engine.cancelled == 1


def test_sdk_stream_accumulates_like_create(scripted_server):
    client = anthropic.Anthropic(base_url=scripted_server.base_url, api_key=KEY, max_retries=0)
    run = ToolExecuted(ToolCall("call_9", "bash", '{"command": "ls"}'), ToolResult("call_9", "a.txt"))
    script = [ReasoningDelta("think"), run, "Hi", " there", ToolCallDelta(0, "call_2", "f", '{"a": 1}'),
              Finish("tool_calls", Usage(7, 4, 2))]
    scripted_server.engine.enqueue(script)
    plain = client.messages.create(model="m", max_tokens=9, messages=[{"role": "user", "content": "x"}])
    scripted_server.engine.enqueue(script)
    with client.messages.stream(model="m", max_tokens=9, messages=[{"role": "user", "content": "x"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Hi there"
    assert [b.type for b in final.content] == ["thinking", "server_tool_use", "text", "tool_use"]
    assert [b.type for b in plain.content] == ["thinking", "server_tool_use", "tool_result", "text",
                                               "tool_use"]  # non-stream: the result is a block too
    assert final.content[1].input == {"command": "ls"}
    plain.content.pop(2)

    def dump(m) -> dict:  # (our server tool names are not in the SDK's literal: no warnings)
        return json.loads(m.model_dump_json(exclude={"id"}, warnings=False).replace(m.content[1].id, "srv"))
    assert dump(final) == dump(plain)
    assert final.usage.input_tokens == 5 and final.usage.cache_read_input_tokens == 2
    counted = client.messages.count_tokens(model="m", messages=[{"role": "user", "content": "x"}])
    assert counted.input_tokens == 7
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="m", max_tokens=9, extra_body={"temperature": 1.5},
                               messages=[{"role": "user", "content": "x"}])


def test_a_text_delta_joined_from_its_fixed_parts_is_the_encoded_event():
    """The hot path (the delta's JSON joined into the event's pre-encoded parts, per block)
    frames exactly what encoding the whole event frames, for text JSON must escape, in a
    thinking block and the text block after it."""
    from unsloth_min.core import ChatRequest, Message, Started, TextDelta
    from unsloth_min.dialects.anthropic_messages import Encoder
    from unsloth_min.http.sse import sse_event
    enc = Encoder(ChatRequest(messages=[Message("user", "x")], stream=True), "m")
    enc.event(Started(3))
    for ev, field in ((ReasoningDelta("a"), "thinking"), (TextDelta("b"), "text")):
        for text in ['héllo "q" \n\t\\ \u2028 🙂', "\x00\x1f", ""]:
            (name, data), = [f for f in enc.event(type(ev)(text)) if f[0] == "content_block_delta"][-1:]
            want = {"type": "content_block_delta", "index": enc.index, "delta": {"type": f"{field}_delta", field: text}}
            assert sse_event(data, name) == sse_event(want, "content_block_delta")
