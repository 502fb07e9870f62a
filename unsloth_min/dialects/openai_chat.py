"""OpenAI Chat Completions ⇄ the internal model.

Strategy: `parse_request` reads the JSON body into a `Draft` (400 naming the field on bad input)
that common.build_request makes the request; `Encoder` turns events one by one into
`chat.completion.chunk` SSE payloads while it keeps the pieces of the answer, and a non-streamed
`chat.completion` is that same encoder after all events (`replay`), so the two cannot disagree.
Pure: no I/O, no engine. Every dialect module has this same shape (its `DIALECT` names it).

Does not: frame SSE bytes (the app does), or generate anything.
"""
from __future__ import annotations

import json
import time

from ..core import (ApiError, ChatRequest, Finish, Message, PromptProgress, Reasoning, ReasoningDelta,
                    Started, Text, TextDelta, Tool, ToolCall, ToolCallDelta, ToolExecuted, ToolResult,
                    Usage, bad_request, new_id)
from ..media import image_from_url
from . import encoder as base
from .common import (EFFORT_LEVELS, SPEC_FIELDS, Dialect, Draft, build_request, ignore_unknown,
                     parse_output_format, parse_sampling, sampling_fields)
from .fields import (content, get_bool, get_choice, get_list, get_number, get_object,
                     get_str, objects, require_object)

FINISH = {"stop": "stop", "stop_sequence": "stop", "length": "length", "tool_calls": "tool_calls"}
KNOWN = {"model", "messages", "n", "stream", "stream_options", "tools", "tool_choice",
         "parallel_tool_calls", "response_format", "reasoning_effort"} | sampling_fields("openai") | SPEC_FIELDS
ROLE_MAP = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
            "tool": "tool", "function": "tool"}


# ---- parse ---------------------------------------------------------------------------------------
def parse_request(body: dict) -> ChatRequest:
    messages = get_list(body, "messages", required=True)
    if not messages:
        raise bad_request("'messages' must contain at least one message.", param="messages")
    n = get_number(body, "n", 1, lo=1, integer=True)
    if n != 1:
        raise bad_request("Only n=1 is supported by this server.", param="n")
    draft = Draft(
        messages=[parse_message(m, f"messages[{i}]") for i, m in enumerate(messages)],
        sampling=parse_sampling(body, "openai"),
        model=get_str(body, "model", ""),
        stream=get_bool(body, "stream", False),
    )
    options = get_object(body, "stream_options", {})
    draft.include_usage = get_bool(options, "include_usage", False, path="stream_options")
    parse_tools(body, draft)
    draft.response_schema = parse_output_format(get_object(body, "response_format"),
                                                "response_format", holder="json_schema")
    draft.reasoning_effort = get_choice(body, "reasoning_effort", EFFORT_LEVELS)
    if draft.reasoning_effort == "none":
        draft.enable_thinking = False
    ignore_unknown(body, KNOWN)
    return build_request(draft, body)


def parse_message(m, path: str) -> Message:
    m = require_object(m, path)
    role = get_choice(m, "role", ROLE_MAP, path=path, required=True,
                      names="system, developer, user, assistant, tool")
    value = m.get("content")
    parts = [] if value is None else content(value, f"{path}.content", "content parts",
                                             lambda p, where: parse_part(p, where, role))
    msg = Message(ROLE_MAP[role], parts)
    if role == "assistant":
        thinking = get_str(m, "reasoning_content", path=path) or get_str(m, "reasoning", path=path)
        if thinking:
            msg.parts.insert(0, Reasoning(thinking))
        for j, call in enumerate(get_list(m, "tool_calls", [], path=path)):
            msg.parts.append(parse_tool_call(call, f"{path}.tool_calls[{j}]"))
    elif role in ("tool", "function"):
        call_id = get_str(m, "tool_call_id", path=path, required=role == "tool") or ""
        msg.parts = [ToolResult(call_id, msg.text, get_str(m, "name", path=path))]
    elif role == "user" and value is None:
        raise bad_request(f"Missing required parameter: '{path}.content'.", param=f"{path}.content")
    return msg


def parse_part(part, path: str, role: str):
    part = require_object(part, path)
    kind = get_str(part, "type", path=path, required=True)
    if kind in ("text", "input_text", "output_text", "refusal"):
        key = "refusal" if kind == "refusal" else "text"
        return Text(get_str(part, key, "", path=path, required=True))
    if kind == "image_url" and role == "user":
        image = part.get("image_url")
        if isinstance(image, str):
            return image_from_url(image, f"{path}.image_url")
        image = require_object(image, f"{path}.image_url")
        url = get_str(image, "url", path=f"{path}.image_url", required=True)
        return image_from_url(url, f"{path}.image_url.url")
    raise bad_request(f"Invalid value for '{path}.type': {kind!r} is not supported here.",
                      param=f"{path}.type")


def parse_tool_call(call, path: str) -> ToolCall:
    call = require_object(call, path)
    fn = require_object(call.get("function"), f"{path}.function")
    args = fn.get("arguments", "{}")
    if not isinstance(args, str):  # some clients send an object; keep it as JSON text
        args = json.dumps(args, ensure_ascii=False)
    return ToolCall(get_str(call, "id", "", path=path) or new_id("call_"),
                    get_str(fn, "name", path=f"{path}.function", required=True), args)


