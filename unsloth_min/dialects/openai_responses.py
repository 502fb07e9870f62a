"""OpenAI Responses ⇄ the internal model.

Strategy: `parse_request` turns a `/v1/responses` body into a `ResponsesRequest` — a `ChatRequest`
that also carries what only this dialect needs (instructions, previous_response_id, store, and the
request fields a Response object repeats). `Stream` turns events into Responses SSE events, each
with the next `sequence_number`, while keeping `response` (the Response object) up to date;
`render_response` is that object after all events, so streamed and non-streamed answers agree.
Output items are opened and closed in order — message (`output_text` part), reasoning
(`reasoning_text` part), function_call — as the SDK's stream accumulator requires.
`continue_from` and `conversation` are the pure halves of `previous_response_id`: instructions are
never carried over (as OpenAI documents), a stored conversation is.

Does not: store anything (app.py with responses_store.py does), frame SSE bytes, or generate.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field

from ..core import (ApiError, ChatRequest, Finish, Message, Reasoning, ReasoningDelta, Started,
                    Text, TextDelta, Tool, ToolCall, ToolCallDelta, ToolExecuted, ToolResult,
                    bad_request, new_id)
from ..media import image_from_url
from .common import EventStream, add_server_tools, apply_extensions, parse_output_format, parse_sampling
from .fields import get_bool, get_list, get_object, get_str, require_object

ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
TEXT_PARTS = {"input_text": "text", "output_text": "text", "text": "text", "refusal": "refusal"}
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
# OpenAI's hosted tools that we run as our server tools (SPEC "Server tools")
SERVER_TOOL_TYPES = {"web_search": "web_search", "web_search_preview": "web_search",
                     "code_interpreter": "python"}
# our server tools' output items, sent back as input: accepted, skipped
SERVER_ITEMS = ("code_interpreter_call", "shell_call", "web_search_call")


@dataclass
class ResponsesRequest(ChatRequest):
    instructions: str | None = None  # also messages[0], as a system message
    previous_response_id: str | None = None
    store: bool = True
    echo: dict = field(default_factory=dict)  # request fields the Response object repeats


# ---- parse ---------------------------------------------------------------------------------------
def parse_request(body: dict) -> ResponsesRequest:
    instructions = get_str(body, "instructions") or None
    req = ResponsesRequest(
        messages=[Message("system", [Text(instructions)])] if instructions else [],
        sampling=parse_sampling(body, ("max_output_tokens",), ()),
        model=get_str(body, "model", ""), stream=get_bool(body, "stream", False),
        instructions=instructions, previous_response_id=get_str(body, "previous_response_id"),
        store=get_bool(body, "store", True))
    value = body.get("input")
    if value is None and not req.previous_response_id:
        raise bad_request("Missing required parameter: 'input'.", param="input")
    if isinstance(value, str):
        req.messages.append(Message("user", [Text(value)]))
    elif value is not None:
        req.messages += parse_items(get_list(body, "input"), "input")
    server_tools = parse_tools(body, req)
    parse_text_format(body, req)
    effort = parse_reasoning(body, req)
    apply_extensions(body, req)
    add_server_tools(body, req, server_tools)
    req.echo = echo(body, req, effort)
    return req


def parse_items(items: list, path: str) -> list[Message]:
    """Input (or stored output) items; an assistant turn's items merge into one message."""
    out: list[Message] = []
    names: dict[str, str] = {}  # call_id → function name, for the results that follow
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        item = require_object(item, p)
        kind = get_str(item, "type", "message", path=p)
        if kind == "message":
            msg = parse_message(item, p)
        elif kind == "function_call":
            call = ToolCall(get_str(item, "call_id", path=p, required=True),
                            get_str(item, "name", path=p, required=True),
                            get_str(item, "arguments", "{}", path=p))
            names[call.id] = call.name
            msg = Message("assistant", [call])
        elif kind == "function_call_output":
            call_id = get_str(item, "call_id", path=p, required=True)
            msg = Message("tool", [ToolResult(call_id, output_text(item, p), names.get(call_id))])
        elif kind == "reasoning":
            msg = Message("assistant", [Reasoning(reasoning_text(item, p))])
        elif kind in SERVER_ITEMS:
            continue
        else:
            raise bad_request(f"Invalid value for '{p}.type': {kind!r} is not supported.",
                              param=f"{p}.type")
        if msg.role == "assistant" and out and out[-1].role == "assistant":
            out[-1].parts += msg.parts
        else:
            out.append(msg)
    return out


