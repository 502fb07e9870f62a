"""Fireworks FireFunction v2: ` functools[{"name": "f", "arguments": {…}}, …]`.

Strategy: a JSON list of call objects after the word `functools` (`JsonList`, jsoncalls.py), with
no closing marker. The template reads the tools from its own variable `functions` (a JSON text),
which `context` fills in.

Does not: check that `functools` starts a word (prose saying `functools[{"name": …` would be read
as calls; the lazy trigger waits for `functools[`).
"""
from __future__ import annotations

import json

from ..gbnf import GAP, prefix_regex
from .jsoncalls import JsonList


class FireFunction(JsonList):
    name, open = "firefunction", "functools"
    signature = ("functools[",)

    def context(self, req, thinking: bool) -> dict:
        return {"functions": json.dumps([{"name": t.name, "description": t.description, "parameters": t.parameters}
                                         for t in req.tools], ensure_ascii=False, indent=2)}


    def triggers(self, names: list[str]) -> tuple[str, ...]:  # (`functools` alone is a word in prose)
        start = prefix_regex([self.open + "[", GAP] + self.json_head())
        return (f"({start})$",)


FIREFUNCTION = FireFunction()
