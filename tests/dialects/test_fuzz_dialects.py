"""Each dialect's JSON → ChatRequest translation under hypothesis, and the app around it.

Strategy: inputs are arbitrary JSON (keys biased towards the fields the dialects read) and valid
requests with one to three subtrees replaced, deleted or re-typed. The pure property: a dialect's
`parse_*` returns a ChatRequest or raises ApiError with a 4xx status — never another exception.
The app property: the same body (and raw bytes) sent through `App.handle` over a scripted
engine gets 200 or a 4xx in the route's error shape, never a 500 — streams read to their end.
The budget is `UNSLOTH_MIN_FUZZ` examples per test (default 300); each test prints its figures.
"""
from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from hypothesis import given, strategies as st

from support.servers import KEY
from support.fuzzing import FUZZ, report
from support.images import PIXEL, data_uri
from support.scripted import ScriptedEngine
from unsloth_min.app import MAX_JSON_DEPTH, App, json_depth
from unsloth_min.auth import Authenticator
from unsloth_min.core import ApiError, ChatRequest
from unsloth_min.dialects import anthropic_messages, openai_chat, openai_responses
from unsloth_min.http import Request, StreamResponse


TOOL = {"type": "function", "function": {"name": "f", "description": "d",
                                         "parameters": {"type": "object", "properties": {}}}}
VALID = {  # route: (parse function, a rich valid body)
    "/v1/chat/completions": (openai_chat.parse_request, {
        "model": "m", "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                                         {"type": "image_url", "image_url": {"url": data_uri(PIXEL)}}]},
            {"role": "assistant", "content": None, "reasoning_content": "r",
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"}],
        "tools": [TOOL], "tool_choice": "auto", "temperature": 0.5, "max_tokens": 8, "stop": ["x"],
        "stream": False, "stream_options": {"include_usage": True},
        "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
        "enable_thinking": True, "enabled_tools": ["python"], "session_id": "s"}),
    "/v1/messages": (anthropic_messages.parse_request, {
        "model": "m", "max_tokens": 8, "system": [{"type": "text", "text": "s"}], "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image", "source": {
                "type": "base64", "media_type": "image/png", "data": data_uri(PIXEL).split(",", 1)[1]}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": ""},
                                              {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}]}],
        "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}},
                  {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "auto"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "stop_sequences": ["x"], "temperature": 0.5, "metadata": {}, "stream": False}),
    "/v1/messages/count_tokens": (anthropic_messages.parse_count_request, {
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "system": "s"}),
    "/v1/responses": (openai_responses.parse_request, {
        "model": "m", "instructions": "s", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                         {"type": "input_image", "image_url": data_uri(PIXEL)}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "r"}]}],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": "auto", "text": {"format": {"type": "json_object"}},
        "reasoning": {"effort": "low"}, "max_output_tokens": 8, "store": False, "stream": False}),
}
KEYS = sorted({"messages", "role", "content", "type", "text", "image_url", "url", "tools", "function",
               "name", "parameters", "arguments", "tool_calls", "tool_call_id", "tool_choice", "id",
               "max_tokens", "temperature", "stream", "stop", "input", "output", "call_id", "source",
               "media_type", "data", "system", "thinking", "tool_use_id", "input_schema", "format",
               "reasoning", "effort", "schema", "json_schema", "response_format", "text", "stream_options",
               "include_usage", "enable_tools", "enabled_tools", "previous_response_id", "seed", "n"})
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from(["", "user", "assistant", "system", "tool", "text", "function", "auto",
                              "none", "required", "image_url", "tool_use", "tool_result", "enabled",
                              "json_schema", "data:image/png;base64,!!", "http://[::1", "python"])
           | st.text(max_size=12))
JSON = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), kids, max_size=5),
                    max_leaves=25)


def mutated(body, draw, depth=0):
    """`body` with one subtree replaced, deleted, or wrapped; recursion picks where."""
    if isinstance(body, dict) and body and (depth == 0 or draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(body)))
        action = draw(st.sampled_from(["descend", "descend", "replace", "delete", "wrap"]))
        out = dict(body)
        if action == "delete":
            del out[key]
        elif action == "descend":
            out[key] = mutated(body[key], draw, depth + 1)
        else:
            out[key] = draw(JSON) if action == "replace" else [body[key]]
        return out
    if isinstance(body, list) and body and draw(st.integers(0, 3)):
        i = draw(st.integers(0, len(body) - 1))
        return body[:i] + [mutated(body[i], draw, depth + 1)] + body[i + 1:]
    return draw(JSON)


