"""The server-tool loop over a scripted engine and a recording stand-in for the tools: exact rounds."""
from __future__ import annotations

import asyncio
import json

import pytest

from support.scripted import ScriptedEngine
from unsloth_min import agent
from unsloth_min.core import (ApiError, ChatRequest, Finish, Message, Started, Text, TextDelta, Tool,
                              ToolCall, ToolCallDelta, ToolExecuted, ToolResult, Usage)
from unsloth_min.tools import Outcome, Session


class FakeTools:
    """Records calls; answers `<name>(<argument JSON>) ok`."""

    def __init__(self):
        self.calls, self.released = [], []

    def open_session(self, session_id):
        return Session(f"s:{session_id}" if session_id else "r:x", None, session_id is None)

    def release(self, session):
        self.released.append(session.key)

    async def execute(self, name, arguments, session):
        self.calls.append((name, arguments, session.key))
        return Outcome(f"{name}({arguments}) ok")


def call(index, name, args, id=None):
    return ToolCallDelta(index, id or f"call_{name}{index}", name, args)


def request(**kw) -> ChatRequest:
    kw.setdefault("enable_tools", True)
    kw.setdefault("enabled_tools", ("python", "bash", "web_search"))
    return ChatRequest(messages=[Message("user", [Text("hi")])], **kw)


def run(engine, req, tools=None, max_calls=10):
    tools = tools or FakeTools()

    async def go():
        return [ev async for ev in agent.run(engine, tools, req, max_calls)]
    return asyncio.run(go()), tools


def test_one_round_trip_streams_once_and_sums_usage():
    engine = ScriptedEngine()
    engine.enqueue(["Let me see. ", call(0, "python", '{"code": "6*7"}'),
                    Finish("tool_calls", Usage(7, 5, 0))])
    engine.enqueue(["It is 42.", Finish("stop", Usage(30, 4, 20))])
    events, tools = run(engine, request(session_id="a"))
    assert isinstance(events[0], Started) and sum(isinstance(e, Started) for e in events) == 1
    assert [e for e in events if isinstance(e, Finish)] == [Finish("stop", Usage(37, 9, 20))]
    assert not any(isinstance(e, ToolCallDelta) for e in events)  # server calls: ToolExecuted only
    run_ev = [e for e in events if isinstance(e, ToolExecuted)]
    assert run_ev == [ToolExecuted(ToolCall("call_python0", "python", '{"code": "6*7"}'),
                                   ToolResult("call_python0", 'python({"code": "6*7"}) ok', "python"))]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Let me see. ", "It is 42."]
    assert tools.calls == [("python", '{"code": "6*7"}', "s:a")] and tools.released == ["s:a"]
    first, second = engine.history
    assert [t.name for t in first.tools] == ["python", "bash", "web_search"]
    assert first.tools[0].parameters["required"] == ["code"]
    assert [m.role for m in second.messages] == ["user", "assistant", "tool"]
    assistant, tool = second.messages[1:]
    assert assistant.text == "Let me see. " and assistant.parts[-1] == run_ev[0].call
    assert tool.parts == [run_ev[0].result]
    assert second.tools == first.tools  # the same prompt prefix: the KV cache is reused


def test_client_tool_call_ends_the_loop_with_reindexed_deltas():
    engine = ScriptedEngine()
    weather = Tool("get_weather")
    engine.enqueue([call(0, "bash", '{"command": "date"}'), call(1, "get_weather", ""),
                    ToolCallDelta(1, None, None, '{"city": "Paris"}'), Finish("tool_calls", Usage(7, 9))])
    events, tools = run(engine, request(tools=[weather], enabled_tools=("bash",)))
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas == [ToolCallDelta(0, "call_get_weather1", "get_weather", ""),
                      ToolCallDelta(0, None, None, '{"city": "Paris"}')]
    assert [e.call.name for e in events if isinstance(e, ToolExecuted)] == ["bash"]
    assert events[-1] == Finish("tool_calls", Usage(7, 9))
    assert len(engine.history) == 1 and tools.released == ["r:x"]
    assert [t.name for t in engine.history[0].tools] == ["get_weather", "bash"]


def test_cap_then_the_model_must_answer():
    engine = ScriptedEngine()
    for i in range(2):
        engine.enqueue([call(0, "python", json.dumps({"code": str(i)})), Finish("tool_calls", Usage(7, 1))])
    engine.enqueue(["done"])
    events, tools = run(engine, request(max_tool_calls=5), max_calls=2)
    assert len(tools.calls) == 2
    assert [r.tool_choice for r in engine.history] == ["auto", "auto", "none"]
    assert events[-1].reason == "stop" and events[-1].usage.completion_tokens == 3
    # the request may lower the server's cap, never raise it
    engine.enqueue([call(0, "python", '{"code": "1"}'), call(1, "python", '{"code": "2"}'),
                    Finish("tool_calls", Usage(7, 1))])
    engine.enqueue(["done"])
    events, tools = run(engine, request(max_tool_calls=1), max_calls=2)
    results = [e.result for e in events if isinstance(e, ToolExecuted)]
    assert len(tools.calls) == 1 and results[1].is_error and "limit of 1" in results[1].content
    assert engine.history[-1].tool_choice == "none"


