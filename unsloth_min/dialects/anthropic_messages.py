"""Anthropic Messages ⇄ the internal model.

Strategy: `parse_request` reads a `/v1/messages` body into a `Draft` (400 naming the field on bad
input) that common.build_request makes the request; `Encoder` turns events one by one into
Anthropic's SSE events while keeping a snapshot of the message, and a non-streamed answer is that
snapshot after all events (`replay`) — so a streamed and a non-streamed answer cannot disagree. Anthropic keeps tool results inside user messages; our model
(like chat templates) gives each result its own `tool` message, so messages are split around them.
Usage follows Anthropic: `input_tokens` excludes the prompt tokens read from the KV cache
(`cache_read_input_tokens`); their sum is the whole prompt, what count_tokens returns.

`message_start` goes out with the first output, not at once: pings keep the bytes flowing while a
long prompt is evaluated, and a client whose watchdog counts only message events (Claude Code
gives up after 5 minutes without one; it drops pings) is then sent `message_start` after
`START_HOLD_S` of silence, which gives it a second 5 minutes for the first output. The events
stay in the documented order (message_start first, pings anywhere).

Does not: frame SSE bytes or send pings on a timer (the app does, via `heartbeat()`), generate,
check `thinking.budget_tokens`, or keep images inside tool results (only their text reaches the model).
"""
from __future__ import annotations

import json

from ..core import (ApiError, ChatRequest, Finish, Message, PromptProgress, Reasoning, ReasoningDelta,
                    Started, Text, TextDelta, Tool, ToolCall, ToolCallDelta, ToolExecuted, ToolResult,
                    Usage, bad_request, new_id)
from ..media import image_from_base64, image_from_url
from . import encoder as base
from .common import (SPEC_FIELDS, Dialect, Draft, build_request, hosted_tool, ignore_unknown, ignored,
                     parse_sampling, sampling_fields)
from .fields import (content, get_bool, get_choice, get_list, get_number, get_object,
                     get_str, objects, require_object, texts)

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence",
                "tool_calls": "tool_use"}
TOOL_CHOICES = {"auto": "auto", "any": "required", "tool": "function", "none": "none"}
ROLES = ("user", "assistant", "system")  # system: mid-conversation (beta mid-conversation-system)
EFFORTS = ("low", "medium", "high", "xhigh", "max")
KNOWN = {"model", "messages", "system", "stream", "tools", "tool_choice", "thinking", "output_config",
         "metadata", "context_management"} | sampling_fields("anthropic") | SPEC_FIELDS
BILLING = "x-anthropic-billing-header:"  # Claude Code's per-request system block (a nonce)
THINKING_TYPES = ("enabled", "adaptive", "between_tools", "disabled")
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
ERROR_KINDS = {"server_error": "api_error", "not_found_error": "not_found_error"}
START_HOLD_S = 240.0  # silence before a held message_start goes out (Claude Code: 300 s)


# ---- parse ---------------------------------------------------------------------------------------
def parse_request(body: dict, *, counting: bool = False) -> ChatRequest:
    """A `/v1/messages` body; `counting` (count_tokens) makes `max_tokens` optional."""
    get_number(body, "max_tokens", lo=1, integer=True, required=not counting)
    items = get_list(body, "messages", required=True)
    if not items:
        raise bad_request("'messages': at least one message is required.", param="messages")
    sampling = parse_sampling(body, "anthropic")
    messages = parse_system(body.get("system"))
    for i, m in enumerate(items):
        messages += parse_message(m, f"messages[{i}]")
    draft = Draft(messages=messages, sampling=sampling, model=get_str(body, "model", ""),
                  stream=get_bool(body, "stream", False) and not counting)
    get_object(body, "metadata")  # accepted (must be an object), ignored
    if get_object(body, "context_management") is not None:  # edits of Anthropic's stored context
        ignored("context_management")
    parse_tools(body, draft)
    parse_thinking(body, draft)
    parse_output_config(body, draft)
    ignore_unknown(body, KNOWN)
    return build_request(draft, body)


def parse_count_request(body: dict) -> ChatRequest:
    return parse_request(body, counting=True)


