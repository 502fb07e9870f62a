"""MiniMax M2: `<minimax:tool_call>\n<invoke name="NAME">\n<parameter name="k">v</parameter>\n</invoke>
\n</minimax:tool_call>`, several invokes in one block.

Strategy: the block is a list (LIST): each `<invoke name=…>` is read by a `TaggedReader`
(tagged.py: raw values typed by the tool's schema, streamed parameter by parameter), `after`
reads the next invoke or the block's end. Thinking is `<think>…</think>`, opened by the prompt.
The forced grammar writes the template's own shape; the lazy trigger waits for the block marker.

M1's calls are JSON objects, one a line, in `<tool_calls>` (`MINIMAX_M1`).

Does not: read MiniMax M3's namespaced XML (minimax_m3.py).
"""
from __future__ import annotations

import re

from ...core import Tool
from ..gbnf import GAP, Rules, literal
from .base import CallFormat, State, Step, follows
from .jsoncalls import JsonCalls
from .tagged import Tags, TaggedReader, tagged_call

BLOCK, BLOCK_END, INVOKE = "<minimax:tool_call>", "</minimax:tool_call>", "<invoke"
M2_TAGS = Tags(head=re.compile(r'<invoke\s+name="(?P<name>[^"]{1,256})"\s*>'), head_ends=(">",),
               param=re.compile(r'<parameter\s+name="(?P<key>[^"]{1,256})"\s*>'), param_start="<parameter",
               value_end="</parameter>", call_end=("</invoke>",))


class TaggedList(CallFormat):
    """A block of tagged calls: `OPEN` then calls each starting with `item`, then `close`."""
    item, tags = "", M2_TAGS

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if not listed:
            return Step(0, State.LIST)
        if s.startswith(self.item):
            return Step(0, State.CALL, TaggedReader(self.tags, schemas))
        return None if self.item.startswith(s) else Step(0, State.TEXT)

    @property
    def closes(self) -> tuple[str, ...]:
        return (self.close,)

    def after(self, s: str) -> Step | None:
        return follows(s, ((self.item, State.LIST),) + tuple((c, State.TEXT) for c in self.closes))

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        more = f" (x-ws {call})*" if parallel else ""
        return rules.add("x-calls", f"{literal(self.open)} x-ws {call}{more} x-ws {literal(self.close)}")

    def preamble(self) -> list:
        return [self.open, GAP, self.item]


class MiniMaxM2(TaggedList):
    name, open, close, item = "minimax_m2", BLOCK, BLOCK_END, INVOKE
    signature = (BLOCK, "<invoke name=")
    calls_end_thinking = True

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        return tagged_call(rules, tool, i, f'<invoke name="{tool.name}">', '<parameter name="{key}">',
                           "</parameter>", "</invoke>")


class MiniMaxM1(JsonCalls):
    """MiniMax M1: `<tool_calls>\n{"name": …, "arguments": …}\n…</tool_calls>`, one object a line."""
    name, open, close = "minimax_m1", "<tool_calls>", "</tool_calls>"
    signature = ("<tool_calls>", "<tool-name>")

    def after(self, s: str) -> Step | None:
        return Step(0, State.OPEN) if s[0] == "{" else super().after(s)

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        more = f" (x-ws {call})*" if parallel else ""
        return rules.add("x-calls", f"{literal(self.open)} x-ws {call}{more} x-ws {literal(self.close)}")


MINIMAX_M1, MINIMAX_M2 = MiniMaxM1(), MiniMaxM2()
