"""Server tools end to end over HTTP: a scripted engine (exact calls) and the real tools behind it."""
from __future__ import annotations

import json
import time

import anthropic
import openai

from support.servers import KEY, sse_events, wait_for
from unsloth_min.core import Finish, ToolCallDelta, Usage

CHAT = "/v1/chat/completions"


def python_call(code: str, index: int = 0) -> list:
    return [ToolCallDelta(index, f"call_py{index}", "python", json.dumps({"code": code})),
            Finish("tool_calls", Usage(7, 3))]


def ask(server, code: str, session: str | None = None, **extra) -> dict:
    """One chat request whose first round calls python with `code`; the second round says "ok"."""
    server.engine.enqueue(python_call(code))
    server.engine.enqueue(["ok"])
    body = {"model": "m", "messages": [{"role": "user", "content": "run it"}], "enable_tools": True,
            **extra}
    if session:
        body["session_id"] = session
    status, out = server.json("POST", CHAT, body)
    assert status == 200, out
    return out


def result_of(body: dict) -> dict:
    (result,) = body["choices"][0]["message"]["tool_results"]
    return result


def test_session_state_persists_and_sessions_are_isolated(tool_server):
    ask(tool_server, "x = 41", session="one")
    body = ask(tool_server, "x + 1", session="one")
    assert result_of(body) == {"type": "tool_result", "tool_call_id": "call_py0", "name": "python",
                               "arguments": '{"code": "x + 1"}', "content": "42", "is_error": False}
    msg = body["choices"][0]["message"]
    assert msg["content"] == "ok" and "tool_calls" not in msg
    # no client tools and no tool_choice: the model may still choose the server tools
    assert [r.tool_choice for r in tool_server.engine.history[-2:]] == ["auto", "auto"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 3 + 1 and body["usage"]["prompt_tokens"] == 14
    other = result_of(ask(tool_server, "x", session="two"))
    assert other["is_error"] and "NameError" in other["content"]
    fed_back = tool_server.engine.history[-1].messages[-1]
    assert fed_back.role == "tool" and "NameError" in fed_back.parts[0].content


def test_infinite_loop_is_interrupted_and_the_session_goes_on(tool_server):
    ask(tool_server, "y = 'kept'", session="loop")
    start = time.monotonic()
    stuck = result_of(ask(tool_server, "while True: pass", session="loop"))
    assert time.monotonic() - start < 3.0 + 4 and stuck["is_error"] and "interrupted" in stuck["content"]
    assert result_of(ask(tool_server, "y", session="loop"))["content"] == "'kept'"


def test_stream_reports_tool_result_events_and_the_sdk_accumulates(tool_server):
    tool_server.engine.enqueue(python_call("print(6 * 7)"))
    tool_server.engine.enqueue(["The answer is 42."])
    body = {"model": "m", "messages": [{"role": "user", "content": "6*7?"}], "stream": True,
            "enable_tools": True, "enabled_tools": ["python"]}
    status, _, data = tool_server.request("POST", CHAT, body)
    events = sse_events(data)
    assert status == 200 and events[-1] == (None, "[DONE]")
    (name, payload), = [e for e in events if e[0] == "tool_result"]
    result = json.loads(payload)
    assert result["choices"] == [] and result["object"] == "chat.completion.chunk"
    assert (result["name"], result["content"], result["is_error"]) == ("python", "42", False)
    chunks = [json.loads(d) for n, d in events[:-1] if n is None]
    assert not any("tool_calls" in c["choices"][0]["delta"] for c in chunks if c["choices"])
    # no session_id: the request's kernel is gone after it
    tools = tool_server.app.tools
    assert wait_for(lambda: not tools.kernels.live and not list(tools.root.glob("r-*")), 10)

    client = openai.OpenAI(base_url=tool_server.base_url + "/v1", api_key=KEY, max_retries=0)
    tool_server.engine.enqueue(python_call("print(6 * 7)"))
    tool_server.engine.enqueue(["The answer is 42."])
    with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "6*7?"}],
                                        extra_body={"enable_tools": True}) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "The answer is 42."
    assert final.choices[0].finish_reason == "stop"