def parse_system(system) -> list[Message]:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [Message("system", [Text(system)])]
    if not isinstance(system, list):
        raise bad_request("Invalid type for 'system': expected a string or an array of text blocks.",
                          param="system")
    texts = []
    for i, block in enumerate(system):
        block = require_object(block, f"system[{i}]")
        if get_str(block, "type", path=f"system[{i}]", required=True) != "text":
            raise bad_request(f"Invalid value for 'system[{i}].type': only 'text' blocks are "
                              "allowed in 'system'.", param=f"system[{i}].type")
        text = get_str(block, "text", path=f"system[{i}]", required=True)
        if text.startswith(BILLING):  # new every request: it would defeat the prefix cache
            ignored("system: " + BILLING)
            continue
        texts.append(text)
    return [Message("system", [Text("\n".join(texts))])] if texts else []


def parse_message(m, path: str) -> list[Message]:
    m = require_object(m, path)
    role = get_choice(m, "role", ROLES, path=path, required=True)
    parts = content(m.get("content"), f"{path}.content", "content blocks",
                    lambda b, where: parse_block(b, where, role))
    return split_results(role, parts)


def split_results(role: str, parts: list) -> list[Message]:
    """Each tool result becomes its own `tool` message, in place; other parts keep `role`."""
    out, current = [], []
    for part in parts:
        if isinstance(part, ToolResult):
            if current:
                out.append(Message(role, current))
                current = []
            out.append(Message("tool", [part]))
        else:
            current.append(part)
    if current or not out:
        out.append(Message(role, current))
    return out


def _text(b: dict, path: str):
    return Text(get_str(b, "text", path=path, required=True))


def _thinking(b: dict, path: str):
    return Reasoning(get_str(b, "thinking", "", path=path))


def _tool_use(b: dict, path: str):
    arguments = json.dumps(get_object(b, "input", {}, path=path), ensure_ascii=False)
    return ToolCall(get_str(b, "id", path=path, required=True),
                    get_str(b, "name", path=path, required=True), arguments)


def _tool_result(b: dict, path: str):
    value = b.get("content")
    if isinstance(value, list):
        value = texts(value, f"{path}.content", ("text",))
    elif value is not None and not isinstance(value, str):
        raise bad_request(f"Invalid type for '{path}.content': expected a string or an array of "
                          "content blocks.", param=f"{path}.content")
    return ToolResult(get_str(b, "tool_use_id", path=path, required=True), value or "",
                      get_str(b, "name", path=path), get_bool(b, "is_error", False, path=path))


def _image(b: dict, path: str):
    where = f"{path}.source"
    src = require_object(b.get("source"), where)
    if get_choice(src, "type", ("base64", "url"), path=where, required=True) == "url":
        return image_from_url(get_str(src, "url", path=where, required=True), f"{where}.url")
    # the declared type must be one Anthropic names; what the image is comes from its bytes (as
    # for a chat data: URI), so a mislabelled file still works
    get_choice(src, "media_type", IMAGE_TYPES, path=where, required=True)
    return image_from_base64(get_str(src, "data", path=where, required=True), f"{where}.data")


# block type → (parser, roles that may send it); redacted thinking is Anthropic-encrypted: dropped
BLOCKS = {
    "text": (_text, ("user", "assistant", "system")),
    "image": (_image, ("user",)),
    "tool_use": (_tool_use, ("assistant",)),
    "server_tool_use": (_tool_use, ("assistant",)),
    "tool_result": (_tool_result, ("user", "assistant")),  # assistant: our server tools' results
    "thinking": (_thinking, ("assistant",)),
    "redacted_thinking": (lambda b, path: None, ("assistant",)),
}


def parse_block(b, path: str, role: str):
    b = require_object(b, path)
    kind = get_str(b, "type", path=path, required=True)
    parser, roles = BLOCKS.get(kind, (None, ()))
    if role not in roles:
        raise bad_request(f"Invalid value for '{path}.type': {kind!r} is not supported in "
                          f"{role} messages.", param=f"{path}.type")
    return parser(b, path)


def parse_tools(body: dict, draft: Draft) -> None:
    """Client tools into the draft; Anthropic-typed tools we run ask for server tools."""
    for t, path in objects(body, "tools"):
        kind = get_str(t, "type", None, path=path)
        name = get_str(t, "name", path=path, required=True)
        if kind in (None, "custom"):
            schema = get_object(t, "input_schema", path=path)
            if schema is None:
                raise bad_request(f"Missing required parameter: '{path}.input_schema'.",
                                  param=f"{path}.input_schema")
            draft.tools.append(Tool(name, get_str(t, "description", "", path=path), schema))
        elif hosted_tool(kind, dated=True):
            draft.hosted.append(hosted_tool(kind, dated=True))
        else:
            raise bad_request(f"Invalid value for '{path}.type': {kind!r} is not supported; send "
                              "custom tools (name, description, input_schema).", param=f"{path}.type")
    parse_tool_choice(body, draft)


