"""Anthropic Messages ⇄ the internal model.

Strategy: `parse_request` turns a `/v1/messages` body into a `ChatRequest` (400 naming the field on
bad input); `Stream` turns events one by one into Anthropic's SSE events while keeping a snapshot
of the message, and `render_response` is that snapshot after all events — so a streamed and a
non-streamed answer cannot disagree. Anthropic keeps tool results inside user messages; our model
(like chat templates) gives each result its own `tool` message, so messages are split around them.
Usage follows Anthropic: `input_tokens` excludes the prompt tokens read from the KV cache
(`cache_read_input_tokens`); their sum is the whole prompt, what count_tokens returns.

Does not: frame SSE bytes or send pings on a timer (the app does, via `heartbeat()`), generate,
check `thinking.budget_tokens`, or keep images inside tool results (only their text reaches the model).
"""
from __future__ import annotations

import json

from ..core import (ApiError, ChatRequest, Finish, Message, Reasoning, ReasoningDelta, Started,
                    Text, TextDelta, Tool, ToolCall, ToolCallDelta, ToolExecuted, ToolResult, Usage,
                    bad_request, new_id)
from ..media import image_from_base64, image_from_url
from .common import EventStream, add_server_tools, apply_extensions, parse_sampling
from .fields import (get_bool, get_list, get_number, get_object, get_stops, get_str, require_object)

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence",
                "tool_calls": "tool_use"}
TOOL_CHOICES = {"auto": "auto", "any": "required", "tool": "function", "none": "none"}
# Anthropic's own server tools, by `type` without its date suffix, run as our server tools.
SERVER_TOOL_TYPES = {"web_search": "web_search", "code_execution": "python"}
THINKING_TYPES = ("enabled", "adaptive", "between_tools", "disabled")
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
ERROR_KINDS = {"server_error": "api_error", "not_found_error": "not_found_error"}


# ---- parse ---------------------------------------------------------------------------------------
def parse_request(body: dict, *, counting: bool = False) -> ChatRequest:
    """A `/v1/messages` body; `counting` (count_tokens) makes `max_tokens` optional."""
    get_number(body, "max_tokens", lo=1, integer=True, required=not counting)
    items = get_list(body, "messages", required=True)
    if not items:
        raise bad_request("'messages': at least one message is required.", param="messages")
    sampling = parse_sampling(body, ("max_tokens",), get_stops(body, "stop_sequences"))
    if sampling.temperature is not None and sampling.temperature > 1:  # Anthropic's range is 0–1
        raise bad_request(f"Invalid 'temperature': {sampling.temperature} is above the maximum "
                          "value 1.", param="temperature")
    messages = parse_system(body.get("system"))
    for i, m in enumerate(items):
        messages += parse_message(m, f"messages[{i}]")
    req = ChatRequest(messages=messages, sampling=sampling, model=get_str(body, "model", ""),
                      stream=get_bool(body, "stream", False) and not counting)
    get_object(body, "metadata")  # accepted (must be an object), ignored
    server_tools = parse_tools(body, req)
    parse_thinking(body, req)
    parse_output_format(body, req)
    apply_extensions(body, req)
    add_server_tools(body, req, server_tools)
    return req


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
        texts.append(get_str(block, "text", path=f"system[{i}]", required=True))
    return [Message("system", [Text("\n".join(texts))])] if texts else []


def parse_message(m, path: str) -> list[Message]:
    m = require_object(m, path)
    role = get_str(m, "role", path=path, required=True)
    if role not in ("user", "assistant"):
        raise bad_request(f"Invalid value for '{path}.role': {role!r} is not one of user, assistant.",
                          param=f"{path}.role")
    content = m.get("content")
    if isinstance(content, str):
        return [Message(role, [Text(content)])]
    if not isinstance(content, list):
        raise bad_request(f"Invalid type for '{path}.content': expected a string or an array of "
                          "content blocks.", param=f"{path}.content")
    parts = [parse_block(b, f"{path}.content[{j}]", role) for j, b in enumerate(content)]
    return split_results(role, [p for p in parts if p is not None])


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
    content = b.get("content")
    if isinstance(content, list):
        texts = [(require_object(c, f"{path}.content[{i}]"), f"{path}.content[{i}]")
                 for i, c in enumerate(content)]
        content = "".join(get_str(c, "text", "", path=p) for c, p in texts if c.get("type") == "text")
    elif content is not None and not isinstance(content, str):
        raise bad_request(f"Invalid type for '{path}.content': expected a string or an array of "
                          "content blocks.", param=f"{path}.content")
    return ToolResult(get_str(b, "tool_use_id", path=path, required=True), content or "",
                      get_str(b, "name", path=path), get_bool(b, "is_error", False, path=path))


