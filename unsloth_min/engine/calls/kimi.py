"""Kimi K2 / K2-Thinking: `<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:0
<|tool_call_argument_begin|>{…}<|tool_call_end|>…<|tool_calls_section_end|>`.

Strategy: a section of calls, each `<|tool_call_begin|>ID<|tool_call_argument_begin|>` then the
JSON arguments (streamed by a `HeadReader`); the id, `functions.NAME:INDEX`, names the call and is
kept as its id (Kimi's template writes ids back as they are, so ids we mint or fit have that
shape too). A call may also come without its section, or without its `<|tool_call_end|>` (the
next `<|tool_call_begin|>` starts the next one), and inside the thinking block, which it ends.
The markers are special tokens in Kimi's vocabulary (the engine shows them as text).

Does not: read Kimi K3's `<|open|>tools<|sep|>` calls (kimi_k3.py).
"""
from __future__ import annotations

import re

from ...core import Tool
from ..gbnf import Rules, literal
from .base import State, Step, follows
from .jsoncalls import HeadedCalls, HeadReader, args_rule

SECTION, SECTION_END = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
CALL, ARGS, CALL_END = "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>"
HEAD = re.compile(r"\s*(?P<id>(?:functions\.)?(?P<name>[^:<>\s]{1,256})(?::\d+)?)\s*" + re.escape(ARGS) + r"\s*")
KIMI_ID = re.compile(r"functions\.[^:\s]+:\d+")


class Kimi(HeadedCalls):
    name, open, close, item, head = "kimi_k2", SECTION, SECTION_END, CALL, HEAD
    more_opens = (CALL,)
    extra_markers = (ARGS, CALL_END)
    signature = (SECTION, CALL)
    calls_end_thinking = True

    def fit_id(self, call_id: str, index: int, name: str) -> str:
        return call_id if KIMI_ID.fullmatch(call_id) else f"functions.{name}:{index}"

    def mint_id(self, name: str, index: int) -> str:
        return f"functions.{name}:{index}"

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if marker == CALL and not listed and not s.startswith(CALL):  # (a call without its section)
            return Step(0, State.CALL, HeadReader(HEAD))
        return super().begin(s, listed, schemas, marker)

    def after(self, s: str) -> Step | None:
        return follows(s, ((CALL_END, State.AFTER), (CALL, State.LIST), (SECTION_END, State.TEXT)))

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        head = rules.add(f"x-head{i}", f'{literal(CALL + "functions." + tool.name + ":")} [0-9]{{1,3}} {literal(ARGS)}')
        return f"{head} {args_rule(rules, tool, i)} {literal(CALL_END)}"


KIMI_K2 = Kimi()