def test_bash_through_anthropic_and_responses_sdk_streams(tool_server):
    def bash_round():
        tool_server.engine.enqueue([ToolCallDelta(0, "call_sh", "bash", '{"command": "echo hi"}'),
                                    Finish("tool_calls", Usage(7, 2))])
        tool_server.engine.enqueue(["done"])
    bash_round()
    claude = anthropic.Anthropic(base_url=tool_server.base_url, api_key=KEY, max_retries=0)
    with claude.messages.stream(model="m", max_tokens=50, messages=[{"role": "user", "content": "x"}],
                                extra_body={"enable_tools": True, "enabled_tools": ["terminal"]}) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["server_tool_use", "text"]
    assert final.content[0].input == {"command": "echo hi"} and final.stop_reason == "end_turn"
    assert [t.name for t in tool_server.engine.history[-1].tools] == ["bash"]
    claude.messages.create(model="m", max_tokens=50, messages=[{"role": "user", "content": "x"}],
                           tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert tool_server.engine.history[-1].tool_choice == "auto"  # Anthropic's server tool type
    bash_round()
    gpt = openai.OpenAI(base_url=tool_server.base_url + "/v1", api_key=KEY, max_retries=0)
    with gpt.responses.stream(model="m", input="x", extra_body={"enable_tools": True}) as s:
        response = s.get_final_response()
    assert [item.type for item in response.output] == ["shell_call", "message"]
    assert response.output_text == "done" and response.status == "completed"
    gpt.responses.create(model="m", input="x", tools=[{"type": "code_interpreter",
                                                      "container": {"type": "auto"}}])
    assert [t.name for t in tool_server.engine.history[-1].tools] == ["python"]
    assert tool_server.engine.history[-1].tool_choice == "auto"


def test_per_request_cap_and_plain_requests_untouched(tool_server):
    tool_server.engine.enqueue(python_call("1"))  # the model calls although told not to
    status, out = tool_server.json("POST", CHAT, {"model": "m", "enable_tools": True, "max_tool_calls": 0,
                                                  "messages": [{"role": "user", "content": "x"}]})
    assert [r.tool_choice for r in tool_server.engine.history] == ["none"]
    result = result_of(out)
    assert result["is_error"] and result["content"].startswith("not run")
    assert out["choices"][0]["finish_reason"] == "stop" and not tool_server.app.tools.kernels.live
    tool_server.engine.enqueue(["plain"])
    status, out = tool_server.json("POST", CHAT, {"model": "m", "messages": [
        {"role": "user", "content": "hi"}]})
    assert out["choices"][0]["message"]["content"] == "plain" and tool_server.engine.history[-1].tools == []
    status, err = tool_server.json("POST", CHAT, {"model": "m", "max_tool_calls": -1,
                                                  "messages": [{"role": "user", "content": "x"}]})
    assert status == 400 and err["error"]["param"] == "max_tool_calls"


def test_tool_choice_must_name_an_offered_tool_in_every_dialect(tool_server):
    """With server tools on, a named tool_choice may be a server tool (or its alias) — but not a
    name nobody offers: that is a 400 on all three routes, not a silently dropped choice."""
    on = {"enable_tools": True, "enabled_tools": ["python"]}
    user = [{"role": "user", "content": "hi"}]
    bodies = {
        "/v1/chat/completions": lambda name: dict(on, model="m", messages=user, tool_choice={
            "type": "function", "function": {"name": name}}),
        "/v1/messages": lambda name: dict(on, model="m", max_tokens=5, messages=user,
                                          tool_choice={"type": "tool", "name": name}),
        "/v1/responses": lambda name: dict(on, model="m", input="hi",
                                           tool_choice={"type": "function", "name": name}),
    }
    for path, body in bodies.items():
        status, answer = tool_server.json("POST", path, body("nope"))
        assert status == 400 and "nope" in json.dumps(answer), (path, answer)
        tool_server.engine.enqueue(["ok"])
        status, _ = tool_server.json("POST", path, body("terminal"))  # bash's alias
        assert status == 200, path
        assert tool_server.engine.history[-1].tool_name == "bash"
