"""OpenAI Responses ⇄ the internal model.

Strategy: `parse_request` turns a `/v1/responses` body into a `ResponsesRequest` — a `ChatRequest`
that also carries what only this dialect needs (instructions, previous_response_id, store, and the
request fields a Response object repeats, the namespace and custom tools).
Codex's tools: a `namespace` groups functions (shown to the model as `namespace.name`, its calls
sent back under their own name with `namespace`), a `custom` tool takes free text (shown as a
function of one string, `input`), a hosted `web_search` that asks for no live web access is
dropped with a warning. Encoding is responses_encoder.py's. `prepare` and `keep` are the store's hooks around a request (`previous_response_id`, `store`):
instructions are never carried over (as OpenAI documents), a stored conversation is.

Does not: own a store (the app hands its ResponseStore to the hooks), frame SSE bytes, or generate.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace

from ..core import (ApiError, ChatRequest, Message, Reasoning, Text, Tool, ToolCall, ToolResult,
                    bad_request)
from ..media import image_from_url
from .common import (SPEC_FIELDS, Dialect, Draft, build_request, hosted_tool, ignore_unknown,
                     parse_output_format, parse_sampling, sampling_fields)
from .openai_chat import render_error
from .responses_encoder import Encoder
from .fields import (content, get_bool, get_choice, get_list, get_object, get_str, objects,
                     require_object, texts)

ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
TEXT_PARTS = {"input_text": "text", "output_text": "text", "text": "text", "refusal": "refusal"}
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
# our server tools' output items, sent back as input: accepted, skipped
SERVER_ITEMS = ("code_interpreter_call", "shell_call", "web_search_call")
KNOWN = {"model", "input", "instructions", "previous_response_id", "store", "stream", "tools",
         "tool_choice", "parallel_tool_calls", "text", "reasoning", "metadata", "user",
         "max_tool_calls"} | sampling_fields("responses") | SPEC_FIELDS
# a custom (free-form) tool is shown to the model as a function of one string
CUSTOM_INPUT = {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}
NAMESPACE_SEP = "."  # a namespace tool's functions are shown as `namespace.name`
log = logging.getLogger("unsloth_min.dialects")


@dataclass(frozen=True)
class ResponsesRequest(ChatRequest):
    instructions: str | None = None  # also messages[0], as a system message
    previous_response_id: str | None = None
    store: bool = True
    sent: dict = field(default_factory=dict)  # fields a Response repeats as the client sent them
    namespaces: dict = field(default_factory=dict)  # shown name → (namespace, function name)
    custom: frozenset = frozenset()  # shown names of custom tools (their calls: custom_tool_call)

    def echo(self) -> dict:
        """The request fields a Response object repeats (what the openai SDK's `Response` expects)."""
        s = self.sent
        return {
            "instructions": self.instructions, "max_output_tokens": self.sampling.max_tokens,
            "max_tool_calls": self.max_tool_calls, "metadata": s["metadata"],
            "parallel_tool_calls": self.parallel_tool_calls,
            "previous_response_id": self.previous_response_id,
            "reasoning": {"effort": self.reasoning_effort, "summary": s["summary"]},
            "service_tier": "default", "store": self.store, "temperature": self.sampling.temperature,
            "text": {"format": s["format"] or {"type": "text"}}, "tool_choice": s["tool_choice"],
            "tools": s["tools"], "top_logprobs": 0, "top_p": self.sampling.top_p,
            "truncation": "disabled", "user": s["user"],
        }


# ---- parse ---------------------------------------------------------------------------------------
def parse_request(body: dict) -> ResponsesRequest:
    instructions = get_str(body, "instructions") or None
    draft = Draft(messages=[Message("system", [Text(instructions)])] if instructions else [],
                  sampling=parse_sampling(body, "responses"),
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
    namespaces, custom = parse_tools(body, draft)
    fmt = get_object(get_object(body, "text", {}), "format", path="text")
    draft.response_schema = parse_output_format(fmt, "text.format")
    parse_reasoning(body, draft)
    ignore_unknown(body, KNOWN)
    sent = {"metadata": get_object(body, "metadata", {}), "format": fmt,
            "summary": get_object(body, "reasoning", {}).get("summary"),
            "tool_choice": body.get("tool_choice", "auto"), "tools": get_list(body, "tools", []),
            "user": get_str(body, "user")}
    return build_request(draft, body, ResponsesRequest, instructions=instructions,
                         previous_response_id=previous, store=store, namespaces=namespaces,
                         custom=custom, sent=sent)


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
        elif kind in ("function_call", "custom_tool_call"):
            call = parse_call(item, p, kind == "custom_tool_call")
            names[call.id] = call.name
            msg = Message("assistant", [call])
        elif kind in ("function_call_output", "custom_tool_call_output"):
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


def parse_call(item: dict, path: str, custom: bool) -> ToolCall:
    """A function or custom tool call sent back: under the name the model was shown."""
    name = get_str(item, "name", path=path, required=True)
    namespace = get_str(item, "namespace", path=path)
    if custom:
        arguments = json.dumps({"input": get_str(item, "input", "", path=path)}, ensure_ascii=False)
    else:
        arguments = get_str(item, "arguments", "{}", path=path)
    return ToolCall(get_str(item, "call_id", path=path, required=True),
                    f"{namespace}{NAMESPACE_SEP}{name}" if namespace else name, arguments)


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


def parse_tools(body: dict, draft: Draft) -> tuple[dict, frozenset]:
    """Tools into the draft: function tools; custom tools as a function of one string; a
    namespace's functions flattened as `namespace.name`; hosted tools we run as server tools.
    Returns (shown name → (namespace, name), the custom tools' shown names)."""
    namespaces, custom = {}, set()
    for t, path in objects(body, "tools"):
        kind = get_str(t, "type", path=path, required=True)
        if kind == "namespace":
            space = get_str(t, "name", path=path, required=True)
            get_list(t, "tools", path=path, required=True)
            for inner, where in objects(t, "tools", path=path):
                tool = parse_tool(inner, where, custom, prefix=space + NAMESPACE_SEP)
                namespaces[tool.name] = (space, tool.name[len(space) + 1:])
                draft.tools.append(tool)
        elif kind in ("function", "custom"):
            draft.tools.append(parse_tool(t, path, custom))
        elif kind == "web_search" and t.get("external_web_access") is False:
            log.warning("dropping the request's web_search tool: it asks for no live web access")
        elif hosted_tool(kind):
            draft.hosted.append(hosted_tool(kind))
        else:
            raise bad_request(f"Invalid value for '{path}.type': {kind!r} is not supported; send "
                              "function tools.", param=f"{path}.type")
    draft.parallel_tool_calls = get_bool(body, "parallel_tool_calls", True)
    parse_tool_choice(body.get("tool_choice"), draft)
    return namespaces, frozenset(custom)


def parse_tool(t: dict, path: str, custom: set, prefix: str = "") -> Tool:
    """A function tool, or a custom one (its grammar or format is not enforced: any text)."""
    kind = get_choice(t, "type", ("function", "custom"), "function", path=path)
    name = prefix + get_str(t, "name", path=path, required=True)
    description = get_str(t, "description", "", path=path)
    if kind == "custom":
        custom.add(name)
        return Tool(name, description, CUSTOM_INPUT)
    return Tool(name, description, get_object(t, "parameters", {"type": "object", "properties": {}},
                                              path=path))


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


def parse_reasoning(body: dict, draft: Draft) -> None:
    effort = get_choice(get_object(body, "reasoning", {}), "effort", EFFORTS, path="reasoning")
    if effort is not None:
        draft.enable_thinking = effort != "none"
    draft.reasoning_effort = effort


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


DIALECT = Dialect("responses", parse_request, Encoder, render_error, prefix="/v1/responses",
                  prepare=prepare, keep=keep)
