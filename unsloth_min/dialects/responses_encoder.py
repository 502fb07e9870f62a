"""OpenAI Responses: core events → Responses SSE events and the Response object.

Strategy: `Encoder` gives each event the next `sequence_number` while it keeps `response` (the
Response object) up to date; a non-streamed answer is that object after all events (`replay`).
Output items are opened and closed in order — message (`output_text` part), reasoning
(`reasoning_text` part), function_call, custom_tool_call — as the SDK's stream accumulator
requires. A call to a flattened namespace tool goes out under its own name with its
`namespace`; a call to a custom tool as a `custom_tool_call` whose `input` is the text the model
wrote for the one string argument it was shown (openai_responses.py reads both).

Does not: read requests (openai_responses.py), frame SSE bytes, or generate.
"""
from __future__ import annotations

import copy
import json
import time

from ..core import (ApiError, Finish, PromptProgress, ReasoningDelta, Started, TextDelta, ToolCallDelta,
                    ToolExecuted, new_id)
from . import encoder as base

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


def custom_input(arguments: str) -> str:
    """A custom call's text: the `input` string of the arguments the model wrote (cut-off or
    malformed JSON: the text as it is)."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    return value.get("input", "") if isinstance(value, dict) else arguments


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


class Encoder(base.Encoder):
    """Events → `(event_name, payload)` pairs, keeping `response` (the final JSON) up to date."""

    def __init__(self, req, model: str):  # req: openai_responses.ResponsesRequest (it imports us)
        super().__init__()
        self.seq = 0
        self.response = {"id": new_id("resp_"), "object": "response", "created_at": int(time.time()),
                         "status": "in_progress", "background": False, "completed_at": None,
                         "error": None, "incomplete_details": None, **req.echo(), "model": model,
                         "output": [], "output_text": "", "usage": None}
        self.calls: dict[int, int] = {}  # ToolCallDelta.index → output index
        self.namespaces, self.custom = req.namespaces, req.custom
        self.inputs: dict[int, str] = {}  # output index → a custom call's arguments JSON so far

    @property
    def id(self) -> str:  # the answer's id, as the client sees it
        return self.response["id"]

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
        elif item["type"] == "custom_tool_call":
            item["input"] = custom_input(self.inputs.pop(index, ""))
            out.append(self._emit("response.custom_tool_call_input.done", **where,
                                  input=item["input"]))
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
            out = self.begin(("tool", ev.index), self.call_item(ev.name or "", ev.id))
            self.calls[ev.index] = self.index
        if ev.arguments:
            index = self.calls[ev.index]
            item = self.response["output"][index]
            if item["type"] == "custom_tool_call":  # its input is known once the call is whole
                self.inputs[index] = self.inputs.get(index, "") + ev.arguments
                return out
            item["arguments"] += ev.arguments
            out.append(self._emit("response.function_call_arguments.delta", item_id=item["id"],
                                  output_index=index, delta=ev.arguments))
        return out

    def call_item(self, shown: str, call_id: str | None) -> dict:
        """The output item of a call to the tool the model saw as `shown`."""
        space, name = self.namespaces.get(shown, (None, shown))
        item = {"id": new_id("ctc_" if shown in self.custom else "fc_"),
                "type": "custom_tool_call" if shown in self.custom else "function_call",
                "status": "in_progress", "call_id": call_id or new_id("call_"), "name": name}
        if space is not None:
            item["namespace"] = space
        return dict(item, input="") if shown in self.custom else dict(item, arguments="")

    def on_progress(self, ev: PromptProgress) -> list[tuple]:
        return [self._emit("response.prompt_progress", **base.render_progress(ev))]

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


