"""The recorded wire's requests and scripted answers (tests/dialects/test_wire_recorded.py records
and compares them; test_dialect_golden.py replays them without a server)."""
from __future__ import annotations

import os
import re

from unsloth_min.core import (ApiError, Finish, ReasoningDelta, ToolCall, ToolCallDelta, ToolExecuted,
                              ToolResult, Usage)

from .servers import serve_scripted

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "wire",
                       "recorded.json")
IDS = re.compile(r"\b(chatcmpl-|msg_|call_|toolu_|srvtoolu_|resp_|rs_|fc_|ci_|ws_|ct_)[0-9a-f]{16,}")
CLOCKS = re.compile(r'"(created|created_at|completed_at)":\s?\d+')

TEXT = ["Hel", "lo"]
CALL = [ReasoningDelta("think"), "Sure.", ToolCallDelta(0, "call_a1", "get_weather", '{"city":'),
        ToolCallDelta(0, None, None, ' "Paris"}'), ToolCallDelta(1, "call_b2", "get_time", "{}"),
        Finish("tool_calls", Usage(7, 5, 3, 1))]
SERVER = [ToolExecuted(ToolCall("call_p1", "python", '{"code": "print(1)"}'),
                       ToolResult("call_p1", "1\n", "python")), "One.", Finish("stop", Usage(9, 3, 2))]
CUT = ["Long", Finish("length", Usage(7, 1))]
STOPPED = ["Up to", Finish("stop_sequence", Usage(7, 2), "END")]
FAILS = ["partial", ApiError(500, "server_error", "generation failed")]
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

CHAT_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "w",
                                                  "parameters": WEATHER}},
              {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "w", "input_schema": WEATHER},
                   {"name": "get_time", "input_schema": {"type": "object"}}]
RESPONSES_TOOLS = [{"type": "function", "name": "get_weather", "description": "w", "parameters": WEATHER},
                   {"type": "function", "name": "get_time", "parameters": {"type": "object"}}]
USER = [{"role": "user", "content": "hi"}]