def parse_tool_choice(body: dict, draft: Draft) -> None:
    choice = get_object(body, "tool_choice")
    if choice is None:
        return
    kind = get_choice(choice, "type", TOOL_CHOICES, path="tool_choice", required=True)
    name = get_str(choice, "name", path="tool_choice", required=True) if kind == "tool" else None
    draft.choice = (TOOL_CHOICES[kind], name)
    if get_bool(choice, "disable_parallel_tool_use", False, path="tool_choice"):
        draft.parallel_tool_calls = False


def parse_thinking(body: dict, draft: Draft) -> None:
    thinking = get_object(body, "thinking")
    if thinking is None:
        return
    kind = get_choice(thinking, "type", THINKING_TYPES, path="thinking", required=True)
    get_number(thinking, "budget_tokens", lo=0, integer=True, path="thinking")  # accepted, unused
    draft.enable_thinking = kind != "disabled"


def parse_output_config(body: dict, draft: Draft) -> None:
    """`output_config.format` (structured outputs: a JSON schema); `effort`: `low` turns
    adaptive (or unsaid) thinking off, the other levels leave it as it is; all reach templates
    that read an effort (gpt-oss) as `reasoning_effort`."""
    config = get_object(body, "output_config", {})
    effort = get_choice(config, "effort", EFFORTS, path="output_config")
    if effort == "low" and get_object(body, "thinking", {}).get("type") != "enabled":
        draft.enable_thinking = False
    draft.reasoning_effort = effort
    fmt = get_object(config, "format", path="output_config")
    if fmt is None:
        return
    if get_str(fmt, "type", path="output_config.format", required=True) != "json_schema":
        raise bad_request("Invalid value for 'output_config.format.type': only 'json_schema' is "
                          "supported.", param="output_config.format.type")
    schema = get_object(fmt, "schema", path="output_config.format")
    if schema is None:
        raise bad_request("Missing required parameter: 'output_config.format.schema'.",
                          param="output_config.format.schema")
    draft.response_schema = schema


# ---- render --------------------------------------------------------------------------------------
def render_error(err: ApiError) -> dict:
    """Anthropic names some types differently; the SDK picks its exception class by status."""
    kind = ERROR_KINDS.get(err.kind, err.kind)
    if err.status == 413:
        kind = "request_too_large"
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def render_usage(prompt: int, cached: int, output: int) -> dict:
    return {"input_tokens": prompt - cached, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached, "output_tokens": output}


def tool_use_id(call_id: str | None) -> str:
    """Our engine's `call_…` ids wear Anthropic's `toolu_` prefix on this route."""
    if not call_id:
        return new_id("toolu_")
    return call_id if call_id.startswith("toolu_") else "toolu_" + call_id.removeprefix("call_")