def _image(b: dict, path: str):
    src = require_object(b.get("source"), f"{path}.source")
    kind = get_str(src, "type", path=f"{path}.source", required=True)
    if kind == "url":
        return image_from_url(get_str(src, "url", path=f"{path}.source", required=True),
                              f"{path}.source.url")
    if kind != "base64":
        raise bad_request(f"Invalid value for '{path}.source.type': {kind!r} is not one of base64, "
                          "url.", param=f"{path}.source.type")
    media = get_str(src, "media_type", path=f"{path}.source", required=True)
    if media not in IMAGE_TYPES:
        raise bad_request(f"Invalid value for '{path}.source.media_type': {media!r} is not one of "
                          f"{', '.join(IMAGE_TYPES)}.", param=f"{path}.source.media_type")
    # the declared type must be one Anthropic names; what the image is comes from its bytes (as
    # for a chat data: URI), so a mislabelled file still works
    return image_from_base64(get_str(src, "data", path=f"{path}.source", required=True),
                             f"{path}.source.data")


# block type → (parser, roles that may send it); redacted thinking is Anthropic-encrypted: dropped
BLOCKS = {
    "text": (_text, ("user", "assistant")),
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


def parse_tools(body: dict, req: ChatRequest) -> tuple[str, ...]:
    """Client tools into `req.tools`; returns the server tools that Anthropic-typed tools ask for."""
    server = []
    for i, t in enumerate(get_list(body, "tools", [])):
        path = f"tools[{i}]"
        t = require_object(t, path)
        kind = get_str(t, "type", None, path=path)
        name = get_str(t, "name", path=path, required=True)
        if kind in (None, "custom"):
            schema = get_object(t, "input_schema", path=path)
            if schema is None:
                raise bad_request(f"Missing required parameter: '{path}.input_schema'.",
                                  param=f"{path}.input_schema")
            req.tools.append(Tool(name, get_str(t, "description", "", path=path), schema))
        elif kind.rsplit("_", 1)[0] in SERVER_TOOL_TYPES:
            server.append(SERVER_TOOL_TYPES[kind.rsplit("_", 1)[0]])
        else:
            raise bad_request(f"Invalid value for '{path}.type': {kind!r} is not supported; send "
                              "custom tools (name, description, input_schema).", param=f"{path}.type")
    parse_tool_choice(body, req)
    return tuple(server)


def parse_tool_choice(body: dict, req: ChatRequest) -> None:
    choice = get_object(body, "tool_choice")
    if choice is None:
        req.tool_choice = "auto" if req.tools else "none"
        return
    kind = get_str(choice, "type", path="tool_choice", required=True)
    if kind not in TOOL_CHOICES:
        raise bad_request(f"Invalid value for 'tool_choice.type': {kind!r} is not one of auto, any, "
                          "tool, none.", param="tool_choice.type")
    req.tool_choice = TOOL_CHOICES[kind]
    if kind == "tool":
        req.tool_name = get_str(choice, "name", path="tool_choice", required=True)
    if get_bool(choice, "disable_parallel_tool_use", False, path="tool_choice"):
        req.parallel_tool_calls = False


def parse_thinking(body: dict, req: ChatRequest) -> None:
    thinking = get_object(body, "thinking")
    if thinking is None:
        return
    kind = get_str(thinking, "type", path="thinking", required=True)
    if kind not in THINKING_TYPES:
        raise bad_request(f"Invalid value for 'thinking.type': {kind!r} is not one of "
                          f"{', '.join(THINKING_TYPES)}.", param="thinking.type")
    get_number(thinking, "budget_tokens", lo=0, integer=True, path="thinking")  # accepted, unused
    req.enable_thinking = kind != "disabled"


def parse_output_format(body: dict, req: ChatRequest) -> None:
    """`output_config.format` (structured outputs: a JSON schema); `effort` is accepted, unused."""
    fmt = get_object(get_object(body, "output_config", {}), "format", path="output_config")
    if fmt is None:
        return
    if get_str(fmt, "type", path="output_config.format", required=True) != "json_schema":
        raise bad_request("Invalid value for 'output_config.format.type': only 'json_schema' is "
                          "supported.", param="output_config.format.type")
    schema = get_object(fmt, "schema", path="output_config.format")
    if schema is None:
        raise bad_request("Missing required parameter: 'output_config.format.schema'.",
                          param="output_config.format.schema")
    req.response_schema = schema


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


def render_response(events: list, model: str) -> dict:
    stream = Stream(None, model)
    for ev in events:
        stream.event(ev)
    return stream.message


class Stream(EventStream):
    """Events → `(event_name, payload)` pairs, keeping `message` (the final JSON) up to date."""

    def __init__(self, req: ChatRequest | None, model: str):
        self.message = {"id": new_id("msg_"), "type": "message", "role": "assistant", "content": [],
                        "model": model, "stop_reason": None, "stop_sequence": None,
                        "usage": render_usage(0, 0, 0)}
        self.open = None  # (key, index) of the block being streamed
        self.blocks: dict[int, dict] = {}  # wire index → block in message["content"]
        self.tools: dict[int, int] = {}  # ToolCallDelta.index → wire index
        self.json: dict[int, str] = {}  # wire index → tool input JSON so far

    def heartbeat(self) -> list[tuple]:
        return [("ping", {"type": "ping"})]

    def on_started(self, ev: Started) -> list[tuple]:
        self.message["usage"] = render_usage(ev.prompt_tokens, ev.cached_tokens, 0)
        start = dict(self.message, content=[])
        return [("message_start", {"type": "message_start", "message": start})] + self.heartbeat()

    def on_text(self, ev: TextDelta) -> list[tuple]:
        return self._delta(("text",), {"type": "text", "text": ""}, "text", ev.text)

    def on_reasoning(self, ev: ReasoningDelta) -> list[tuple]:
        block = {"type": "thinking", "thinking": "", "signature": ""}
        return self._delta(("thinking",), block, "thinking", ev.text)

    def _start(self, key, block: dict) -> list[tuple]:
        out = self._close()
        index = len(self.blocks)
        self.blocks[index] = dict(block)
        self.message["content"].append(self.blocks[index])
        self.open = (key, index)
        return out + [("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": block})]

    def _close(self) -> list[tuple]:
        if self.open is None:
            return []
        index, self.open = self.open[1], None
        out = []
        if self.blocks[index]["type"] == "thinking":  # ours are unsigned: an empty signature
            out.append(self._wire_delta(index, {"type": "signature_delta", "signature": ""}))
        return out + [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _wire_delta(self, index: int, delta: dict) -> tuple:
        return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}

    def _delta(self, key, block: dict, field: str, text: str) -> list[tuple]:
        out = self._start(key, block) if self.open is None or self.open[0] != key else []
        index = self.open[1]
        self.blocks[index][field] += text
        return out + [self._wire_delta(index, {"type": f"{field}_delta", field: text})]

    def on_tool_call(self, ev: ToolCallDelta) -> list[tuple]:
        out = []
        if ev.id is not None or ev.index not in self.tools:
            out = self._start(("tool", ev.index), {"type": "tool_use", "id": tool_use_id(ev.id),
                                                   "name": ev.name or "", "input": {}})
            self.tools[ev.index] = self.open[1]
        if ev.arguments:
            out.append(self._input_delta(self.tools[ev.index], ev.arguments))
        return out

    def _input_delta(self, index: int, partial: str) -> tuple:
        self.json[index] = self.json.get(index, "") + partial
        self.blocks[index]["input"] = parse_input(self.json[index])
        return self._wire_delta(index, {"type": "input_json_delta", "partial_json": partial})

    def on_tool_executed(self, ev: ToolExecuted) -> list[tuple]:
        block = {"type": "server_tool_use", "id": new_id("srvtoolu_"), "name": ev.call.name,
                 "input": {}}
        out = self._start(("server", block["id"]), block)
        canonical = json.dumps(parse_input(ev.call.arguments), ensure_ascii=False)  # SDKs parse it
        out.append(self._input_delta(self.open[1], canonical))
        out += self._close()
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
        return self._close() + [("message_delta", delta), ("message_stop", {"type": "message_stop"})]

    def error(self, err: ApiError) -> list[tuple]:
        return [("error", render_error(err))]
