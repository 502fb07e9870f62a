"""Which family a chat template teaches, and the conversation reshaped for templates that need it.

Strategy: a template that teaches the model a tool-call format mentions that format's markers, so
`detect_tool_format` tries the formats of calls.FORMATS in order — the specialised ones first, as
llama.cpp's common/chat.cpp does (gpt-oss's `<|channel|>`, Kimi's section tokens, DeepSeek's DSML
before the generic `<tool_call>` of Hermes) — and the first whose `detect` recognises the source is
the template's; its thinking markers are the family's own, else the ones the template shows
(`detect_think_format`). Such a template gets our tools and renders tool history itself.
A template with no format we know gets `prepare_messages`: the tools described in a system
section in the Hermes format (the most widely trained one), earlier calls rewritten as
`<tool_call>` text and tool results as `<tool_response>` user turns, so that any template can
show them; one that renders calls but shows no tools gets `tools_note`, with its own call as the
example. And the history made to fit what templates refuse: system turns moved before the user
turn they follow, or folded into a user turn (`fold_system`, `fold_first_system`), call ids fitted
to the family's rule (`fit_ids`).

Does not: parse output or build grammars (each format's object in calls/ does, through output.py
and grammar.py), or render (template.py, through chatformat.py).
"""
from __future__ import annotations

import json
from dataclasses import replace

from ..core import Message, Text, Tool, ToolCall, ToolResult
from .calls import FORMATS, HERMES, LLAMA3, MISTRAL, MISTRAL_ARGS, QWEN3_XML, CallFormat, ThinkFormat
from .template import arguments_value, tools_dicts

THINK_FORMATS = (ThinkFormat("[THINK]", "[/THINK]"), ThinkFormat())


def detect_tool_format(source: str) -> CallFormat | None:
    """The template's own tool-call format (calls.FORMATS, in order), or None (we then describe
    tools ourselves)."""
    return next((fmt for fmt in FORMATS if fmt.detect(source)), None)


def detect_think_format(source: str, fmt: CallFormat | None = None) -> ThinkFormat:
    """The family's own thinking markers, else the ones the template shows."""
    if fmt is not None and fmt.think is not None:
        return fmt.think
    for think in THINK_FORMATS:
        if think.open in source or think.close in source:
            return think
    return THINK_FORMATS[-1]  # `<think>`: what thinking models write when the template is silent


def starts_thinking(rendered: str, prefill: str, think: ThinkFormat) -> bool:
    """Does the prompt end inside an opened thinking block (the generation prompt or a prefill)?"""
    if think.open in prefill or think.close in prefill:
        return prefill.rfind(think.open) > prefill.rfind(think.close)
    return bool(think.open) and rendered.rstrip().endswith(think.open.rstrip())


# ---- our own Hermes section, for templates without a tool format ---------------------------------
SECTION = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


def tools_section(tools: list[Tool]) -> str:
    lines = [json.dumps(tool, ensure_ascii=False) for tool in tools_dicts(tools) or []]
    return SECTION.format(tools="\n".join(lines))


