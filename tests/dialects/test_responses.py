"""OpenAI Responses over a scripted engine: golden JSON and SSE, parsing, the store, errors, the SDK."""
from __future__ import annotations

import json

import openai
import pytest

from support.servers import KEY, sse_events
from support.images import PIXEL, data_uri
from unsloth_min.core import (Finish, Image, Message, Reasoning, ReasoningDelta, Text, ToolCall,
                              ToolCallDelta, ToolExecuted, ToolResult, Usage)
from unsloth_min.responses_store import ResponseStore

RESPONSES = "/v1/responses"
HELLO = {"model": "gpt-x", "input": "hi"}
USAGE = {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
         "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 9}
ECHO = {"background": False, "error": None, "incomplete_details": None, "instructions": None,
        "max_output_tokens": None, "max_tool_calls": None, "metadata": {}, "parallel_tool_calls": True,
        "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
        "service_tier": "default", "store": True, "temperature": None, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": [], "top_logprobs": 0, "top_p": None, "truncation": "disabled",
        "user": None, "model": "scripted", "object": "response"}
SCRIPT = [ReasoningDelta("hmm"), "Hi", ToolCallDelta(0, "call_1", "get_weather", '{"city":'),
          ToolCallDelta(0, None, None, '"Paris"}'), Finish("tool_calls", Usage(7, 4, 0))]


def stream_events(server, body) -> list[tuple[str, dict]]:
    status, headers, data = server.request("POST", RESPONSES, dict(body, stream=True))
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    return [(name, json.loads(payload)) for name, payload in sse_events(data)]


def check_stream_invariants(events) -> None:
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
    assert all(name == e["type"] for name, e in events)
    ids = {e["response"]["id"] for _, e in events if "response" in e}
    assert len(ids) == 1
    items = {}
    for _, e in events:
        if e["type"] == "response.output_item.added":
            assert e["output_index"] == len(items)
            items[e["output_index"]] = e["item"]["id"]
        elif "item_id" in e:
            assert items[e["output_index"]] == e["item_id"]


def test_plain_response_golden(scripted_server):
    scripted_server.engine.enqueue(["Hel", "lo"])
    status, body = scripted_server.json("POST", RESPONSES, HELLO)
    assert status == 200 and body["id"].startswith("resp_")
    assert isinstance(body["created_at"], int) and isinstance(body["completed_at"], int)
    msg_id = body["output"][0]["id"]
    assert msg_id.startswith("msg_")
    for key in ("id", "created_at", "completed_at"):
        del body[key]
    assert body == dict(ECHO, status="completed", output_text="Hello", usage=USAGE, output=[
        {"id": msg_id, "type": "message", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}]}])


def test_stream_golden(scripted_server):
    scripted_server.engine.enqueue(["a", "b"])
    events = stream_events(scripted_server, HELLO)
    check_stream_invariants(events)
    final = events[-1][1]["response"]
    msg = final["output"][0]
    where = {"item_id": msg["id"], "output_index": 0}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    start = dict(final, status="in_progress", output=[], output_text="", usage=None, completed_at=None)
    expected = [
        {"type": "response.created", "response": start},
        {"type": "response.in_progress", "response": start},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"id": msg["id"], "type": "message", "status": "in_progress", "role": "assistant",
                  "content": []}},
        {"type": "response.content_part.added", **where, "content_index": 0, "part": part},
        {"type": "response.output_text.delta", **where, "content_index": 0, "delta": "a", "logprobs": []},
        {"type": "response.output_text.delta", **where, "content_index": 0, "delta": "b", "logprobs": []},
        {"type": "response.output_text.done", **where, "content_index": 0, "text": "ab", "logprobs": []},
        {"type": "response.content_part.done", **where, "content_index": 0, "part": dict(part, text="ab")},
        {"type": "response.output_item.done", "output_index": 0, "item": msg},
        {"type": "response.completed", "response": final},
    ]
    assert [{k: v for k, v in e.items() if k != "sequence_number"} for _, e in events] == expected
    assert msg == {"id": msg["id"], "type": "message", "status": "completed", "role": "assistant",
                   "content": [dict(part, text="ab")]}
    assert final["status"] == "completed" and final["output_text"] == "ab" and final["usage"] == USAGE


