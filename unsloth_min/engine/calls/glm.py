"""GLM 4.5–4.7: `<tool_call>NAME<arg_key>k</arg_key><arg_value>v</arg_value>…</tool_call>`.

Strategy: Hermes's markers with tagged arguments inside (tagged.py): the name runs up to a newline
or the first tag (GLM 4.5/4.6 put newlines between the tags, 4.7 none), each value is raw text
typed by the tool's schema. A call inside the thinking block ends it (the model may skip
`</think>`). The forced grammar allows the whitespace between tags that 4.5/4.6 write; the lazy
trigger waits for `<tool_call>` and the start of an allowed name, so that a `<tool_call>`
mentioned in prose stays prose. It must be detected before Hermes (both have `<tool_call>`).

Does not: read Hermes JSON inside the markers (those templates are Hermes's).
"""
from __future__ import annotations

import re

from ...core import Tool
from ..gbnf import Rules, literal, prefix_regex, regex_escape
from .base import CallFormat, State, Step
from .tagged import Tags, TaggedReader, tagged_call

GLM_TAGS = Tags(head=re.compile(r"(?P<name>[^\s<>]{1,256})"), head_ends=("\n", "<"),
                param=re.compile(r"<arg_key>(?P<key>[^<>]{1,256})</arg_key>\s*<arg_value>"),
                param_start="<arg_key>", value_end="</arg_value>", call_end=("</tool_call>",))


class Glm(CallFormat):
    name, open, close = "glm", "<tool_call>", "</tool_call>"
    signature = ("<tool_call>", "<arg_key>")
    calls_end_thinking = True
    tags = GLM_TAGS

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        return Step(0, State.CALL, TaggedReader(self.tags, schemas))

    def after(self, s: str) -> Step | None:
        return Step(0, State.TEXT)  # (the reader took the closing marker)

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        return tagged_call(rules, tool, i, tool.name, ("<arg_key>{key}</arg_key>", "<arg_value>"), "</arg_value>",
                           self.close)

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        one = rules.add("x-one", f"{literal(self.open)} {call}")
        return rules.add("x-calls", f"{one} (x-ws {one})*" if parallel else one)

    def preamble(self) -> list:
        return [self.open]

    def triggers(self, names: list[str]) -> tuple[str, ...]:
        names = "|".join(prefix_regex([name]) for name in names if name)
        return (f"({regex_escape(self.open)}(?:{names}))$",)


GLM = Glm()