def parse_message(item: dict, path: str) -> Message:
    role = get_str(item, "role", path=path, required=True)
    if role not in ROLES:
        raise bad_request(f"Invalid value for '{path}.role': {role!r} is not one of user, system, "
                          "developer, assistant.", param=f"{path}.role")
    content = item.get("content")
    if isinstance(content, str):
        return Message(ROLES[role], [Text(content)])
    if not isinstance(content, list):
        raise bad_request(f"Invalid type for '{path}.content': expected a string or an array of "
                          "content parts.", param=f"{path}.content")
    return Message(ROLES[role], [parse_part(c, f"{path}.content[{j}]") for j, c in enumerate(content)])


def parse_part(part, path: str):
    part = require_object(part, path)
    kind = get_str(part, "type", path=path, required=True)
    if kind in TEXT_PARTS:
        return Text(get_str(part, TEXT_PARTS[kind], path=path, required=True))
    if kind == "input_image" and part.get("image_url") is not None:
        return image_from_url(get_str(part, "image_url", path=path), f"{path}.image_url")
    raise bad_request(f"Invalid value for '{path}.type': {kind!r} is not supported here"
                      f"{' (send image_url)' if kind == 'input_image' else ''}.", param=f"{path}.type")


def output_text(item: dict, path: str) -> str:
    """A function_call_output's `output`: a string or an array of content parts (text kept)."""
    output = item.get("output")
    if isinstance(output, list):
        parts = [(require_object(c, f"{path}.output[{i}]"), f"{path}.output[{i}]")
                 for i, c in enumerate(output)]
        return "".join(get_str(c, "text", "", path=p) for c, p in parts
                       if isinstance(c.get("type"), str) and c["type"] in TEXT_PARTS)
    return get_str(item, "output", "", path=path)


def reasoning_text(item: dict, path: str) -> str:
    key = "content" if get_list(item, "content", [], path=path) else "summary"
    parts = get_list(item, key, [], path=path)
    return "".join(get_str(require_object(c, f"{path}.{key}[{i}]"), "text", "", path=f"{path}.{key}[{i}]")
                   for i, c in enumerate(parts))


def parse_tools(body: dict, req: ChatRequest) -> tuple[str, ...]:
    """Flat function tools into `req.tools`; returns the server tools hosted-tool types ask for."""
    server = []
    for i, t in enumerate(get_list(body, "tools", [])):
        path = f"tools[{i}]"
        t = require_object(t, path)
        kind = get_str(t, "type", path=path, required=True)
        if kind == "function":
            req.tools.append(Tool(get_str(t, "name", path=path, required=True),
                                  get_str(t, "description", "", path=path),
                                  get_object(t, "parameters", {"type": "object", "properties": {}},
                                             path=path)))
        elif kind in SERVER_TOOL_TYPES:
            server.append(SERVER_TOOL_TYPES[kind])
        else:
            raise bad_request(f"Invalid value for '{path}.type': {kind!r} is not supported; send "
                              "function tools.", param=f"{path}.type")
    req.parallel_tool_calls = get_bool(body, "parallel_tool_calls", True)
    parse_tool_choice(body.get("tool_choice"), req)
    return tuple(server)


def parse_tool_choice(choice, req: ChatRequest) -> None:
    if choice is None:
        req.tool_choice = "auto" if req.tools else "none"
    elif choice in ("auto", "none", "required"):
        req.tool_choice = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        req.tool_choice = "function"
        req.tool_name = get_str(choice, "name", path="tool_choice", required=True)
    elif isinstance(choice, dict) and isinstance(choice.get("type"), str) \
            and choice["type"] in SERVER_TOOL_TYPES:
        req.tool_choice, req.tool_name = "function", SERVER_TOOL_TYPES[choice["type"]]
    else:
        raise bad_request("Invalid 'tool_choice': expected 'auto', 'none', 'required' or "
                          "{\"type\": \"function\", \"name\": ...}.", param="tool_choice")


def parse_text_format(body: dict, req: ChatRequest) -> None:
    fmt = get_object(get_object(body, "text", {}), "format", path="text")
    req.response_schema = parse_output_format(fmt, "text.format")


def parse_reasoning(body: dict, req: ChatRequest) -> str | None:
    effort = get_str(get_object(body, "reasoning", {}), "effort", path="reasoning")
    if effort is not None:
        if effort not in EFFORTS:
            raise bad_request(f"Invalid value for 'reasoning.effort': {effort!r} is not one of "
                              f"{', '.join(EFFORTS)}.", param="reasoning.effort")
        req.enable_thinking = effort != "none"
    return effort


