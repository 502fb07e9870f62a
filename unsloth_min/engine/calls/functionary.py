"""MeetKai Functionary v3.1 (`<function=NAME>{…}</function>`) and v3.2 (`>>>NAME\n{…}` recipients).

Strategy: v3.1 writes a call as `<function=NAME>` then the JSON arguments (a `HeadReader`,
streamed) and `</function>`, as Llama 3.1's custom tool format does. v3.2 writes every message
after a recipient line: the prompt ends with `>>>`, so the answer starts inside one (`start`);
`all` is answer text, any other name a call whose JSON arguments follow (`HeadReader` again);
later messages begin with `>>>` again (`frames`).

Does not: read v3.1's `<|python_tag|>` code calls (they stay text).
"""
from __future__ import annotations

import re

from ...core import Tool
from ..gbnf import Rules, literal
from .base import CallFormat, State, Step
from .jsoncalls import HeadReader, args_rule

V31_HEAD = re.compile(r"(?P<name>[^\s<>{}]{1,256})>\s*")
V32_HEAD = re.compile(r"(?P<name>[^\s<>{}]{1,256})\n\s*")
RECIPIENT = ">>>"


class FunctionaryV31(CallFormat):
    name, open, close = "functionary_v3_1", "<function=", "</function>"
    signature = ("<function=",)

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        return Step(0, State.CALL, HeadReader(V31_HEAD))

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        return f"{literal(tool.name + '>')} {args_rule(rules, tool, i)} {literal(self.close)}"

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        one = rules.add("x-one", f"{literal(self.open)} {call}")
        return rules.add("x-calls", f"{one} (x-ws {one})*" if parallel else one)

    def preamble(self) -> list:
        return [self.open]


class FunctionaryV32(CallFormat):
    name, open = "functionary_v3_2", RECIPIENT
    frames = (RECIPIENT,)

    def detect(self, source: str) -> bool:
        return ">>>all" in source and ">>>${recipient}" in source

    @property
    def opens(self) -> tuple[str, ...]:
        return ()  # (every message opens with the frame's recipient line)

    def start(self, rendered: str) -> str | None:
        return RECIPIENT if rendered.endswith(RECIPIENT) else None

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if "all\n".startswith(s[:4]):
            return None if len(s) < 4 else Step(4, State.TEXT, silent=True)
        return Step(0, State.CALL, HeadReader(V32_HEAD))

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        return f"{literal(tool.name + chr(10))} {args_rule(rules, tool, i)}"

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        more = f" (x-ws {literal(RECIPIENT)} {call})*" if parallel else ""
        return rules.add("x-calls", f"{call}{more}")

    def preamble(self) -> list:
        return [RECIPIENT]

    def triggers(self, names: list[str]) -> tuple[str, ...]:
        return ()  # (the answer starts inside a recipient line: calls are forced or free)


FUNCTIONARY_V31, FUNCTIONARY_V32 = FunctionaryV31(), FunctionaryV32()