@st.composite
def bodies(draw, route: str):
    """A mutated valid body (1-3 edits), or arbitrary JSON now and then."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    body = VALID[route][1]
    for _ in range(draw(st.integers(1, 3))):
        body = mutated(body, draw)
    return body


def check_parse(parse, body, stats: Counter) -> None:
    stats["inputs"] += 1
    try:
        if not isinstance(body, dict):  # the app refuses these before a dialect sees them
            stats["not an object"] += 1
            return
        assert isinstance(parse(body), ChatRequest)
        stats["parsed"] += 1
    except ApiError as err:
        assert 400 <= err.status < 500, err
        stats[f"ApiError {err.status}"] += 1


class Harness:
    """App.handle over a scripted engine on one private event loop, no sockets."""

    def __init__(self):
        self.engine = ScriptedEngine()
        self.app = App("scripted", Authenticator(None, [KEY]), self.engine)
        self.loop = asyncio.new_event_loop()

    def status(self, path: str, body: bytes) -> tuple[int, bytes]:
        return self.loop.run_until_complete(self._ask(path, body))

    async def _ask(self, path: str, body: bytes) -> tuple[int, bytes]:
        headers = [("host", "localhost"), ("content-type", "application/json"),
                   ("authorization", f"Bearer {KEY}")]
        response = await self.app.handle(Request("POST", path, path, "", "HTTP/1.1", headers, body))
        if isinstance(response, StreamResponse):
            data = b"".join([item async for item in response.body])
            await response.body.aclose()
            return response.status, data
        return response.status, response.body


def check_app(harness: Harness, path: str, body: bytes, stats: Counter) -> None:
    stats["inputs"] += 1
    status, data = harness.status(path, body)
    assert status == 200 or 400 <= status < 500, (status, data[:300])
    assert b"server_error" not in data and b"api_error" not in data, data[:300]
    if status != 200:
        error = json.loads(data)["error"]
        assert error["type"] and error["message"]
    stats[f"status {status}"] += 1


@pytest.mark.parametrize("route", VALID)
def test_fuzz_parse(route, capsys):
    stats = Counter()
    FUZZ(given(bodies(route))(lambda body: check_parse(VALID[route][0], body, stats)))()
    report(capsys, f"parse {route}", stats)
    assert stats["parsed"] > 0 and any(k.startswith("ApiError") for k in stats)  # both outcomes


@pytest.mark.parametrize("route", VALID)
def test_fuzz_app(route, capsys):
    stats, harness = Counter(), Harness()
    raw = st.binary(max_size=60) | bodies(route).map(lambda b: json.dumps(b).encode())
    stream = bodies(route).map(lambda b: json.dumps(dict(b, stream=True) if isinstance(b, dict) else b))
    FUZZ(given(raw | stream.map(str.encode))(lambda body: check_app(harness, route, body, stats)))()
    harness.loop.close()
    report(capsys, f"app {route}", stats)


NEST_AT = {
    "/v1/chat/completions": ('"content": "42"', '"parameters": {"type": "object", "properties": {}}',
                             '"model": "m"'),
    "/v1/messages": ('"content": "42"', '"input_schema": {"type": "object"}', '"model": "m"'),
    "/v1/messages/count_tokens": ('"content": "hi"', '"model": "m"'),
    "/v1/responses": ('"output": "42"', '"parameters": {"type": "object"}', '"model": "m"'),
}


@pytest.mark.parametrize("route", VALID)
@pytest.mark.parametrize("depth", [50, 99, 101, 500, 990, 5000, 200000])
def test_deep_nesting_is_not_a_500(route, depth):
    harness = Harness()
    nested = "[" * depth + "]" * depth
    body = json.dumps(VALID[route][1])
    for place in NEST_AT[route]:  # a message's content, a tool's schema, the model field
        assert place in body, (route, place)
        key = place.split(":")[0]
        status, data = harness.status(route, body.replace(place, f"{key}: {nested}").encode())
        assert status == 200 or 400 <= status < 500, (place, status, data[:200])
    harness.loop.close()


def _set(route: str, path: list, value) -> dict:
    body = json.loads(json.dumps(VALID[route][1]))
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return body


FOUND = [  # inputs the fuzzers found that used to be a 500 (a TypeError): a 200 or a 400 now
    ("/v1/responses", ["input", 3, "summary", 0, "text"], None, None),  # null: as if absent
    ("/v1/responses", ["input", 3, "summary", 0, "text"], 7, "input[3].summary[0].text"),
    ("/v1/responses", ["tool_choice"], {"type": []}, "tool_choice"),
    ("/v1/responses", ["input", 2, "output"], [{"type": "input_text", "text": 5}], "input[2].output[0].text"),
    ("/v1/messages", ["messages", 2, "content", 0, "content"], [{"type": "text", "text": []}],
     "messages[2].content[0].content[0].text"),
]


@pytest.mark.parametrize("route, path, value, param", FOUND)
def test_found_by_fuzzing(route, path, value, param):
    harness = Harness()
    status, data = harness.status(route, json.dumps(_set(route, path, value)).encode())
    harness.loop.close()
    if param is None:
        assert status == 200
        return
    error = json.loads(data)["error"]
    assert status == 400 and error["type"] == "invalid_request_error" and param in error["message"]


def test_json_depth_limit():
    assert json_depth({}) == 1 and json_depth({"a": [1, {"b": []}]}) == 4
    assert json_depth(json.loads("[" * 100 + "]" * 100)) == MAX_JSON_DEPTH
    assert json_depth(json.loads("[" * 900 + "]" * 900)) == MAX_JSON_DEPTH + 1  # stops counting
    harness = Harness()
    ok = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "x": json.loads("[" * 97 + "]" * 97)}
    assert harness.status("/v1/chat/completions", json.dumps(ok).encode())[0] == 200  # 98 deep
    ok["x"] = [[[ok["x"]]]]
    status, data = harness.status("/v1/chat/completions", json.dumps(ok).encode())
    assert status == 400 and b"nested more than 100" in data
    harness.loop.close()
