"""Cohere Command R7B / Command A and their MoE: `<|START_ACTION|>[{"tool_call_id": "0", "tool_name":
"f", "parameters": {…}}, …]<|END_ACTION|>`, thinking in `<|START_THINKING|>…<|END_THINKING|>`.

Strategy: a JSON list of call objects between the action markers (`JsonList`), whose keys are
Cohere's own; the model's `tool_call_id` is kept as the call's id (so calls are read whole). The
answer's wrappers (`<|START_RESPONSE|>…<|END_RESPONSE|>`; the MoE's `<|START_TEXT|>…<|END_TEXT|>`)
are dropped (`frames`). Command R+'s older `Action:\n```json\n[…]\n```` is `COMMAND_R_PLUS`.

Does not: render documents or citations (the template does; citations stay text).
"""
from __future__ import annotations

from ..gbnf import GAP, Rules, literal
from .base import State, Step, ThinkFormat
from .jsoncalls import JsonList, Keys

WRAPPERS = ("<|START_RESPONSE|>", "<|END_RESPONSE|>", "<|START_TEXT|>", "<|END_TEXT|>")


class Cohere(JsonList):
    name, open, close = "cohere", "<|START_ACTION|>", "<|END_ACTION|>"
    args_key, keys = "parameters", Keys(name="tool_name", args=("parameters",), id="tool_call_id")
    signature = ("<|START_ACTION|>",)
    think = ThinkFormat("<|START_THINKING|>", "<|END_THINKING|>")
    frames = WRAPPERS

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if marker in WRAPPERS:
            return Step(0, State.TEXT, silent=True)
        return super().begin(s, listed, schemas, marker)


class CommandRPlus(Cohere):
    """Command R+'s older shape: `Action:` then a ```json fence holding the list."""
    name, open, close = "command_r_plus", "Action:", "```"
    think, frames = None, ()
    signature = ("Action:", "```json", "directly-answer")

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if not listed and s.startswith("```json"):
            return Step(len("```json"), State.OPEN)
        if not listed and "```json".startswith(s):
            return None
        return super().begin(s, listed, schemas, marker)

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        more = f' (x-ws "," x-ws {call})*' if parallel else ""
        return rules.add("x-calls", f'{literal("Action:" + chr(10) + "```json" + chr(10))} "[" x-ws {call}{more} '
                                    f'x-ws "]" x-ws {literal(self.close)}')

    def preamble(self) -> list:
        return ["Action:", GAP, "```json", GAP, "["]


COHERE, COMMAND_R_PLUS = Cohere(), CommandRPlus()
