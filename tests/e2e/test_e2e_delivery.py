"""Output tokens counted are output delivered, on the real model (issue: an Anthropic stream with a
forced server tool reported 160+ output tokens and sent no content block at all).

The forced `python` call of "compute 3+4 in python" often rambles inside its code string until
`max_tokens`: that call is cut off, not run, and must still reach the client (a server tool block
or item with a "not run" result, and max_tokens/length/incomplete as the reason). Each dialect,
streamed and not, several times on one server: the first request reads a cold cache, the
repeats a warm one.
"""
from __future__ import annotations

import json

import pytest

from support.servers import sse_events
from unsloth_min.agent import CUT_OFF

pytestmark = pytest.mark.model
ASK = [{"role": "user", "content": "compute 3+4 in python"}]
TOOLS = {"model": "default", "enable_tools": True, "enabled_tools": ["python"]}
BODIES = {
    "/v1/messages": dict(TOOLS, max_tokens=160, messages=ASK,
                         tool_choice={"type": "tool", "name": "python"}),
    "/v1/chat/completions": dict(TOOLS, max_tokens=160, messages=ASK, stream_options=None,
                                 tool_choice={"type": "function", "function": {"name": "python"}}),
    "/v1/responses": dict(TOOLS, max_output_tokens=160, input=ASK,
                          tool_choice={"type": "function", "name": "python"}),
}
REPEATS = 2


def messages_answer(body: bytes, stream: bool) -> tuple[int, int, str]:
    if not stream:
        j = json.loads(body)
        return j["usage"]["output_tokens"], len(j["content"]), j["stop_reason"]
    events = [(name, json.loads(data)) for name, data in sse_events(body)]
    delta = [d for name, d in events if name == "message_delta"][-1]
    blocks = sum(name in ("content_block_start", "tool_result") for name, _ in events)
    return delta["usage"]["output_tokens"], blocks, delta["delta"]["stop_reason"]


def chat_answer(body: bytes, stream: bool) -> tuple[int, int, str]:
    if not stream:
        j = json.loads(body)
        m, choice = j["choices"][0]["message"], j["choices"][0]
        items = bool(m.get("content")) + len(m.get("tool_calls") or []) + len(m.get("tool_results") or [])
        return j["usage"]["completion_tokens"], items, choice["finish_reason"]
    events = [(name, json.loads(data)) for name, data in sse_events(body) if data != "[DONE]"]
    items = sum(1 for name, c in events if name == "tool_result" or any(
        ch["delta"].get("content") or ch["delta"].get("tool_calls") for ch in c.get("choices", [])))
    usage = [c["usage"] for _, c in events if c.get("usage")][-1]
    reason = [ch["finish_reason"] for _, c in events for ch in c.get("choices", []) if ch["finish_reason"]]
    return usage["completion_tokens"], items, reason[-1]


def responses_answer(body: bytes, stream: bool) -> tuple[int, int, str]:
    if stream:
        ends = [json.loads(data) for name, data in sse_events(body)
                if name in ("response.completed", "response.incomplete")]
        j = ends[-1]["response"]
    else:
        j = json.loads(body)
    reason = j["status"] + ("/" + j["incomplete_details"]["reason"] if j.get("incomplete_details") else "")
    return j["usage"]["output_tokens"], len(j["output"]), reason


ANSWERS = {"/v1/messages": messages_answer, "/v1/chat/completions": chat_answer,
           "/v1/responses": responses_answer}


@pytest.mark.parametrize("path", list(BODIES))
def test_output_tokens_reported_are_delivered(real_server, path):
    since, seen = real_server.log_size(), []
    for stream in (False, True) * REPEATS:
        body = dict(BODIES[path], stream=stream)
        if stream and path == "/v1/chat/completions":
            body["stream_options"] = {"include_usage": True}
        status, _, data = real_server.request("POST", path, {k: v for k, v in body.items() if v is not None})
        assert status == 200, data
        output, items, reason = ANSWERS[path](data, stream)
        seen.append((stream, output, items, reason))
        assert output > 0 and items > 0, (seen, data[-3000:])
    assert "Traceback" not in real_server.log_text(since)


def test_a_cut_off_server_call_is_reported_as_not_run(real_server):
    """18 tokens hold the forced call's opening (`<tool_call>{"name": "python", "arguments":
    {"code": "`, 15-16 tokens) and no room to close it: the call is cut off inside its code on
    any CPU. It is in the answer, its result says why it did not run, the reason is max_tokens."""
    # (no repeat penalty: the embedded model's default one spreads the call's JSON over more tokens)
    status, j = real_server.json("POST", "/v1/messages", dict(BODIES["/v1/messages"], max_tokens=18,
                                                              temperature=0, repetition_penalty=1.0))
    assert status == 200
    assert (j["stop_reason"], j["usage"]["output_tokens"]) == ("max_tokens", 18)
    use, result = j["content"]
    assert use["type"] == "server_tool_use" and use["name"] == "python"
    assert result["type"] == "tool_result" and result["is_error"] and result["content"] == CUT_OFF