def test_reasoning_and_function_call_items(scripted_server):
    scripted_server.engine.enqueue(SCRIPT)
    _, body = scripted_server.json("POST", RESPONSES, HELLO)
    reasoning, message, call = body["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_")
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "hmm"}] and reasoning["summary"] == []
    assert message["content"][0]["text"] == "Hi" and body["output_text"] == "Hi"
    assert call == {"id": call["id"], "type": "function_call", "status": "completed", "call_id": "call_1",
                    "name": "get_weather", "arguments": '{"city":"Paris"}'}
    scripted_server.engine.enqueue(SCRIPT)
    events = stream_events(scripted_server, HELLO)
    check_stream_invariants(events)
    assert [n for n, _ in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert events[-3][1]["arguments"] == '{"city":"Paris"}' and events[-3][1]["name"] == "get_weather"


def test_incomplete_and_server_tool(scripted_server):
    run = ToolExecuted(ToolCall("call_5", "python", '{"code": "6*7"}'), ToolResult("call_5", "42"))
    scripted_server.engine.enqueue([run, "It is", Finish("length", Usage(7, 3, 2))])
    _, body = scripted_server.json("POST", RESPONSES, HELLO)
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    tool, message = body["output"]
    assert tool["type"] == "code_interpreter_call" and tool["code"] == "6*7"
    assert tool["outputs"] == [{"type": "logs", "logs": "42"}] and message["status"] == "incomplete"
    assert body["usage"]["input_tokens_details"]["cached_tokens"] == 2
    scripted_server.engine.enqueue([run, "It is", Finish("length", Usage(7, 3, 2))])
    events = stream_events(scripted_server, HELLO)
    check_stream_invariants(events)
    names = [n for n, _ in events]
    assert names[2:5] == ["response.output_item.added", "response.output_item.done", "tool_result"]
    assert events[4][1]["content"] == "42" and events[4][1]["item_id"] == events[2][1]["item"]["id"]
    assert names[-1] == "response.incomplete"


def test_error_after_first_byte_is_response_failed(scripted_server):
    scripted_server.engine.enqueue(["a", RuntimeError("boom")])
    events = stream_events(scripted_server, HELLO)
    check_stream_invariants(events)
    name, last = events[-1]
    assert name == "response.failed" and last["response"]["status"] == "failed"
    assert last["response"]["error"] == {"code": "server_error", "message": "generation failed"}


def test_input_items_reach_the_engine(scripted_server):
    body = {
        "model": "m", "instructions": "Be brief.", "max_output_tokens": 30, "temperature": 0.4,
        "top_p": 0.8, "reasoning": {"effort": "none"}, "metadata": {"k": "v"}, "user": "u1",
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "get_weather"}, "parallel_tool_calls": False,
        "input": [
            {"role": "developer", "content": "Use metric."},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Weather?"},
                {"type": "input_image", "image_url": data_uri(PIXEL)}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text",
                                                                          "text": "think"}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "cold"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Cold."}]},
            {"role": "user", "content": "Thanks"},
        ]}
    status, out = scripted_server.json("POST", RESPONSES, body)
    assert status == 200
    req = scripted_server.engine.history[0]
    assert [m.role for m in req.messages] == ["system", "system", "user", "assistant", "tool",
                                              "assistant", "user"]
    assert req.messages[0].text == "Be brief." and req.messages[1].text == "Use metric."
    assert req.messages[2].parts == [Text("Weather?"), Image(data=PIXEL, media_type="image/png")]
    assert req.messages[3].parts == [Reasoning("think"), ToolCall("call_1", "get_weather", "{}")]
    assert req.messages[4].parts == [ToolResult("call_1", "cold", "get_weather")]
    s = req.sampling
    assert (s.max_tokens, s.temperature, s.top_p) == (30, 0.4, 0.8)
    assert req.enable_thinking is False and req.response_schema == {"type": "object"}
    assert (req.tool_choice, req.tool_name, req.parallel_tool_calls) == ("function", "get_weather", False)
    assert out["instructions"] == "Be brief." and out["metadata"] == {"k": "v"} and out["user"] == "u1"
    assert out["tool_choice"] == body["tool_choice"] and out["tools"] == body["tools"]
    assert out["text"] == {"format": body["text"]["format"]} and out["max_output_tokens"] == 30