def echo(body: dict, req: ResponsesRequest, effort: str | None) -> dict:
    """The request fields a Response object repeats (what the openai SDK's `Response` expects)."""
    reasoning = get_object(body, "reasoning", {})
    return {
        "instructions": req.instructions, "max_output_tokens": req.sampling.max_tokens,
        "max_tool_calls": req.max_tool_calls, "metadata": get_object(body, "metadata", {}),
        "parallel_tool_calls": req.parallel_tool_calls,
        "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": effort, "summary": reasoning.get("summary")},
        "service_tier": "default", "store": req.store, "temperature": req.sampling.temperature,
        "text": {"format": get_object(get_object(body, "text", {}), "format", path="text")
                 or {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"), "tools": get_list(body, "tools", []),
        "top_logprobs": 0, "top_p": req.sampling.top_p, "truncation": "disabled",
        "user": get_str(body, "user"),
    }


# ---- previous_response_id ------------------------------------------------------------------------
def continue_from(req: ResponsesRequest, history: list[Message]) -> None:
    """Put a stored conversation after this request's instructions, before its input."""
    n = 1 if req.instructions else 0
    req.messages[n:n] = history


def conversation(req: ResponsesRequest, response: dict) -> list[Message]:
    """What a later `previous_response_id` continues: the messages without instructions, then
    the output (its items read back as input items)."""
    n = 1 if req.instructions else 0
    return req.messages[n:] + parse_items(response["output"], "output")


# ---- render --------------------------------------------------------------------------------------
# text-like item type → (item id prefix, content part type, event name prefix)
TEXT_ITEMS = {"message": ("msg_", "output_text", "response.output_text"),
              "reasoning": ("rs_", "reasoning_text", "response.reasoning_text")}


def render_usage(u) -> dict:
    return {"input_tokens": u.prompt_tokens,
            "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": u.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.total_tokens}


def new_text_item(kind: str) -> dict:
    item = {"id": new_id(TEXT_ITEMS[kind][0]), "type": kind, "status": "in_progress"}
    if kind == "message":
        return dict(item, role="assistant", content=[])
    return dict(item, summary=[], content=[])


def new_part(kind: str) -> dict:
    part = {"type": TEXT_ITEMS[kind][1], "text": ""}
    return dict(part, annotations=[], logprobs=[]) if kind == "message" else part


def server_item(ev: ToolExecuted) -> dict:
    """A server tool's run as the hosted-tool output item OpenAI uses for its kind."""
    raw = ev.call.arguments
    try:
        args = json.loads(raw)
    except ValueError:
        args = None
    arg = (lambda key: str(args.get(key, raw)) if isinstance(args, dict) else raw)  # noqa: E731
    if ev.call.name == "python":
        return {"id": new_id("ci_"), "type": "code_interpreter_call", "status": "completed",
                "code": arg("code"), "container_id": "local",
                "outputs": [{"type": "logs", "logs": ev.result.content}]}
    if ev.call.name == "bash":
        return {"id": new_id("sh_"), "type": "shell_call", "status": "completed",
                "call_id": ev.call.id, "action": {"commands": [arg("command")], "timeout_ms": None,
                                                   "max_output_length": None}}
    return {"id": new_id("ws_"), "type": "web_search_call", "status": "completed",
            "action": {"type": "search", "query": arg("query")}}


def render_response(events: list, model: str, req: ResponsesRequest) -> dict:
    stream = Stream(req, model)
    for ev in events:
        stream.event(ev)
    return stream.response


class Stream(EventStream):
    """Events → `(event_name, payload)` pairs, keeping `response` (the final JSON) up to date."""

    def __init__(self, req: ResponsesRequest, model: str):
        self.seq = 0
        self.response = {"id": new_id("resp_"), "object": "response", "created_at": int(time.time()),
                         "status": "in_progress", "background": False, "completed_at": None,
                         "error": None, "incomplete_details": None, **req.echo, "model": model,
                         "output": [], "output_text": "", "usage": None}
        self.open = None  # (key, output index) of the item being streamed
        self.calls: dict[int, int] = {}  # ToolCallDelta.index → output index

    def _emit(self, kind: str, **fields) -> tuple:
        self.seq += 1
        return kind, {"type": kind, "sequence_number": self.seq - 1, **fields}

    def _lifecycle(self, kind: str) -> tuple:
        return self._emit(kind, response=copy.deepcopy(self.response))

    def on_started(self, ev: Started) -> list[tuple]:
        return [self._lifecycle("response.created"), self._lifecycle("response.in_progress")]

    def on_text(self, ev: TextDelta) -> list[tuple]:
        return self._text("message", ev.text)

    def on_reasoning(self, ev: ReasoningDelta) -> list[tuple]:
        return self._text("reasoning", ev.text)

    def _open(self, key, item: dict) -> list[tuple]:
        out = self._close()
        index = len(self.response["output"])
        self.response["output"].append(copy.deepcopy(item))
        self.open = (key, index)
        return out + [self._emit("response.output_item.added", output_index=index, item=item)]

    def _close(self, status: str = "completed") -> list[tuple]:
        if self.open is None:
            return []
        index, self.open = self.open[1], None
        item = self.response["output"][index]
        item["status"] = status
        where = {"item_id": item["id"], "output_index": index}
        out = []
        if item["type"] in TEXT_ITEMS:
            part = item["content"][0]
            extra = {"logprobs": []} if item["type"] == "message" else {}
            out += [self._emit(TEXT_ITEMS[item["type"]][2] + ".done", **where, content_index=0,
                               text=part["text"], **extra),
                    self._emit("response.content_part.done", **where, content_index=0,
                               part=copy.deepcopy(part))]
        elif item["type"] == "function_call":
            out.append(self._emit("response.function_call_arguments.done", **where,
                                  name=item["name"], arguments=item["arguments"]))
        return out + [self._emit("response.output_item.done", output_index=index,
                                 item=copy.deepcopy(item))]

    def _text(self, kind: str, text: str) -> list[tuple]:
        out = []
        if self.open is None or self.open[0] != kind:
            out = self._open(kind, new_text_item(kind))
            item = self.response["output"][self.open[1]]
            item["content"].append(new_part(kind))
            out.append(self._emit("response.content_part.added", item_id=item["id"],
                                  output_index=self.open[1], content_index=0, part=new_part(kind)))
        index = self.open[1]
        item = self.response["output"][index]
        item["content"][0]["text"] += text
        extra = {"logprobs": []} if kind == "message" else {}
        return out + [self._emit(TEXT_ITEMS[kind][2] + ".delta", item_id=item["id"],
                                 output_index=index, content_index=0, delta=text, **extra)]

    def on_tool_call(self, ev: ToolCallDelta) -> list[tuple]:
        out = []
        if ev.id is not None or ev.index not in self.calls:
            item = {"id": new_id("fc_"), "type": "function_call", "status": "in_progress",
                    "call_id": ev.id or new_id("call_"), "name": ev.name or "", "arguments": ""}
            out = self._open(("tool", ev.index), item)
            self.calls[ev.index] = self.open[1]
        if ev.arguments:
            index = self.calls[ev.index]
            item = self.response["output"][index]
            item["arguments"] += ev.arguments
            out.append(self._emit("response.function_call_arguments.delta", item_id=item["id"],
                                  output_index=index, delta=ev.arguments))
        return out

    def on_tool_executed(self, ev: ToolExecuted) -> list[tuple]:
        item = server_item(ev)
        out = self._open(("server", item["id"]), dict(item, status="in_progress"))
        index = self.open[1]
        self.response["output"][index] = item
        out += self._close()
        return out + [self._emit("tool_result", item_id=item["id"], output_index=index,
                                 tool_call_id=ev.call.id, name=ev.call.name,
                                 arguments=ev.call.arguments, content=ev.result.content,
                                 is_error=ev.result.is_error)]

    def on_finish(self, ev: Finish) -> list[tuple]:
        status = "incomplete" if ev.reason == "length" else "completed"
        out = self._close(status)
        r = self.response
        r.update(status=status, usage=render_usage(ev.usage), output_text="".join(
            p["text"] for it in r["output"] if it["type"] == "message" for p in it["content"]))
        if status == "incomplete":
            r["incomplete_details"] = {"reason": "max_output_tokens"}
        else:
            r["completed_at"] = int(time.time())
        return out + [self._lifecycle(f"response.{status}")]

    def error(self, err: ApiError) -> list[tuple]:
        self.response.update(status="failed", error={
            "code": "server_error" if err.status >= 500 else "invalid_prompt", "message": err.message})
        return [self._lifecycle("response.failed")]
