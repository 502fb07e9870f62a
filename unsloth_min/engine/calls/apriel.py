"""ServiceNow Apriel 1.5 / 1.6: `<tool_calls>[{"name": "f", "arguments": {…}}, …]</tool_calls>`.

Strategy: a JSON list of call objects between the two markers (`JsonList`, jsoncalls.py). Apriel
1.6 thinks first, with no opening marker: the prompt ends with `Here are my reasoning steps:\n`
and the answer follows `[BEGIN FINAL RESPONSE]` (its think format; the prompt's words count as
the start of the reasoning, as llama.cpp reads them); 1.5's `[BEGIN FINAL RESPONSE]` and
`[END FINAL RESPONSE]`/`<|end|>` markers around the answer are dropped.

Does not: render the reasoning prompt (the template does).
"""
from __future__ import annotations

from .base import State, Step, ThinkFormat
from .jsoncalls import JsonList

BEGIN_FINAL, END_FINAL = "[BEGIN FINAL RESPONSE]", "[END FINAL RESPONSE]"
STEPS = "Here are my reasoning steps:\n"


class Apriel(JsonList):
    name, open, close = "apriel", "<tool_calls>", "</tool_calls>"
    signature = ("<tool_calls>[",)
    frames = (BEGIN_FINAL, END_FINAL, "<|end|>")
    think = ThinkFormat(STEPS, BEGIN_FINAL, kept=True)

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if marker in self.frames:
            return Step(0, State.TEXT, silent=True)
        return super().begin(s, listed, schemas, marker)


APRIEL = Apriel()
