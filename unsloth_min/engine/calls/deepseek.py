"""DeepSeek R1 and V3.1: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>…<｜tool▁call▁end｜>…<｜tool▁calls▁end｜>`.

Strategy: a section of calls between the two `calls` markers, each call between `call` markers:
R1 writes `function<｜tool▁sep｜>NAME` then the arguments in a ```json fence, V3.1 writes
`NAME<｜tool▁sep｜>` then the bare arguments. `begin` opens the section (LIST) and each call,
whose `HeadReader` waits for the head, then streams the JSON object; `after` skips the fence's
end and the call's closing marker and reads what follows: another call, or the section's end.
The markers are special tokens in DeepSeek's vocabulary (the engine shows them as text). The
forced grammar writes the family's own call; the lazy trigger waits for the section marker.

Does not: read DeepSeek V3.2/V4's DSML calls (dsml.py).
"""
from __future__ import annotations

import re

from ...core import Tool
from ..gbnf import Rules, literal
from .base import CallFormat, State, Step, follows
from .jsoncalls import HeadedCalls, args_rule

CALLS, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
FENCE = "```"


class DeepSeek(HeadedCalls):
    """R1's calls (V3.1's: `DeepSeekV31`)."""
    name, open, close, item = "deepseek_r1", CALLS, CALLS_END, CALL
    extra_markers = (CALL, CALL_END, SEP)
    signature = (CALLS, "function" + SEP)  # R1's templates render `tool['type'] + SEP`, or this
    head = re.compile(r"\w*" + re.escape(SEP) + r"\s*(?P<name>[^\s<{`]{1,256})\s*(?:```(?:json)?)?\s*")
    calls_end_thinking = True

    def detect(self, source: str) -> bool:
        return CALLS in source and ("function" + SEP in source or "tool['type'] + '" + SEP in source)

    def after(self, s: str) -> Step | None:
        return follows(s, ((FENCE, State.AFTER), (CALL_END, State.AFTER), (CALL, State.LIST), (CALLS_END, State.TEXT)))

    def call_text(self, name: str) -> str:
        return f"{CALL}function{SEP}{name}\n```json\n"

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        fence = f' "\\n" {literal(FENCE)}' if FENCE in self.call_text("") else ""
        return f"{literal(self.call_text(tool.name))} {args_rule(rules, tool, i)}{fence} {literal(CALL_END)}"


class DeepSeekV31(DeepSeek):
    name = "deepseek_v3_1"
    signature = (CALLS, SEP)
    head = re.compile(r"(?P<name>[^\s<{]{1,256})" + re.escape(SEP) + r"\s*")

    def detect(self, source: str) -> bool:
        return CallFormat.detect(self, source)

    def call_text(self, name: str) -> str:
        return f"{CALL}{name}{SEP}"


DEEPSEEK_R1, DEEPSEEK_V31 = DeepSeek(), DeepSeekV31()
