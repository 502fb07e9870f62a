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
from ..gbnf import GAP, Rules, literal
from .base import CallFormat, State, Step
from .jsoncalls import HeadReader, args_rule

SECTION, SECTION_END = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
CALL, ARGS, CALL_END = "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>"
HEAD = re.compile(r"\s*(?P<id>(?:functions\.)?(?P<name>[^:<>\s]{1,256})(?::\d+)?)\s*" + re.escape(ARGS) + r"\s*")
KIMI_ID = re.compile(r"functions\.[^:\s]+:\d+")


class Kimi(CallFormat):
    name, open, close = "kimi_k2", SECTION, SECTION_END
    more_opens = (CALL,)
    extra_markers = (ARGS, CALL_END)
    signature = (SECTION, CALL)
    calls_end_thinking = True

    def fit_id(self, call_id: str, index: int, name: str) -> str:
        return call_id if KIMI_ID.fullmatch(call_id) else f"functions.{name}:{index}"

    def mint_id(self, name: str, index: int) -> str:
        return f"functions.{name}:{index}"

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if s.startswith(CALL):
            return Step(len(CALL), State.CALL, HeadReader(HEAD))
        if marker == CALL and not listed:  # (a call without its section: the marker was the call's)
            return Step(0, State.CALL, HeadReader(HEAD))
        return None if CALL.startswith(s) else Step(0, State.TEXT)

    def after(self, s: str) -> Step | None:
        for mark, then in ((CALL_END, State.AFTER), (CALL, State.LIST), (SECTION_END, State.TEXT)):
            if s.startswith(mark):
                return Step(0 if then is State.LIST else len(mark), then)
            if mark.startswith(s):
                return None
        return Step(0, State.TEXT)

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        head = rules.add(f"x-head{i}", f'{literal(CALL + "functions." + tool.name + ":")} [0-9]{{1,3}} {literal(ARGS)}')
        return f"{head} {args_rule(rules, tool, i)} {literal(CALL_END)}"

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        more = f" (x-ws {call})*" if parallel else ""
        return rules.add("x-calls", f"{literal(SECTION)} {call}{more} {literal(SECTION_END)}")

    def preamble(self) -> list:
        return [SECTION, GAP, CALL]


KIMI_K2 = Kimi()
