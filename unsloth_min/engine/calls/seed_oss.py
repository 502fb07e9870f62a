"""ByteDance Seed-OSS: `<seed:tool_call>\n<function=NAME>\n<parameter=k>v</parameter>\n</function>\n</seed:tool_call>`.

Strategy: Qwen3-Coder's tags inside Seed's own markers, but values written with no newlines
around them (so a value's own trailing newline is kept): a `TaggedReader` (tagged.py) per call,
values typed by the tool's schema. Thinking is `<seed:think>…</seed:think>`.

Does not: read Seed's thinking-budget reflections (`<seed:cot_budget_reflect>` stays thinking).
"""
from __future__ import annotations

import re

from ...core import Tool
from ..gbnf import GAP, Rules, literal
from .base import CallFormat, State, Step, ThinkFormat
from .tagged import Tags, TaggedReader, tagged_call

TAGS = Tags(head=re.compile(r"\s*<function=(?P<name>[^>\s]{1,256})>"), head_ends=(">",),
            param=re.compile(r"<parameter=(?P<key>[^>\s]{1,256})>"), param_start="<parameter=",
            value_end="</parameter>", call_end=("</function>",), trim=False)


class SeedOss(CallFormat):
    name, open, close = "seed_oss", "<seed:tool_call>", "</seed:tool_call>"
    think = ThinkFormat("<seed:think>", "</seed:think>")
    signature = ("<seed:tool_call>", "<function=")
    calls_end_thinking = True

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        return Step(0, State.CALL, TaggedReader(TAGS, schemas))

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        return tagged_call(rules, tool, i, f"<function={tool.name}>", "<parameter={key}>", "</parameter>",
                           "</function>")

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        one = rules.add("x-one", f"{literal(self.open)} x-ws {call} x-ws {literal(self.close)}")
        return rules.add("x-calls", f"{one} (x-ws {one})*" if parallel else one)

    def preamble(self) -> list:
        return [self.open, GAP, "<function="]


SEED_OSS = SeedOss()
