"""Llama 3.x JSON calls: `<|python_tag|>{"name": "f", "parameters": {…}}`, or such an object bare.

Strategy: the arguments' key is `parameters`; a call follows the marker, or stands bare at the
very start of the answer (`maybe_bare_call`: `{` then `"name"` then `:`); more calls follow,
separated by `;` or nothing. The forced grammar allows the marker or none; the lazy triggers are
the marker's preamble anywhere and the bare object's start only at the start of the answer.

Does not: read Llama 3.1's `<function=name>{…}</function>` calls (formats.py counts a template
that teaches them as having no format).
"""
from __future__ import annotations

from ..gbnf import WS_SET, Rules, literal, prefix_regex
from .base import WS, State, Step
from .jsoncalls import JSON_HEAD, JsonCalls

NAME_KEY = '"name"'


class Llama3(JsonCalls):
    name, open, args_key = "llama3", "<|python_tag|>", "parameters"

    def detect(self, source: str) -> bool:  # the tag, or the JSON shape the 3.2/3.3 templates teach
        return self.open in source or '"parameters": dictionary' in source

    def maybe_bare_call(self, s: str) -> bool | None:
        if s[0] != "{":
            return False
        rest = s[1:].lstrip(WS)
        if len(rest) < len(NAME_KEY):
            return None if NAME_KEY.startswith(rest) else False
        if not rest.startswith(NAME_KEY):
            return False
        rest = rest[len(NAME_KEY):].lstrip(WS)
        return None if not rest else rest[0] == ":"

    def after(self, s: str) -> Step | None:
        if s[0] == ";":
            return Step(1, State.AFTER)
        if s[0] == "{":
            return Step(0, State.OPEN)
        return super().after(s)

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        more = f' (x-ws ";"? x-ws {call})*' if parallel else ""
        return rules.add("x-calls", f"({literal(self.open)} x-ws)? {call}{more}")

    def triggers(self, names: list[str]) -> tuple[str, ...]:
        return super().triggers(names) + (f"^{WS_SET}({prefix_regex(JSON_HEAD)})$",)  # bare: at the start


LLAMA3 = Llama3()
