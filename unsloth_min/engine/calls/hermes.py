"""Hermes (Qwen 2.5/3, Hermes, many fine-tunes): `<tool_call>{"name": "f", "arguments": {…}}</tool_call>`.

Strategy: a JSON call object between the two markers, one pair per call; text may come before
the first call and after the last. The forced grammar is one or more such pairs (one without
parallel calls), the lazy trigger the opening marker plus the start of `{"name": "`.

Does not: read Qwen3-Coder's XML inside the same markers (qwen3_xml.py builds on this one).
"""
from __future__ import annotations

from ..gbnf import Rules, literal
from .jsoncalls import JsonCalls


class Hermes(JsonCalls):
    name, open, close = "hermes", "<tool_call>", "</tool_call>"
    signature = ("<tool_call>",)

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        one = rules.add("x-one", f"{literal(self.open)} x-ws {call} x-ws {literal(self.close)}")
        return rules.add("x-calls", f"{one} (x-ws {one})*" if parallel else one)


HERMES = Hermes()
