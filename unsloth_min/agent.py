"""The server-tool loop (SPEC "Server tools"): generate → run the server's tool calls → generate…

Strategy: `run(engine, tools, req)` has the engine's interface — an async iterator of core events —
so the app and the dialects cannot tell it from `engine.generate`, except that `ToolExecuted`
events appear. Each round is one `engine.generate` over the conversation so far, with the enabled
server tools offered next to the client's own. Events stream through as they come, except that
only the first round's `Started` and one final `Finish` reach the client, and a server tool's
`ToolCallDelta`s are kept back: the client sees that call once, as `ToolExecuted` with its result.
A round that ends with server-tool calls has them executed in order; the assistant's turn (text,
reasoning, calls) and one `tool` message per result are appended, and the next round starts.
The engine reuses the KV cache for the unchanged prefix, so a round reads only what is new.

Rules: `tool_choice` `required`, or naming a server tool, forces the first round only; later
rounds are `auto`. At most `max_calls` server calls run per request (flag `--max-tool-calls`, the
request's `max_tool_calls` may lower it); after the last allowed call the model answers with
`tool_choice: none` (the tool list stays the same, so the prompt prefix is reused). A round with a
client tool call ends the loop with `finish_reason: tool_calls`, as without server tools (server
calls of that same round still run and are reported). A round cut off by `max_tokens` ends the
loop with `length`; its server calls are reported as not run, never dropped: every call the
model wrote reaches the client, run or not (output tokens counted are output delivered).
Usage sums every round: prompt, cached and completion tokens are what the engine really
processed for this request (as OpenAI counts the internal calls of hosted tools); `max_tokens`
caps each round.

Does not: run tools (tools/), or parse the model's output into calls (the engine does).
"""
from __future__ import annotations

import dataclasses
from contextlib import aclosing
from typing import AsyncIterator

from .core import (ApiError, ChatEngine, ChatRequest, Event, Finish, Message, Reasoning, ReasoningDelta,
                   Started, Text, TextDelta, ToolCall, ToolCallDelta, ToolExecuted, ToolResult,
                   Usage, new_id, server_tool_name)
from .tools import TOOLS, Session, ToolRegistry

DEFAULT_MAX_CALLS = 10
CUT_OFF = "not run: the token limit (max_tokens) cut the call off before its arguments were complete"


def forced_server_tool(req: ChatRequest) -> str | None:
    """A `tool_choice` naming a server tool that no client tool shadows."""
    if req.tool_choice != "function" or req.tool_name in {t.name for t in req.tools}:
        return None
    return server_tool_name(req.tool_name)


def wants_tools(req: ChatRequest) -> bool:
    return req.enable_tools or forced_server_tool(req) is not None


def offered_tools(req: ChatRequest) -> list[str]:
    """Enabled server tools (plus a forced one), minus those a client tool of that name shadows."""
    names = list(req.enabled_tools)
    forced = forced_server_tool(req)
    if forced and forced not in names:
        names.append(forced)
    client = {t.name for t in req.tools}
    return [n for n in names if n in TOOLS and n not in client]


def add_usage(a: Usage, b: Usage) -> Usage:
    return Usage(a.prompt_tokens + b.prompt_tokens, a.completion_tokens + b.completion_tokens,
                 a.cached_tokens + b.cached_tokens, a.reasoning_tokens + b.reasoning_tokens)


@dataclasses.dataclass
class Round:
    """What one `engine.generate` produced, and how its tool calls are routed."""
    client_names: set
    text: list = dataclasses.field(default_factory=list)
    reasoning: list = dataclasses.field(default_factory=list)
    calls: dict = dataclasses.field(default_factory=dict)  # engine index → [id, name, args, client?]
    client_index: dict = dataclasses.field(default_factory=dict)  # engine index → client index
    finish: Finish | None = None

    def take(self, ev: Event) -> Event | None:
        """Record `ev`; return what the client should see of it (None: nothing)."""
        if isinstance(ev, TextDelta):
            self.text.append(ev.text)
        elif isinstance(ev, ReasoningDelta):
            self.reasoning.append(ev.text)
        elif isinstance(ev, ToolCallDelta):
            return self._call(ev)
        elif isinstance(ev, Finish):
            self.finish = ev
            return None
        return ev

    def _call(self, ev: ToolCallDelta) -> ToolCallDelta | None:
        first = ev.index not in self.calls
        if first:
            client = ev.name in self.client_names
            self.calls[ev.index] = [ev.id or new_id("call_"), ev.name or "", "", client]
            if client:
                self.client_index[ev.index] = len(self.client_index)
        call = self.calls[ev.index]
        call[2] += ev.arguments
        if not call[3]:
            return None  # a server call: reported once it ran, as ToolExecuted
        return ToolCallDelta(self.client_index[ev.index], call[0] if first else None,
                             call[1] if first else None, ev.arguments)

    def tool_calls(self, client: bool) -> list[ToolCall]:
        return [ToolCall(i, n, a) for i, n, a, c in self.calls.values() if c == client]

    def assistant_message(self) -> Message:
        parts = [Reasoning("".join(self.reasoning))] if self.reasoning else []
        if self.text:
            parts.append(Text("".join(self.text)))
        return Message("assistant", parts + self.tool_calls(client=False))


