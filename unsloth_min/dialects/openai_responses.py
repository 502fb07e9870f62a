"""OpenAI Responses ⇄ the internal model.

Strategy: `parse_request` turns a `/v1/responses` body into a `ResponsesRequest` — a `ChatRequest`
that also carries what only this dialect needs (instructions, previous_response_id, store, and the
request fields a Response object repeats). `Encoder` turns events into Responses SSE events, each
with the next `sequence_number`, while keeping `response` (the Response object) up to date;
a non-streamed answer is that object after all events (`replay`), so the two agree.
Output items are opened and closed in order — message (`output_text` part), reasoning
(`reasoning_text` part), function_call — as the SDK's stream accumulator requires.
`prepare` and `keep` are the store's hooks around a request (`previous_response_id`, `store`):
instructions are never carried over (as OpenAI documents), a stored conversation is.

Does not: own a store (the app hands its ResponseStore to the hooks), frame SSE bytes, or generate.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field, replace

from ..core import (ApiError, ChatRequest, Finish, Message, Reasoning, ReasoningDelta, Started,
                    Text, TextDelta, Tool, ToolCall, ToolCallDelta, ToolExecuted, ToolResult,
                    bad_request, new_id)
from ..media import image_from_url
from . import encoder as base
from .openai_chat import render_error
from .common import Dialect, Draft, build_request, hosted_tool, parse_output_format, parse_sampling
from .fields import (content, get_bool, get_choice, get_list, get_object, get_str, objects,
                     require_object, texts)

ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
TEXT_PARTS = {"input_text": "text", "output_text": "text", "text": "text", "refusal": "refusal"}
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
# our server tools' output items, sent back as input: accepted, skipped
SERVER_ITEMS = ("code_interpreter_call", "shell_call", "web_search_call")


@dataclass(frozen=True)
class ResponsesRequest(ChatRequest):
    instructions: str | None = None  # also messages[0], as a system message
    previous_response_id: str | None = None
    store: bool = True
    echo: dict = field(default_factory=dict)  # request fields the Response object repeats


# ---- parse ---------------------------------------------------------------------------------------
def parse_request(body: dict) -> ResponsesRequest:
    instructions = get_str(body, "instructions") or None
    draft = Draft(messages=[Message("system", [Text(instructions)])] if instructions else [],
                  sampling=parse_sampling(body, ("max_output_tokens",), ()),
                  model=get_str(body, "model", ""), stream=get_bool(body, "stream", False))
    previous = get_str(body, "previous_response_id")
    store = get_bool(body, "store", True)
    value = body.get("input")
    if value is None and not previous:
        raise bad_request("Missing required parameter: 'input'.", param="input")
    if isinstance(value, str):
        draft.messages.append(Message("user", [Text(value)]))
    elif value is not None:
        draft.messages += parse_items(get_list(body, "input"), "input")
    parse_tools(body, draft)
    draft.response_schema = parse_output_format(
        get_object(get_object(body, "text", {}), "format", path="text"), "text.format")
    effort = parse_reasoning(body, draft)
    req = build_request(draft, body, ResponsesRequest, instructions=instructions,
                        previous_response_id=previous, store=store)
    return replace(req, echo=echo(body, req, effort))


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
    role = get_choice(item, "role", ROLES, path=path, required=True)
    return Message(ROLES[role], content(item.get("content"), f"{path}.content", "content parts",
                                        parse_part))


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
        return texts(output, f"{path}.output", TEXT_PARTS)
    return get_str(item, "output", "", path=path)


def reasoning_text(item: dict, path: str) -> str:
    key = "content" if get_list(item, "content", [], path=path) else "summary"
    return texts(get_list(item, key, [], path=path), f"{path}.{key}")


def parse_tools(body: dict, draft: Draft) -> None:
    """Flat function tools into the draft; hosted-tool types we run ask for server tools."""
    for t, path in objects(body, "tools"):
        kind = get_str(t, "type", path=path, required=True)
        if kind == "function":
            draft.tools.append(Tool(get_str(t, "name", path=path, required=True),
                                    get_str(t, "description", "", path=path),
                                    get_object(t, "parameters", {"type": "object", "properties": {}},
                                               path=path)))
        elif hosted_tool(kind):
            draft.hosted.append(hosted_tool(kind))
        else:
            raise bad_request(f"Invalid value for '{path}.type': {kind!r} is not supported; send "
                              "function tools.", param=f"{path}.type")
    draft.parallel_tool_calls = get_bool(body, "parallel_tool_calls", True)
    parse_tool_choice(body.get("tool_choice"), draft)


def parse_tool_choice(choice, draft: Draft) -> None:
    if choice is None:
        return
    if choice in ("auto", "none", "required"):
        draft.choice = (choice, None)
    elif isinstance(choice, dict) and choice.get("type") == "function":
        draft.choice = ("function", get_str(choice, "name", path="tool_choice", required=True))
    elif isinstance(choice, dict) and isinstance(choice.get("type"), str) and hosted_tool(choice["type"]):
        draft.choice = ("function", hosted_tool(choice["type"]))
    else:
        raise bad_request("Invalid 'tool_choice': expected 'auto', 'none', 'required' or "
                          "{\"type\": \"function\", \"name\": ...}.", param="tool_choice")


def parse_reasoning(body: dict, draft: Draft) -> str | None:
    effort = get_choice(get_object(body, "reasoning", {}), "effort", EFFORTS, path="reasoning")
    if effort is not None:
        draft.enable_thinking = effort != "none"
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


# ---- previous_response_id and the store ---------------------------------------------------------
def prepare(req: ResponsesRequest, store) -> ResponsesRequest:
    """The stored conversation of `previous_response_id` after the instructions, before the
    input (a 404 when the store does not have it); instructions are never carried over."""
    if not req.previous_response_id:
        return req
    previous = store.get(req.previous_response_id)
    if previous is None:
        raise ApiError(404, "not_found_error", f"Previous response with id "
                       f"'{req.previous_response_id}' not found.", param="previous_response_id")
    n = 1 if req.instructions else 0
    return replace(req, messages=req.messages[:n] + previous.conversation + req.messages[n:])


def keep(req: ResponsesRequest, response: dict, store) -> None:
    """Store a finished answer (unless `store: false`) for later `previous_response_id`s."""
    if req.store and response["status"] in ("completed", "incomplete"):
        store.put(response, conversation(req, response))


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
    return Encoder(req, model).replay(events)


class Encoder(base.Encoder):
    """Events → `(event_name, payload)` pairs, keeping `response` (the final JSON) up to date."""

    def __init__(self, req: ResponsesRequest, model: str):
        super().__init__()
        self.seq = 0
        self.response = {"id": new_id("resp_"), "object": "response", "created_at": int(time.time()),
                         "status": "in_progress", "background": False, "completed_at": None,
                         "error": None, "incomplete_details": None, **req.echo, "model": model,
                         "output": [], "output_text": "", "usage": None}
        self.calls: dict[int, int] = {}  # ToolCallDelta.index → output index

    def final(self) -> dict:
        return self.response

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

    def add(self, item: dict) -> int:
        self.response["output"].append(copy.deepcopy(item))
        return len(self.response["output"]) - 1

    def started(self, index: int, item: dict) -> list[tuple]:
        return [self._emit("response.output_item.added", output_index=index, item=item)]

    def stopped(self, index: int, status: str = "completed") -> list[tuple]:
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
        fresh = self.current is None or self.current[0] != kind
        out = self.enter(kind, lambda: new_text_item(kind))
        item = self.response["output"][self.index]
        if fresh:
            item["content"].append(new_part(kind))
            out.append(self._emit("response.content_part.added", item_id=item["id"],
                                  output_index=self.index, content_index=0, part=new_part(kind)))
        item["content"][0]["text"] += text
        extra = {"logprobs": []} if kind == "message" else {}
        return out + [self._emit(TEXT_ITEMS[kind][2] + ".delta", item_id=item["id"],
                                 output_index=self.index, content_index=0, delta=text, **extra)]

    def on_tool_call(self, ev: ToolCallDelta) -> list[tuple]:
        out = []
        if ev.id is not None or ev.index not in self.calls:
            item = {"id": new_id("fc_"), "type": "function_call", "status": "in_progress",
                    "call_id": ev.id or new_id("call_"), "name": ev.name or "", "arguments": ""}
            out = self.begin(("tool", ev.index), item)
            self.calls[ev.index] = self.index
        if ev.arguments:
            index = self.calls[ev.index]
            item = self.response["output"][index]
            item["arguments"] += ev.arguments
            out.append(self._emit("response.function_call_arguments.delta", item_id=item["id"],
                                  output_index=index, delta=ev.arguments))
        return out

    def on_tool_executed(self, ev: ToolExecuted) -> list[tuple]:
        item = server_item(ev)
        out = self.begin(("server", item["id"]), dict(item, status="in_progress"))
        index = self.index
        self.response["output"][index] = item
        out += self.leave()
        return out + [self._emit("tool_result", item_id=item["id"], output_index=index,
                                 tool_call_id=ev.call.id, name=ev.call.name,
                                 arguments=ev.call.arguments, content=ev.result.content,
                                 is_error=ev.result.is_error)]

    def on_finish(self, ev: Finish) -> list[tuple]:
        status = "incomplete" if ev.reason == "length" else "completed"
        out = self.leave(status=status)
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


DIALECT = Dialect("responses", parse_request, Encoder, render_error, prefix="/v1/responses",
                  prepare=prepare, keep=keep)
