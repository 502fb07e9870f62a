"""MiniCPM5: `<function name="NAME"><param name="k">v</param></function>`, one element per call.

Strategy: each call starts at its own `<function name="` marker and is read by a `TaggedReader`
(tagged.py): raw values typed by the tool's schema, a `<![CDATA[…]]>` value taken as it stands.
Thinking is `<think>…</think>`, opened by the prompt. Detected, as llama.cpp does, by its
`Tool usage guidelines:` section with both tags.

Does not: read Qwen3-Coder's `<function=NAME>` calls (qwen3_xml.py).
"""
from __future__ import annotations

import re

from ...core import Tool
from ..gbnf import Rules, literal
from .base import CallFormat, State, Step
from .tagged import Tags, TaggedReader, tagged_call

TAGS = Tags(head=re.compile(r'(?P<name>[^"<>]{1,256})"\s*>'), head_ends=(">",),
            param=re.compile(r'<param\s+name="(?P<key>[^"]{1,256})"\s*>'), param_start="<param",
            value_end="</param>", call_end=("</function>",), trim=False)


class MiniCpm5(CallFormat):
    name, open = "minicpm5", '<function name="'
    signature = ("Tool usage guidelines:", '<function name="', '<param name="')
    calls_end_thinking = True

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        return Step(0, State.CALL, TaggedReader(TAGS, schemas))

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        return tagged_call(rules, tool, i, tool.name + '">', '<param name="{key}">', "</param>", "</function>")

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        one = rules.add("x-one", f"{literal(self.open)} {call}")
        return rules.add("x-calls", f"{one} (x-ws {one})*" if parallel else one)

    def preamble(self) -> list:
        return [self.open]


MINICPM5 = MiniCpm5()
