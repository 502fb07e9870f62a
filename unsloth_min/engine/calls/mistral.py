"""Mistral (before v11): `[TOOL_CALLS][{"name": "f", "arguments": {…}}, …]`, one list of calls.

Strategy: the marker, then a JSON list of call objects: `begin` opens the list at `[` (a `{` right
after the marker is no call), `after` reads `,` (the next call) and `]` (the end); inside the
list, whatever is no call ends it and is dropped. The forced grammar is the marker and the list
(of one call without parallel calls); the lazy trigger the marker, `[` and the start of a call.

Does not: read v11's `[TOOL_CALLS]NAME[ARGS]{…}` (mistral_args.py).
"""
from __future__ import annotations

from ..gbnf import GAP, Rules, literal
from .base import State, Step
from .jsoncalls import JSON_HEAD, JsonCalls


class Mistral(JsonCalls):
    name, open = "mistral", "[TOOL_CALLS]"

    def begin(self, s: str, listed: bool, schemas: dict) -> Step | None:
        if not listed:
            return Step(1, State.LIST) if s[0] == "[" else Step(0, State.TEXT)
        return super().begin(s, listed, schemas)

    def after(self, s: str) -> Step | None:
        if s[0] == ",":
            return Step(1, State.LIST)
        return Step(1 if s[0] == "]" else 0, State.TEXT)

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        more = f' (x-ws "," x-ws {call})*' if parallel else ""
        return rules.add("x-calls", f'{literal(self.open)} x-ws "[" x-ws {call}{more} x-ws "]"')

    def preamble(self) -> list:
        return [self.open, GAP, "[", GAP] + JSON_HEAD


MISTRAL = Mistral()