class Loop:
    def __init__(self, engine: ChatEngine, tools: ToolRegistry, req: ChatRequest, max_calls: int):
        self.engine, self.tools, self.req = engine, tools, req
        self.calls_left = min(max_calls, req.max_tool_calls if req.max_tool_calls is not None
                              else max_calls)
        self.max_calls = self.calls_left
        self.offered = offered_tools(req)
        self.messages = list(req.messages)
        self.all_tools = list(req.tools) + ToolRegistry.definitions(self.offered)
        self.client_names = {t.name for t in req.tools}
        self.usage = Usage()

    def round_request(self, n: int) -> ChatRequest:
        choice, name = "auto", None
        if n == 0:  # only the first round may be forced
            choice, name = self.req.tool_choice, self.req.tool_name
            forced = forced_server_tool(self.req)
            name = forced or name
        if self.calls_left <= 0:
            choice, name = "none", None
        return dataclasses.replace(self.req, messages=list(self.messages), tools=self.all_tools,
                                   tool_choice=choice, tool_name=name)

    async def events(self, session: Session) -> AsyncIterator[Event]:
        n = 0
        while True:
            rnd = Round(self.client_names)
            try:
                async with aclosing(self.engine.generate(self.round_request(n))) as stream:
                    async for ev in stream:
                        out = rnd.take(ev)
                        if out is not None and not (isinstance(out, Started) and n > 0):
                            yield out
            except ApiError as e:  # a later round over the context: end with what we have
                if n == 0 or e.code != "context_length_exceeded":
                    raise
                yield Finish("length", self.usage)
                return
            self.usage = add_usage(self.usage, rnd.finish.usage)
            server = rnd.tool_calls(client=False)
            if rnd.finish.reason == "length":  # a cut-off call has broken arguments: not run,
                for call in server:  # but reported, as every server call the model wrote is
                    yield self.record(call, ToolResult(call.id, CUT_OFF, call.name, is_error=True))
            if not server or rnd.finish.reason == "length":
                yield Finish(rnd.finish.reason, self.usage, rnd.finish.stop_sequence)
                return
            ran = False
            self.messages.append(rnd.assistant_message())
            for call in server:
                executed = await self.execute(call, session)
                ran = ran or executed is not None
                yield executed or self.refuse(call)
            if rnd.tool_calls(client=True) or not ran:  # back to the client, or over the cap
                yield Finish("tool_calls" if rnd.tool_calls(client=True) else "stop", self.usage)
                return
            n += 1

    async def execute(self, call: ToolCall, session: Session) -> ToolExecuted | None:
        """Run one server call (None: the cap is reached); every call counts, bad ones too."""
        if self.calls_left <= 0:
            return None
        self.calls_left -= 1
        if call.name in self.offered:
            outcome = await self.tools.execute(call.name, call.arguments, session)
            text, is_error = outcome.content, outcome.is_error
        else:
            text, is_error = (f"error: no server tool named {call.name!r} here (offered: "
                              f"{', '.join(self.offered) or 'none'})"), True
        return self.record(call, ToolResult(call.id, text, call.name, is_error))

    def refuse(self, call: ToolCall) -> ToolExecuted:
        text = f"not run: the limit of {self.max_calls} server tool calls for this request is reached"
        return self.record(call, ToolResult(call.id, text, call.name, is_error=True))

    def record(self, call: ToolCall, result: ToolResult) -> ToolExecuted:
        self.messages.append(Message("tool", [result]))
        return ToolExecuted(call, result)


async def run(engine: ChatEngine, tools: ToolRegistry, req: ChatRequest,
              max_calls: int = DEFAULT_MAX_CALLS) -> AsyncIterator[Event]:
    """`engine.generate(req)` with the server tools run in between (see the module docstring)."""
    session = tools.open_session(req.session_id)
    try:
        async with aclosing(Loop(engine, tools, req, max_calls).events(session)) as events:
            async for ev in events:
                yield ev
    finally:
        tools.release(session)