def parse_input(text: str) -> dict:
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class Encoder(base.Encoder):
    """Events → `(event_name, payload)` pairs, keeping `message` (the final JSON) up to date."""

    def __init__(self, req: ChatRequest | None, model: str):
        super().__init__()
        self.message = {"id": new_id("msg_"), "type": "message", "role": "assistant", "content": [],
                        "model": model, "stop_reason": None, "stop_sequence": None,
                        "usage": render_usage(0, 0, 0)}
        self.blocks: dict[int, dict] = {}  # wire index → block in message["content"]
        self.tools: dict[int, int] = {}  # ToolCallDelta.index → wire index
        self.json: dict[int, str] = {}  # wire index → tool input JSON so far
        self.held: list[tuple] = []  # message_start, until the first output or START_HOLD_S
        self._fills: dict = {}  # open block (field, wire index) → its delta event's filler

    @property
    def id(self) -> str:  # the answer's id, as the client sees it
        return self.message["id"]

    def final(self) -> dict:
        return self.message

    def event(self, ev) -> list[tuple]:
        out = super().event(ev)
        return out if isinstance(ev, Started) else self._release() + out

    def _release(self) -> list[tuple]:
        held, self.held = self.held, []
        return held

    def heartbeat(self, quiet_s: float) -> list[tuple]:
        """What `quiet_s` seconds without an event (pings aside) call for."""
        start = self._release() if quiet_s >= START_HOLD_S else []
        return start + [("ping", {"type": "ping"})]

    def add(self, block: dict) -> int:
        index = len(self.blocks)  # (a server tool's result takes no wire index)
        self.blocks[index] = dict(block)
        self.message["content"].append(self.blocks[index])
        return index

    def started(self, index: int, block: dict) -> list[tuple]:
        return [("content_block_start", {"type": "content_block_start", "index": index,
                                         "content_block": block})]

    def stopped(self, index: int, **how) -> list[tuple]:
        out = []
        if self.blocks[index]["type"] == "thinking":  # ours are unsigned: an empty signature
            out.append(self._wire_delta(index, {"type": "signature_delta", "signature": ""}))
        return out + [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _wire_delta(self, index: int, delta: dict) -> tuple:
        return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}

    def on_started(self, ev: Started) -> list[tuple]:
        self.message["usage"] = render_usage(ev.prompt_tokens, ev.cached_tokens, 0)
        start = dict(self.message, content=[])
        self.held = [("message_start", {"type": "message_start", "message": start})]
        return []

    def on_text(self, ev: TextDelta) -> list[tuple]:
        return self._delta({"type": "text", "text": ""}, "text", ev.text)

    def on_reasoning(self, ev: ReasoningDelta) -> list[tuple]:
        return self._delta({"type": "thinking", "thinking": "", "signature": ""}, "thinking", ev.text)

    def _delta(self, block: dict, field: str, text: str) -> list[tuple]:
        out = self.enter(field, lambda: block)
        self.blocks[self.index][field] += text
        fill = self._fills.get(self.current)  # (the block's delta event, pre-encoded: encoder.filler)
        if fill is None:
            delta = {"type": f"{field}_delta", field: base.HOLE}
            fill = self._fills[self.current] = base.filler(self._wire_delta(self.index, delta)[1])
        return out + [("content_block_delta", fill(text))]

    def on_tool_call(self, ev: ToolCallDelta) -> list[tuple]:
        out = []
        if ev.id is not None or ev.index not in self.tools:
            out = self.begin(("tool", ev.index), {"type": "tool_use", "id": tool_use_id(ev.id),
                                                  "name": ev.name or "", "input": {}})
            self.tools[ev.index] = self.index
        if ev.arguments:
            out.append(self._input_delta(self.tools[ev.index], ev.arguments))
        return out

    def _input_delta(self, index: int, partial: str) -> tuple:
        self.json[index] = self.json.get(index, "") + partial
        self.blocks[index]["input"] = parse_input(self.json[index])
        return self._wire_delta(index, {"type": "input_json_delta", "partial_json": partial})

    def on_progress(self, ev: PromptProgress) -> list[tuple]:
        return [("prompt_progress", {"type": "prompt_progress", **base.render_progress(ev)})]

    def on_tool_executed(self, ev: ToolExecuted) -> list[tuple]:
        block = {"type": "server_tool_use", "id": new_id("srvtoolu_"), "name": ev.call.name,
                 "input": {}}
        out = self.begin(("server", block["id"]), block)
        canonical = json.dumps(parse_input(ev.call.arguments), ensure_ascii=False)  # SDKs parse it
        out.append(self._input_delta(self.index, canonical))
        out += self.leave()
        result = {"type": "tool_result", "tool_use_id": block["id"], "name": ev.call.name,
                  "content": ev.result.content, "is_error": ev.result.is_error}
        self.message["content"].append(result)  # non-stream only: streams send the event below
        return out + [("tool_result", result)]

    def on_finish(self, ev: Finish) -> list[tuple]:
        u: Usage = ev.usage
        self.message.update(stop_reason=STOP_REASONS[ev.reason], stop_sequence=ev.stop_sequence,
                            usage=render_usage(u.prompt_tokens, u.cached_tokens, u.completion_tokens))
        delta = {"type": "message_delta", "delta": {"stop_reason": self.message["stop_reason"],
                                                    "stop_sequence": ev.stop_sequence},
                 "usage": self.message["usage"]}
        return self.leave() + [("message_delta", delta), ("message_stop", {"type": "message_stop"})]

    def error(self, err: ApiError) -> list[tuple]:
        return [("error", render_error(err))]


DIALECT = Dialect("anthropic", parse_request, Encoder, render_error, prefix="/v1/messages",
                  parse_count=parse_count_request)
