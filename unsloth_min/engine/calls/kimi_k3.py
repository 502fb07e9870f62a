"""Kimi K3: tagged sections, `<|open|>TAG attrs<|sep|>…<|close|>TAG<|sep|>`, calls inside a `tools` one.

Strategy: an answer is `think` (opened by the prompt when thinking), `response` and `tools`
sections, then `<|close|>message<|sep|>`. The section markers are `frames`: `begin` reads the tag
and answers thinking (`think`), a list of calls (`tools`) or a silent header (the rest). Each
`<|open|>call tool="NAME" index="N"<|sep|>` is read by a `TaggedReader` (tagged.py): its
`<|open|>argument key="k" type="T"<|sep|>v<|close|>argument<|sep|>` values are typed by the type
the model declares, else by the tool's schema. The markers are special tokens in Kimi's vocabulary.

Does not: read a call's arguments written as one `<|open|>json …` block (skipped: `{}`).
"""
from __future__ import annotations

import re

from ...core import Tool
from ..gbnf import GAP, Rules, literal
from .base import CallFormat, State, Step, ThinkFormat, follows
from .tagged import Tags, TaggedReader, tagged_call
from .xmlvalues import schema_types

OPEN, CLOSE, SEP = "<|open|>", "<|close|>", "<|sep|>"
TAG = re.compile(r"(\w+)[^<>]*?" + re.escape(SEP))
KINDS = {k: {"type": k} for k in ("string", "number", "integer", "boolean", "null", "array", "object")}
TAGS = Tags(head=re.compile(re.escape(OPEN) + r'call\s+tool="(?P<name>[^"]{1,256})"[^<>]*?' + re.escape(SEP)),
            head_ends=(SEP,), param_start=OPEN + "argument",
            param=re.compile(re.escape(OPEN) + r'argument\s+key="(?P<key>[^"]{1,256})"(?:\s+type="(?P<kind>\w+)")?'
                             r"[^<>]*?" + re.escape(SEP)),
            value_end=CLOSE + "argument" + SEP, call_end=(CLOSE + "call" + SEP,), kinds=KINDS)
ITEM = OPEN + "call"


class KimiK3(CallFormat):
    name, open = "kimi_k3", OPEN + "tools" + SEP
    frames = (OPEN, CLOSE)
    extra_markers = (SEP,)
    think = ThinkFormat(OPEN + "think" + SEP, CLOSE + "think" + SEP)
    signature = (OPEN, CLOSE, "<|end_of_msg|>")
    calls_end_thinking = True

    @property
    def opens(self) -> tuple[str, ...]:
        return ()  # (the tools section is one of the frames)

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if listed:
            if s.startswith(ITEM):
                return Step(0, State.CALL, TaggedReader(TAGS, schemas))
            return None if ITEM.startswith(s) else Step(0, State.TEXT)
        m = TAG.match(s)
        if m is None:
            return None if len(s) < 64 and SEP not in s else Step(0, State.TEXT)
        tag = m.group(1)
        if marker == OPEN and tag == "tools":
            return Step(m.end(), State.LIST, silent=True)
        if marker == OPEN and tag == "think":
            return Step(m.end(), State.THINK, silent=True)
        return Step(m.end(), State.TEXT, silent=True)

    def after(self, s: str) -> Step | None:
        return follows(s, ((ITEM, State.LIST), (CLOSE + "tools" + SEP, State.TEXT)))

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        props = tool.parameters.get("properties") if isinstance(tool.parameters, dict) else None

        def param(key: str) -> str:
            kinds = schema_types((props or {}).get(key))
            kind = next(iter(kinds)) if len(kinds) == 1 else "string"
            return f'{OPEN}argument key="{key}" type="{kind}"{SEP}'

        return tagged_call(rules, tool, i, f'{OPEN}call tool="{tool.name}" index="{i + 1}"{SEP}', param,
                           CLOSE + "argument" + SEP, CLOSE + "call" + SEP)

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        more = f" (x-ws {call})*" if parallel else ""
        return rules.add("x-calls", f"{literal(self.open)} {call}{more} {literal(CLOSE + 'tools' + SEP)}")

    def preamble(self) -> list:
        return [self.open, GAP, ITEM]


KIMI_K3 = KimiK3()