def parse_tools(body: dict, draft: Draft) -> None:
    for t, path in objects(body, "tools"):
        if get_str(t, "type", "function", path=path) != "function":
            raise bad_request(f"Invalid value for '{path}.type': only 'function' is supported.",
                              param=f"{path}.type")
        fn = require_object(t.get("function"), f"{path}.function")
        draft.tools.append(Tool(get_str(fn, "name", path=f"{path}.function", required=True),
                                get_str(fn, "description", "", path=f"{path}.function"),
                                get_object(fn, "parameters", {"type": "object", "properties": {}},
                                           path=f"{path}.function")))
    draft.parallel_tool_calls = get_bool(body, "parallel_tool_calls", True)
    choice = body.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, str) and choice in ("auto", "none", "required"):
        draft.choice = (choice, None)
    elif isinstance(choice, dict):
        fn = require_object(choice.get("function"), "tool_choice.function")
        draft.choice = ("function", get_str(fn, "name", path="tool_choice.function", required=True))
    else:
        raise bad_request("Invalid 'tool_choice': expected 'auto', 'none', 'required' or "
                          "{\"type\": \"function\", \"function\": {\"name\": ...}}.", param="tool_choice")


# ---- render --------------------------------------------------------------------------------------
def render_error(err: ApiError) -> dict:
    return {"error": {"message": err.message, "type": err.kind, "param": err.param, "code": err.code}}


def render_usage(u: Usage) -> dict:
    out = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
           "total_tokens": u.total_tokens, "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}
    if u.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    return out


def render_tool_result(ev: ToolExecuted) -> dict:
    return {"type": "tool_result", "tool_call_id": ev.call.id, "name": ev.call.name,
            "arguments": ev.call.arguments, "content": ev.result.content, "is_error": ev.result.is_error}


class Encoder(base.Encoder):
    """Events → `(event_name, payload)` pairs (payload a dict or the final "[DONE]"), keeping
    what the non-streamed `chat.completion` is made of."""

    def __init__(self, req: ChatRequest | None, model: str):
        super().__init__()
        self.include_usage = req is not None and req.include_usage
        self.model = model
        self.base = {"id": new_id("chatcmpl-"), "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": model, "system_fingerprint": None}
        self.text, self.thinking, self.results = [], [], []
        self.calls: dict[int, dict] = {}
        self.finish: Finish | None = None
        self._text_chunk = base.filler(self._chunk({"content": base.HOLE})[1])
        self._thinking_chunk = base.filler(self._chunk({"reasoning_content": base.HOLE})[1])

    @property
    def id(self) -> str:  # the answer's id, as the client sees it
        return self.base["id"]

    def final(self) -> dict:
        message = {"role": "assistant", "content": "".join(self.text) if self.text or not self.calls
                   else None, "refusal": None}
        if self.thinking:
            message["reasoning_content"] = "".join(self.thinking)
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        if self.results:
            message["tool_results"] = self.results
        return {"id": self.base["id"], "object": "chat.completion", "created": self.base["created"],
                "model": self.model, "system_fingerprint": None,
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": FINISH[self.finish.reason]}],
                "usage": render_usage(self.finish.usage)}

    def _chunk(self, delta: dict, finish: str | None = None) -> tuple:
        chunk = dict(self.base, choices=[{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish}])
        if self.include_usage:
            chunk["usage"] = None
        return None, chunk

    def on_started(self, ev: Started) -> list[tuple]:
        return [self._chunk({"role": "assistant", "content": ""})]

    def on_text(self, ev: TextDelta) -> list[tuple]:
        self.text.append(ev.text)
        return [(None, self._text_chunk(ev.text))]

    def on_reasoning(self, ev: ReasoningDelta) -> list[tuple]:
        self.thinking.append(ev.text)
        return [(None, self._thinking_chunk(ev.text))]

    def on_tool_call(self, ev: ToolCallDelta) -> list[tuple]:
        whole = self.calls.setdefault(ev.index, {"id": ev.id, "type": "function",
                                                 "function": {"name": ev.name, "arguments": ""}})
        whole["function"]["arguments"] += ev.arguments
        call = {"index": ev.index, "function": {"arguments": ev.arguments}}
        if ev.id is not None:
            call.update(id=ev.id, type="function")
            call["function"]["name"] = ev.name
        return [self._chunk({"tool_calls": [call]})]

    def on_progress(self, ev: PromptProgress) -> list[tuple]:
        return [(None, dict(self.base, choices=[], **base.render_progress(ev)))]

    def on_tool_executed(self, ev: ToolExecuted) -> list[tuple]:
        self.results.append(render_tool_result(ev))
        return [("tool_result", dict(self.base, choices=[], **render_tool_result(ev)))]

    def on_finish(self, ev: Finish) -> list[tuple]:
        self.finish = ev
        out = [self._chunk({}, FINISH[ev.reason])]
        if self.include_usage:
            out.append((None, dict(self.base, choices=[], usage=render_usage(ev.usage))))
        return out + [(None, "[DONE]")]

    def error(self, err: ApiError) -> list[tuple]:
        return [(None, render_error(err)), (None, "[DONE]")]


DIALECT = Dialect("openai", parse_request, Encoder, render_error, prefix="/v1/")