def test_calls_past_the_cap_in_the_last_round_end_the_loop():
    engine = ScriptedEngine()
    engine.enqueue([call(0, "python", '{"code": "1"}'), Finish("tool_calls", Usage(7, 1))])
    engine.enqueue([call(0, "python", '{"code": "2"}'), Finish("tool_calls", Usage(7, 1))])
    events, tools = run(engine, request(), max_calls=1)
    assert len(tools.calls) == 1 and len(engine.history) == 2
    assert "not run" in [e for e in events if isinstance(e, ToolExecuted)][1].result.content
    assert events[-1].reason == "stop"


def test_forced_choice_applies_to_the_first_round_only():
    engine = ScriptedEngine()
    engine.enqueue([call(0, "python", '{"code": "1"}'), Finish("tool_calls", Usage(7, 1))])
    engine.enqueue(["ok"])
    req = request(enable_tools=False, enabled_tools=(), tool_choice="function", tool_name="python")
    assert agent.wants_tools(req)
    run(engine, req)
    assert [(r.tool_choice, r.tool_name) for r in engine.history] == [("function", "python"),
                                                                      ("auto", None)]
    assert [t.name for t in engine.history[0].tools] == ["python"]
    engine.enqueue(["ok"])
    run(engine, request(tool_choice="function", tool_name="terminal"))
    assert (engine.history[-1].tool_choice, engine.history[-1].tool_name) == ("function", "bash")
    assert not agent.wants_tools(request(enable_tools=False, enabled_tools=()))


def test_unknown_tool_is_reported_and_counted():
    """A call of a tool that does not exist is an error result for the model, and it counts
    against the call limit like any other (bad arguments: test_tools)."""
    engine = ScriptedEngine()
    engine.enqueue([call(0, "rm_rf", "{}"), call(1, "python", '{"code": "1"}'),
                    Finish("tool_calls", Usage(7, 1))])
    engine.enqueue(["sorry"])
    events, tools = run(engine, request(enabled_tools=("python",)), max_calls=1)
    unknown, over = [e.result for e in events if isinstance(e, ToolExecuted)]
    assert unknown.is_error and "no server tool named 'rm_rf'" in unknown.content
    assert over.content.startswith("not run: the limit of 1") and not tools.calls


def test_plain_answer_is_one_round_and_a_cut_off_call_is_reported_not_run():
    """A call cut off by max_tokens is not run, but it reaches the client: the 9 output tokens
    it took are delivered (issue: a stream with output tokens and no content block)."""
    engine = ScriptedEngine()
    engine.enqueue(["just text"])
    events, _ = run(engine, request())
    assert events[-1] == Finish("stop", Usage(7, 1)) and len(engine.history) == 1
    engine.enqueue([call(0, "python", '{"code": "pri'), Finish("length", Usage(7, 9))])
    events, tools = run(engine, request())
    assert events[-1] == Finish("length", Usage(7, 9)) and not tools.calls
    shown = [ev for ev in events if isinstance(ev, ToolExecuted)]
    assert [(ev.call.name, ev.call.arguments) for ev in shown] == [("python", '{"code": "pri')]
    assert shown[0].result.is_error and shown[0].result.content == agent.CUT_OFF


def test_context_overflow_in_a_later_round_ends_with_length():
    engine = ScriptedEngine()
    engine.enqueue([call(0, "python", '{"code": "1"}'), Finish("tool_calls", Usage(7, 1))])
    engine.enqueue([], error=ApiError(400, "invalid_request_error", "too long",
                                      code="context_length_exceeded"))
    events, _ = run(engine, request())
    assert events[-1] == Finish("length", Usage(7, 1))
    engine.enqueue([], error=ApiError(400, "invalid_request_error", "too long",
                                      code="context_length_exceeded"))
    with pytest.raises(ApiError):  # the first round: still a clean 400 for the client
        run(engine, request())


def test_closing_early_cancels_the_round_and_releases_the_session():
    engine = ScriptedEngine()
    engine.enqueue(["tok"] * 100, delay=0.01)
    tools = FakeTools()

    async def go():
        events = agent.run(engine, tools, request(), 10)
        await events.__anext__()
        await events.__anext__()
        await events.aclose()
    asyncio.run(go())
    assert engine.cancelled == 1 and tools.released == ["r:x"]
