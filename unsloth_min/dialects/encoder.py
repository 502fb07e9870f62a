"""The shared base of the dialects' encoders: core events in, wire events out, one block at a time.

Strategy: an encoder names one method per core event type (`on_text`, `on_tool_call`…) and
returns `(event name or None, payload)` pairs; an event it has no method for gives nothing. It
keeps the final answer up to date as it goes, so a non-streamed answer is the same encoder fed
the same events (`replay`): streamed and non-streamed answers cannot disagree. Anthropic's
content blocks and the Responses output items open and close in order, at most one at a time:
`enter` opens a block under a key unless it is the open one, `begin` always opens a new one,
`leave` closes the open one; a dialect says what opening and closing send (`started`, `stopped`).

Does not: frame SSE bytes (pacing.py and http/sse.py do), or know any dialect's fields.
"""
from __future__ import annotations

import dataclasses
import json
from json.encoder import encode_basestring
from typing import Callable

from ..core import Finish, PromptProgress, ReasoningDelta, Started, TextDelta, ToolCallDelta, ToolExecuted

METHODS = {Started: "on_started", TextDelta: "on_text", ReasoningDelta: "on_reasoning",
           ToolCallDelta: "on_tool_call", ToolExecuted: "on_tool_executed", Finish: "on_finish",
           PromptProgress: "on_progress"}


HOLE = "\0"  # (JSON escapes it: never in an event's fixed parts)
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # (the SSE framing's JSON)


def filler(event: dict) -> Callable[[str], bytes]:
    """`event`'s compact JSON as bytes, as a function of the one string HOLE in it: a hot event
    (a token's text delta) is joined from its fixed parts, not encoded again for each token."""
    head, tail = _COMPACT.encode(event).split(_COMPACT.encode(HOLE))
    head, tail = head.encode(), tail.encode()
    return lambda text: head + encode_basestring(text).encode() + tail


def render_progress(ev: PromptProgress) -> dict:
    """llama-server's `prompt_progress` object (`return_progress`), the same in every dialect."""
    return {"prompt_progress": dataclasses.asdict(ev)}


class Encoder:
    def __init__(self):
        self.current = None  # (key, index) of the open block

    def event(self, ev) -> list[tuple]:
        method = getattr(self, METHODS.get(type(ev), ""), None)
        return method(ev) if method else []

    def replay(self, events) -> dict:
        """The whole answer after `events` (what a non-streamed request gets)."""
        for ev in events:
            self.event(ev)
        return self.final()

    def final(self) -> dict:
        raise NotImplementedError

    # ---- blocks ----------------------------------------------------------------------------------
    def enter(self, key, make_block) -> list[tuple]:
        """Make the block under `key` the open one (a new one from `make_block()` if it is not)."""
        if self.current is not None and self.current[0] == key:
            return []
        return self.begin(key, make_block())

    def begin(self, key, block: dict) -> list[tuple]:
        out = self.leave()
        index = self.add(block)
        self.current = (key, index)
        return out + self.started(index, block)

    def leave(self, **how) -> list[tuple]:
        if self.current is None:
            return []
        index, self.current = self.current[1], None
        return self.stopped(index, **how)

    @property
    def index(self) -> int:
        return self.current[1]

    def add(self, block: dict) -> int:
        """Put `block` into the final answer; its index there."""
        raise NotImplementedError

    def started(self, index: int, block: dict) -> list[tuple]:
        return []

    def stopped(self, index: int, **how) -> list[tuple]:
        return []
