"""IBM Granite 3.x: `<|tool_call|>[{"name": "f", "arguments": {…}}, …]`, answers in `<response>…</response>`.

Strategy: a JSON list of call objects after the marker (`JsonList`, jsoncalls.py), no closing
marker. Thinking is `<think>…</think>`; the `<response>` wrapper around the answer is dropped
(`frames`). Granite 4 writes Hermes's `<tool_call>` (its templates are Hermes's).

Does not: read Granite's citation or hallucination markup (it stays text).
"""
from __future__ import annotations

from .base import State, Step
from .jsoncalls import JsonList

WRAPPERS = ("<response>", "</response>")


class Granite(JsonList):
    name, open = "granite", "<|tool_call|>"
    signature = ("<|tool_call|>",)
    frames = WRAPPERS

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if marker in WRAPPERS:
            return Step(0, State.TEXT, silent=True)
        return super().begin(s, listed, schemas, marker)


GRANITE = Granite()