CHAT = [
    ({"model": "m", "messages": USER}, TEXT),
    ({"model": "m", "messages": USER, "stream": True}, TEXT),
    ({"model": "m", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}, CALL),
    ({"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                 {"role": "user", "content": [{"type": "text", "text": "a"},
                                                              {"type": "text", "text": "b"}]}],
      "tools": CHAT_TOOLS, "tool_choice": "required", "temperature": 0.2, "top_p": 0.9, "seed": 4,
      "max_completion_tokens": 33, "stop": ["END"], "parallel_tool_calls": False}, CALL),
    ({"model": "m", "messages": USER + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_x", "type": "function",
                                                               "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_x", "content": "noon"}], "tools": CHAT_TOOLS,
      "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, TEXT),
    ({"model": "m", "messages": USER, "response_format": {"type": "json_schema", "json_schema":
                                                          {"name": "w", "schema": WEATHER}}}, CUT),
    ({"model": "m", "messages": USER, "enable_tools": True, "enabled_tools": ["python"],
      "session_id": "s1", "chat_template_kwargs": {"enable_thinking": False}}, SERVER),
    ({"model": "m", "messages": USER, "stream": True, "enable_tools": True}, SERVER),
    ({"model": "m", "messages": USER, "stop": "END"}, STOPPED),
    ({"model": "m", "messages": USER, "stream": True}, FAILS),
    ({"model": "m", "messages": USER, "response_format": {"type": "json_object"}, "n": 1}, TEXT),
    ({"messages": [{"role": "wizard", "content": "x"}]}, None),
    ({"model": "m", "messages": USER, "temperature": 3}, None),
    ({"model": "m", "messages": USER, "tools": [{"type": "function"}]}, None),
    ({"model": "m", "messages": USER, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, None),
    ({"model": "m", "messages": "hi"}, None),
    ({"model": "m", "messages": USER, "response_format": {"type": "xml"}}, None),
]
MESSAGES = [
    ({"model": "m", "max_tokens": 10, "messages": USER}, TEXT),
    ({"model": "m", "max_tokens": 10, "messages": USER, "stream": True}, CALL),
    ({"model": "m", "max_tokens": 10, "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
      "messages": USER + [{"role": "assistant", "content": [
          {"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "text", "text": "x"},
          {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}]},
          {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
              {"type": "text", "text": "noon"}]}, {"type": "text", "text": "thanks"}]}],
      "tools": ANTHROPIC_TOOLS, "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
      "thinking": {"type": "enabled", "budget_tokens": 100}, "stop_sequences": ["END"],
      "temperature": 0.5, "top_k": 5, "metadata": {"user_id": "u"}}, CALL),
    ({"model": "m", "max_tokens": 10, "messages": USER, "tools": ANTHROPIC_TOOLS + [
        {"type": "web_search_20250305", "name": "web_search"}, {"type": "code_execution_20250522",
                                                                "name": "code_execution"}],
      "tool_choice": {"type": "tool", "name": "get_weather"}, "thinking": {"type": "disabled"}}, SERVER),
    ({"model": "m", "max_tokens": 10, "messages": USER, "stream": True, "enable_tools": True}, SERVER),
    ({"model": "m", "max_tokens": 10, "messages": USER, "output_config": {"format": {
        "type": "json_schema", "schema": WEATHER}}}, CUT),
    ({"model": "m", "max_tokens": 10, "messages": USER, "stream": True}, STOPPED),
    ({"model": "m", "max_tokens": 10, "messages": USER, "stream": True}, FAILS),
    ({"model": "m", "messages": USER}, None),
    ({"model": "m", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]}, TEXT),
    ({"model": "m", "max_tokens": 10, "messages": USER, "temperature": 1.5}, None),
    ({"model": "m", "max_tokens": 10, "messages": USER, "tools": [{"type": "bash_2024"}]}, None),
    ({"model": "m", "max_tokens": 10, "messages": USER, "thinking": {"type": "sometimes"}}, None),
    ({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "video"}]}]}, None),
]
RESPONSES = [
    ({"model": "m", "input": "hi"}, TEXT),
    ({"model": "m", "input": "hi", "stream": True}, CALL),
    ({"model": "m", "instructions": "be brief", "input": [
        {"role": "developer", "content": "dev"},
        {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
        {"type": "function_call", "call_id": "call_z", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_z", "output": "noon"}],
      "tools": RESPONSES_TOOLS, "tool_choice": "required", "max_output_tokens": 20,
      "reasoning": {"effort": "low", "summary": "auto"}, "store": False, "temperature": 0.3,
      "parallel_tool_calls": False, "text": {"format": {"type": "json_schema", "name": "w",
                                                          "schema": WEATHER}}}, CALL),
    ({"model": "m", "input": "hi", "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
      "stream": True}, SERVER),
    ({"model": "m", "input": "hi", "enable_tools": True}, SERVER),
    ({"model": "m", "input": "hi", "stream": True}, CUT),
    ({"model": "m", "input": "hi", "stream": True}, FAILS),
    ({"model": "m", "input": "hi", "tool_choice": {"type": "function", "name": "get_time"},
      "tools": RESPONSES_TOOLS}, CALL),
    ({"model": "m"}, None),
    ({"model": "m", "input": [{"role": "wizard", "content": "x"}]}, None),
    ({"model": "m", "input": "hi", "tools": [{"type": "namespace", "name": "n"}]}, None),
    ({"model": "m", "input": "hi", "previous_response_id": "resp_missing"}, None),
    ({"model": "m", "input": "hi", "text": {"format": {"type": "yaml"}}}, None),
]
CASES = ([("/v1/chat/completions", b, s) for b, s in CHAT] + [("/v1/messages", b, s) for b, s in MESSAGES]
         + [("/v1/responses", b, s) for b, s in RESPONSES])


def mask(text: str) -> str:
    return CLOCKS.sub(lambda m: f'"{m.group(1)}":0', IDS.sub(lambda m: m.group(1) + "ID", text))


def record() -> list[dict]:
    out = []
    with serve_scripted() as server:
        for path, body, script in CASES:
            if script is not None:
                server.engine.enqueue(script)
            before = len(server.engine.history)
            status, headers, data = server.request("POST", path, body)
            seen = server.engine.history[before:]
            assert script is not None or not seen, f"a case meant to be refused was answered: {body}"
            out.append({"path": path, "request": body, "status": status,
                        "content_type": headers.get("content-type"),
                        "engine_saw": mask(repr(seen[0])) if seen else None,
                        "body": mask(data.decode())})
        server.engine.enqueue(TEXT)  # the store: a chain, then the stored response by id
        _, first = server.json("POST", "/v1/responses", {"model": "m", "input": "one"})
        server.engine.enqueue(TEXT)
        _, headers, data = server.request("POST", "/v1/responses", {
            "model": "m", "input": "two", "previous_response_id": first["id"]})
        out.append({"path": "previous_response_id", "engine_saw": mask(repr(server.engine.history[-1])),
                    "body": mask(data.decode())})
        _, _, data = server.request("GET", "/v1/responses/" + first["id"])
        out.append({"path": "GET /v1/responses/{id}", "body": mask(data.decode())})
        _, _, data = server.request("POST", "/v1/messages/count_tokens", {
            "model": "m", "messages": USER, "tools": ANTHROPIC_TOOLS})
        out.append({"path": "/v1/messages/count_tokens", "engine_saw": None, "body": data.decode()})
    return out