def call_text(call: ToolCall) -> str:
    args = arguments_value(call.arguments or "{}")
    body = json.dumps({"name": call.name, "arguments": args}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def prepare_messages(messages: list[Message], tools: list[Tool]) -> list[Message]:
    """Messages any template can render: tools in the system message, calls and results as text."""
    out: list[Message] = []
    merge = False  # the last message holds tool results: the next result (or user turn) joins it
    for m in messages:
        if m.role == "tool":
            results = "\n".join(f"<tool_response>\n{p.content}\n</tool_response>"
                                for p in m.parts if isinstance(p, ToolResult))
            if merge:
                out[-1] = Message("user", [Text(out[-1].text + "\n" + results)])
            else:
                out.append(Message("user", [Text(results)]))
        elif m.role == "user" and merge:  # (templates that want user and assistant turns to alternate)
            out[-1] = _with_text(m, [out[-1].text, m.text])
        elif m.role == "assistant" and any(isinstance(p, ToolCall) for p in m.parts):
            parts = [Text(call_text(p)) if isinstance(p, ToolCall) else p for p in m.parts]
            text = "\n".join(p.text for p in parts if isinstance(p, Text) and p.text)
            out.append(Message("assistant", [p for p in parts if not isinstance(p, Text)] + [Text(text)]))
        else:
            out.append(m)
        merge = m.role == "tool"
    return with_system(out, tools_section(tools)) if tools else out


NOTE = """# Tools

You may call one or more functions to assist with the user query. The functions, as JSON \
signatures:
{tools}

To call a function, write the call as in this example:
{example}"""


def tools_note(tools: list[Tool], example: str) -> str:
    """Tools described for a template that renders calls in its family's syntax but never shows
    the model its tools (DeepSeek R1's and V3.1's): the signatures, and a call as it writes one."""
    lines = [json.dumps(tool, ensure_ascii=False) for tool in tools_dicts(tools) or []]
    return NOTE.format(tools="\n".join(lines), example=example)


def with_system(messages: list[Message], section: str) -> list[Message]:
    """`section` appended to the leading system message (one is added when there is none)."""
    if messages and messages[0].role == "system":
        return [Message("system", [Text(messages[0].text + "\n\n" + section)])] + messages[1:]
    return [Message("system", [Text(section)])] + messages


def system_before_user(messages: list[Message]) -> list[Message]:
    """System turns that follow a user turn moved before it, so that the turn the model answers
    is the user's: Claude Code sends its environment block as a system turn after the user's
    request, and a small model then goes on with the environment text instead of answering."""
    out: list[Message] = []
    for m in messages:
        if m.role == "system" and out and out[-1].role == "user":
            out.insert(len(out) - 1, m)
        else:
            out.append(m)
    return out


def fold_system(messages: list[Message]) -> list[Message] | None:
    """System messages after the first turn folded into the nearest user turn (the next one,
    else the one before), for templates that allow a system message only first; None when
    there are none to fold."""
    lead = 1 if messages and messages[0].role == "system" else 0
    late = [i for i, m in enumerate(messages) if m.role == "system" and i >= lead]
    if not late:
        return None
    out, pending = list(messages[:lead]), []
    for m in messages[lead:]:
        if m.role == "system":
            pending.append(m.text)
        elif m.role == "user" and pending:
            out.append(_with_text(m, pending + [m.text]))
            pending = []
        else:
            out.append(m)
    if pending:
        users = [i for i, m in enumerate(out) if m.role == "user"]
        if users:
            out[users[-1]] = _with_text(out[users[-1]], [out[users[-1]].text] + pending)
        else:
            out.append(Message("user", [Text("\n\n".join(pending))]))
    return out


def fold_first_system(messages: list[Message]) -> list[Message] | None:
    """A leading system message folded into the turn after it, for templates that refuse any
    (Gemma 2: "System role not supported"), as llama.cpp does; None when there is none."""
    if not messages or messages[0].role != "system":
        return None
    if len(messages) == 1:
        return [Message("user", messages[0].parts)]
    return [_with_text(messages[1], [messages[0].text, messages[1].text])] + messages[2:]


def fold_into_results(messages: list[Message]) -> list[Message] | None:
    """A text-only user turn right after tool results folded into the last result, for templates
    whose rule lets only an assistant turn follow results (Mistral's; Claude Code sends its
    reminders beside its tool results); None when there is none."""
    out: list[Message] = []
    for m in messages:
        results = [p for p in out[-1].parts if isinstance(p, ToolResult)] if out and out[-1].role == "tool" else []
        if m.role == "user" and results and all(isinstance(p, Text) for p in m.parts):
            last = results[-1]
            merged = replace(last, content=last.content + "\n\n" + m.text)
            out[-1] = Message("tool", [merged if p is last else p for p in out[-1].parts])
        else:
            out.append(m)
    return out if len(out) < len(messages) else None


def fit_ids(messages: list[Message], fmt: CallFormat) -> list[Message]:
    """Call ids (in calls and in their results) as the family's template accepts them (Mistral's:
    9 letters and digits; Kimi's: `functions.NAME:N`), each id mapped the same way wherever it
    stands."""
    seen: dict[str, str] = {}

    def fit(call_id: str, name: str) -> str:
        if call_id not in seen:
            seen[call_id] = fmt.fit_id(call_id, len(seen), name)
        return seen[call_id]

    out = []
    for m in messages:
        parts = [replace(p, id=fit(p.id, p.name)) if isinstance(p, ToolCall) else
                 replace(p, call_id=fit(p.call_id, p.name or "")) if isinstance(p, ToolResult) else p
                 for p in m.parts]
        out.append(m if parts == m.parts else Message(m.role, parts))
    return out


def _with_text(m: Message, texts: list[str]) -> Message:
    """`m` with its text replaced by `texts` joined (other parts, e.g. images, kept after)."""
    rest = [p for p in m.parts if not isinstance(p, Text)]
    return Message(m.role, [Text("\n\n".join(t for t in texts if t))] + rest)
