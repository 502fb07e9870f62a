"""Server tools on the real embedded model: the CLI's server process and the official SDKs.

A `tool_choice` naming `python` forces the first call by grammar-constrained decoding, whatever
the model; `enable_tools` alone must leave every route working (the tools reach the template, the
answer arrives, the SDK stream helpers accumulate).
"""
from __future__ import annotations

import json

import anthropic
import openai
import pytest

from support.servers import KEY, sse_events

pytestmark = pytest.mark.model
CHAT = "/v1/chat/completions"
# greedy, the 135M model writes a short, closed call for this prompt (for "Use python to compute
# 6 * 7." it rambles inside the code string past any cap)
ASK = [{"role": "user", "content": "Run this Python code: print(6 * 7)"}]
TOOLS_ON = {"enable_tools": True, "enabled_tools": ["python"], "session_id": "e2e"}


def sdk_clients(server):
    return (openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0),
            anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0))


def test_enable_tools_keeps_every_route_working(real_server):
    gpt, claude = sdk_clients(real_server)
    status, body = real_server.json("POST", CHAT, {"model": "default", "messages": ASK, "max_tokens": 30,
                                                   **TOOLS_ON})
    assert status == 200 and body["choices"][0]["finish_reason"] in ("stop", "length")
    _, bare = real_server.json("POST", CHAT, {"model": "default", "messages": ASK, "max_tokens": 1})
    assert body["usage"]["prompt_tokens"] > bare["usage"]["prompt_tokens"] + 30  # the tools' section
    with gpt.chat.completions.stream(model="default", messages=ASK, max_tokens=20,
                                     extra_body=TOOLS_ON) as s:
        for _ in s:  # (get_final_completion() refuses finish_reason "length": not an error here)
            pass
        assert s.current_completion_snapshot.choices[0].message.role == "assistant"
    with claude.messages.stream(model="default", max_tokens=20, messages=ASK, extra_body=TOOLS_ON) as s:
        final = s.get_final_message()
        assert final.role == "assistant" and final.stop_reason in ("end_turn", "max_tokens", "tool_use")
        prompt = final.usage.input_tokens + final.usage.cache_read_input_tokens  # (Anthropic's split)
        assert final.content and prompt > bare["usage"]["prompt_tokens"] + 30
    with gpt.responses.stream(model="default", input=ASK[0]["content"], max_output_tokens=20,
                              extra_body=TOOLS_ON) as s:
        kinds = [ev.type for ev in s]  # (get_final_response() wants "completed"; 20 tokens may not do)
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")


def test_forced_python_call_on_chat(real_server):
    body = {"model": "default", "messages": ASK, "stream": True, "max_tokens": 200, "temperature": 0,
            "tool_choice": {"type": "function", "function": {"name": "python"}}, **TOOLS_ON}
    status, _, data = real_server.request("POST", CHAT, body)
    results = [json.loads(d) for name, d in sse_events(data) if name == "tool_result"]
    assert status == 200 and results and results[0]["name"] == "python" and results[0]["choices"] == []
    status, plain = real_server.json("POST", CHAT, dict(body, stream=False))
    assert plain["choices"][0]["message"]["tool_results"][0]["name"] == "python"
    assert plain["choices"][0]["finish_reason"] in ("stop", "length")
    gpt, _ = sdk_clients(real_server)
    with gpt.chat.completions.stream(model="default", messages=ASK, max_tokens=200, temperature=0,
                                     tool_choice={"type": "function", "function": {"name": "python"}},
                                     extra_body=TOOLS_ON) as s:
        for _ in s:
            pass
        assert s.current_completion_snapshot.choices[0].message.content is not None


def test_forced_python_call_on_messages(real_server):
    _, claude = sdk_clients(real_server)
    with claude.messages.stream(model="default", max_tokens=200, messages=ASK,
                                extra_body=dict(TOOLS_ON, temperature=0),  # (this SDK has no
                                # `temperature` argument; the API still takes it)
                                tool_choice={"type": "tool", "name": "python"}) as s:
        final = s.get_final_message()
    assert final.content[0].type == "server_tool_use" and final.content[0].name == "python"
    plain = claude.messages.create(model="default", max_tokens=200, messages=ASK,
                                   extra_body=dict(TOOLS_ON, temperature=0),
                                   tool_choice={"type": "tool", "name": "python"})
    assert [b.type for b in plain.content][:2] == ["server_tool_use", "tool_result"]


def test_forced_python_call_on_responses(real_server):
    gpt, _ = sdk_clients(real_server)
    with gpt.responses.stream(model="default", input=ASK[0]["content"], max_output_tokens=200,
                              temperature=0,
                              tool_choice={"type": "function", "name": "python"},
                              extra_body=TOOLS_ON) as s:
        # the model's answer after the tool may run into the cap: completed or incomplete both end
        # the stream (get_final_response() accepts only the first)
        ends = [e.response for e in s if e.type in ("response.completed", "response.incomplete")]
    response = ends[-1]
    assert response.output[0].type == "code_interpreter_call"
