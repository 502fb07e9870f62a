"""Muse Glimmer: Harmony-like recipients, `[<|start|>assistant] to=R<|message|>BODY<|eom|>|<|eot|>`.

Strategy: the prompt ends with `<|start|>assistant`, so the answer starts inside a header
(`start`); `begin` reads ` to=R<|message|>`: `user` is answer text, `self` thinking (to the
message's end, `<|eom|>`), any other recipient a tool whose body is an `<atem:function_calls>`
block of `<atem:invoke>` calls with tagged parameters (tagged.py). A call's markup inside a
message to the user or to itself stays text. Message ends and later headers are `frames`.

Does not: read the template's document or citation markup (it stays text).
"""
from __future__ import annotations

import re

from ...core import Tool
from ..gbnf import Rules, literal, prefix_regex
from .base import CallFormat, State, Step, ThinkFormat, follows
from .tagged import Tags, TaggedReader, tagged_call

START, MESSAGE, EOM, EOT = "<|start|>", "<|message|>", "<|eom|>", "<|eot|>"
BLOCK, BLOCK_END, INVOKE = "<atem:function_calls>", "</atem:function_calls>", "<atem:invoke"
HEADER = re.compile(r"(?:assistant)?\s*to=(?P<to>[^\s<]{1,256})\s*" + re.escape(MESSAGE))
TAGS = Tags(head=re.compile(r'<atem:invoke\s+name="(?P<name>[^"]{1,256})"\s*>'), head_ends=(">",),
            param=re.compile(r'<atem:parameter\s+name="(?P<key>[^"]{1,256})"\s*>'), param_start="<atem:parameter",
            value_end="</atem:parameter>", call_end=("</atem:invoke>",))


class MuseGlimmer(CallFormat):
    name, open, close = "muse_glimmer", START, BLOCK_END
    frames = (START, EOM, EOT)
    extra_markers = (MESSAGE,)
    think = ThinkFormat(START + "assistant to=self" + MESSAGE, EOM)

    def detect(self, source: str) -> bool:
        return BLOCK in source and EOM in source

    @property
    def opens(self) -> tuple[str, ...]:
        return ()  # (calls begin at the frames' headers)

    def start(self, rendered: str) -> str | None:
        return START if rendered.endswith(START + "assistant") else None

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if listed:
            if s.startswith(BLOCK):
                return Step(len(BLOCK), State.LIST)
            if s.startswith(INVOKE):
                return Step(0, State.CALL, TaggedReader(TAGS, schemas))
            return None if BLOCK.startswith(s) or INVOKE.startswith(s) else Step(0, State.TEXT)
        if marker in (EOM, EOT):
            return Step(0, State.TEXT, silent=True)
        m = HEADER.match(s)
        if m is None:
            return None if MESSAGE not in s and len(s) < 300 else Step(0, State.TEXT)
        to = m.group("to")
        then = State.TEXT if to == "user" else State.THINK if to == "self" else State.LIST
        return Step(m.end(), then, silent=True)

    def after(self, s: str) -> Step | None:
        return follows(s, ((INVOKE, State.LIST), (BLOCK_END, State.AFTER), (EOM, State.TEXT), (EOT, State.TEXT)))

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:  # (addressed to the tool by name)
        invoke = tagged_call(rules, tool, i, f'<atem:invoke name="{tool.name}">', '<atem:parameter name="{key}">',
                             "</atem:parameter>", "</atem:invoke>")
        return f"{literal(f' to={tool.name}{MESSAGE}{BLOCK}')} x-ws {invoke} x-ws {literal(BLOCK_END)}"

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        return call  # (one message, one call)

    def preamble(self) -> list:
        return [" to="]

    def triggers(self, names: list[str]) -> tuple[str, ...]:  # (a recipient that is an allowed tool)
        heads = "|".join(prefix_regex([f" to={name}{MESSAGE}", BLOCK]) for name in names if name)
        return (f"((?:{heads}))$",)


MUSE_GLIMMER = MuseGlimmer()