@pytest.mark.parametrize("patch, param", [
    ({"input": None}, "input"), ({"input": 5}, "input"), ({"input": [{"role": "wizard", "content": "x"}]},
                                                          "input[0].role"),
    ({"input": [{"type": "audio"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"temperature": 3}, "temperature"), ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"top_p": -1}, "top_p"), ({"store": "no"}, "store"), ({"instructions": 5}, "instructions"),
    ({"tools": [{"type": "file_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "function"}]}, "tools[0].name"), ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"reasoning": {"effort": "huge"}}, "reasoning.effort"), ({"metadata": 3}, "metadata"),
])
def test_bad_fields_are_400_naming_the_field(scripted_server, patch, param):
    body = {k: v for k, v in dict(HELLO, **patch).items() if v is not None}
    status, err = scripted_server.json("POST", RESPONSES, body)
    assert status == 400 and err["error"]["type"] == "invalid_request_error"
    assert err["error"]["param"] == param and param.split("[")[0].split(".")[0] in err["error"]["message"]


def test_previous_response_id_chain_and_get(scripted_server):
    engine = scripted_server.engine
    engine.enqueue(["Paris."])
    _, first = scripted_server.json("POST", RESPONSES, {"model": "m", "instructions": "Old rules.",
                                                        "input": "Capital of France?"})
    assert scripted_server.json("GET", f"{RESPONSES}/{first['id']}") == (200, first)
    engine.enqueue(["Lyon."])
    _, second = scripted_server.json("POST", RESPONSES, {"model": "m", "instructions": "New rules.",
                                                         "previous_response_id": first["id"],
                                                         "input": "And the second city?"})
    assert second["previous_response_id"] == first["id"]
    req = engine.history[1]
    assert [(m.role, m.text) for m in req.messages] == [
        ("system", "New rules."), ("user", "Capital of France?"), ("assistant", "Paris."),
        ("user", "And the second city?")]
    _, _third = scripted_server.json("POST", RESPONSES, {"model": "m", "previous_response_id": second["id"],
                                                         "input": [{"role": "user", "content": "Third?"}]})
    assert [m.text for m in engine.history[2].messages] == [
        "Capital of France?", "Paris.", "And the second city?", "Lyon.", "Third?"]


def test_unknown_and_unstored_ids_are_404(scripted_server):
    status, err = scripted_server.json("POST", RESPONSES, dict(HELLO, previous_response_id="resp_nope"))
    assert status == 404 and err["error"]["param"] == "previous_response_id"
    assert err["error"]["type"] == "not_found_error" and "resp_nope" in err["error"]["message"]
    assert not scripted_server.engine.history
    _, unstored = scripted_server.json("POST", RESPONSES, dict(HELLO, store=False))
    assert unstored["store"] is False
    status, err = scripted_server.json("GET", f"{RESPONSES}/{unstored['id']}")
    assert status == 404 and err["error"]["type"] == "not_found_error"
    again = dict(HELLO, previous_response_id=unstored["id"])
    assert scripted_server.json("POST", RESPONSES, again)[0] == 404
    status, headers, _ = scripted_server.request("DELETE", f"{RESPONSES}/x")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert scripted_server.request("GET", RESPONSES, key=False)[0] == 401


def test_streamed_response_is_stored(scripted_server):
    scripted_server.engine.enqueue(["a", "b"])
    events = stream_events(scripted_server, HELLO)
    final = events[-1][1]["response"]
    assert scripted_server.json("GET", f"{RESPONSES}/{final['id']}") == (200, final)
    scripted_server.json("POST", RESPONSES, {"model": "m", "previous_response_id": final["id"],
                                             "input": "more"})
    assert [m.text for m in scripted_server.engine.history[1].messages] == ["hi", "ab", "more"]


def test_store_is_bounded():
    now = [0.0]
    store = ResponseStore(max_entries=3, max_age_s=100, clock=lambda: now[0])
    for i in range(3):
        store.put({"id": f"r{i}"}, [Message("user", [Text(str(i))])])
    assert store.get("r0") is not None  # now most recently used
    store.put({"id": "r3"}, [])
    assert len(store) == 3 and store.get("r1") is None  # the least recently used went
    assert [k for k in store.entries] == ["r2", "r0", "r3"]
    now[0] = 50
    store.put({"id": "r4"}, [])
    now[0] = 120  # r0, r2 and r3 (put at 0) are past 100 s; r4 (put at 50) is not
    assert store.get("r0") is None and store.get("r4") is not None and len(store) == 1


def test_sdk_stream_accumulates_like_create(scripted_server):
    client = openai.OpenAI(base_url=scripted_server.base_url + "/v1", api_key=KEY, max_retries=0)
    scripted_server.engine.enqueue(SCRIPT)
    plain = client.responses.create(model="m", input="hi")
    scripted_server.engine.enqueue(SCRIPT)
    with client.responses.stream(model="m", input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Hi"] and final.output_text == plain.output_text == "Hi"
    assert [o.type for o in final.output] == ["reasoning", "message", "function_call"]
    assert final.output[2].arguments == plain.output[2].arguments == '{"city":"Paris"}'
    assert final.usage.total_tokens == plain.usage.total_tokens == 11
    assert client.responses.retrieve(final.id).id == final.id
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="m", input="x", previous_response_id="resp_missing")
