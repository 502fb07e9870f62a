"""The compatibility policy (README "Clients") field by field, over a scripted engine: what the
real clients send is mapped where it means something here, ignored where it only steers a hosted
service, refused (test_client_fixtures) where ignoring it would change the answer."""
from __future__ import annotations

import json

from support.servers import sse_events
from unsloth_min.core import Message, Text, ToolCallDelta, Finish, Usage
from unsloth_min.engine.formats import fold_system, system_before_user

HI = [{"role": "user", "content": "hi"}]


def test_claude_code_system_turns_billing_block_effort_and_context_management(scripted_server):
    body = {"model": "claude-opus-4-8", "max_tokens": 64000, "stream": False,
            "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1; cch=1;"},
                       {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "messages": HI + [{"role": "system", "content": "Agent types: none"},
                              {"role": "assistant", "content": "ok"}, {"role": "user", "content": "go"}],
            "thinking": {"type": "adaptive"}, "output_config": {"effort": "low"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "metadata": {"user_id": "{\"device_id\": \"d\"}"}, "client_side_future_field": 1}
    status, _ = scripted_server.json("POST", "/v1/messages?beta=true", body,
                                     headers={"anthropic-beta": "mid-conversation-system-2026-04-07,made-up-2099"})
    assert status == 200
    req = scripted_server.engine.history[-1]
    assert [(m.role, m.text) for m in req.messages] == [
        ("system", "You are Claude Code."), ("user", "hi"), ("system", "Agent types: none"),
        ("assistant", "ok"), ("user", "go")]
    assert req.enable_thinking is False  # adaptive thinking at low effort: off
    body["output_config"] = {"effort": "high"}
    assert scripted_server.json("POST", "/v1/messages", body)[0] == 200
    assert scripted_server.engine.history[-1].enable_thinking is True


def test_a_template_that_refuses_late_system_turns_gets_them_folded():
    ms = [Message("system", [Text("S")]), Message("user", [Text("u1")]), Message("system", [Text("late")]),
          Message("assistant", [Text("a")]), Message("user", [Text("u2")]), Message("system", [Text("last")])]
    assert [(m.role, m.text) for m in fold_system(ms)] == [
        ("system", "S"), ("user", "u1"), ("assistant", "a"), ("user", "late\n\nu2\n\nlast")]
    assert fold_system(ms[:2]) is None


def test_system_turns_after_a_user_turn_are_rendered_before_it():
    """Claude Code 2.1.332's first request: the user's request, then its environment block as a
    system turn; the model must answer the request, not go on with the environment text."""
    ms = [Message("system", [Text("S")]), Message("user", [Text("u1")]), Message("system", [Text("e1")]),
          Message("system", [Text("e2")]), Message("assistant", [Text("a")]), Message("system", [Text("x")]),
          Message("user", [Text("u2")]), Message("system", [Text("last")])]
    assert [m.text for m in system_before_user(ms)] == ["S", "e1", "e2", "u1", "a", "x", "last", "u2"]
    assert [m.text for m in system_before_user(ms[:2])] == ["S", "u1"]


CODEX_TOOLS = [
    {"type": "function", "name": "exec_command", "parameters": {"type": "object"}, "strict": False},
    {"type": "namespace", "name": "multi_agent_v1", "description": "agents",
     "tools": [{"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}]},
    {"type": "custom", "name": "apply_patch", "description": "patch",
     "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
    {"type": "web_search", "external_web_access": False}]


def codex_body(**kw) -> dict:
    return dict({"model": "default", "input": [{"role": "developer", "content": "dev"}] + HI,
                 "tools": CODEX_TOOLS, "tool_choice": "auto", "store": False, "stream": False,
                 "include": ["reasoning.encrypted_content"], "prompt_cache_key": "thread-1",
                 "client_metadata": {"x": "y"}, "reasoning": {"summary": "auto"}}, **kw)


def test_codex_namespace_custom_and_web_search_tools(scripted_server):
    engine = scripted_server.engine
    engine.enqueue([ToolCallDelta(0, "call_n", "multi_agent_v1.spawn_agent", '{"task": "t"}'),
                    ToolCallDelta(1, "call_p", "apply_patch", '{"input": "*** Begin Patch\\n"}'),
                    Finish("tool_calls", Usage(7, 3))])
    status, resp = scripted_server.json("POST", "/v1/responses", codex_body())
    assert status == 200, resp
    req = engine.history[-1]
    assert [t.name for t in req.tools] == ["exec_command", "multi_agent_v1.spawn_agent", "apply_patch"]
    assert req.tools[2].parameters["properties"] == {"input": {"type": "string"}}
    assert not req.enable_tools  # the web_search that wants no live web access is dropped
    call, patch = resp["output"]
    assert (call["type"], call["name"], call["namespace"]) == ("function_call", "spawn_agent", "multi_agent_v1")
    assert (patch["type"], patch["name"], patch["input"]) == ("custom_tool_call", "apply_patch",
                                                             "*** Begin Patch\n")
    # the next turn sends both back, with their outputs
    history = codex_body(input=HI + [
        {"type": "function_call", "call_id": "call_n", "name": "spawn_agent", "namespace": "multi_agent_v1",
         "arguments": "{}"}, {"type": "function_call_output", "call_id": "call_n", "output": "spawned"},
        {"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch", "input": "diff"},
        {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Done!"}])
    assert scripted_server.json("POST", "/v1/responses", history)[0] == 200
    calls = [p for m in engine.history[-1].messages for p in m.parts if hasattr(p, "arguments")]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("multi_agent_v1.spawn_agent", {}), ("apply_patch", {"input": "diff"})]


def test_a_streamed_custom_call_ends_with_its_input(scripted_server):
    scripted_server.engine.enqueue([ToolCallDelta(0, "call_p", "apply_patch", '{"input": "a'),
                                    ToolCallDelta(0, None, None, 'b"}'), Finish("tool_calls", Usage(7, 2))])
    status, _, data = scripted_server.request("POST", "/v1/responses", codex_body(stream=True))
    events = [(name, json.loads(d)) for name, d in sse_events(data)]
    done = [e for name, e in events if name == "response.output_item.done"]
    assert status == 200 and done[-1]["item"]["type"] == "custom_tool_call"
    assert done[-1]["item"]["input"] == "ab"
    assert [e["input"] for name, e in events if name == "response.custom_tool_call_input.done"] == ["ab"]
    assert events[-1][0] == "response.completed"


def test_a_web_search_tool_with_live_access_runs_as_the_server_tool(scripted_server):
    status, _ = scripted_server.json("POST", "/v1/responses", codex_body(tools=[{"type": "web_search"}]))
    req = scripted_server.engine.history[-1]
    assert status == 200 and req.enable_tools and req.enabled_tools == ("web_search",)


def test_the_root_answers_a_probe_without_a_key(scripted_server):
    for method in ("HEAD", "GET"):
        for path in ("/", "/api/hello"):  # Claude Code 2.1.197's probe, 2.1.332's
            status, _, _ = scripted_server.request(method, path, key=False)
            assert status == 200, (method, path)
