"""Ling 3.0 (Bailing V3): GLM's tagged calls inside `<role>ASSISTANT</role>…<|role_end|>` turns.

Strategy: the calls are GLM's (`<tool_call>NAME<arg_key>k</arg_key>\n<arg_value>v</arg_value>
</tool_call>`); the prompt opens the thinking block, which a call may end without `</think>`;
the end-of-turn marker `<|role_end|>`, which the model may spell out as text, is dropped
(`frames`: its `begin` answers with a silent header). Whitespace is the model's own: reasoning
keeps its trailing newline and text after a call its leading one, as llama.cpp's ling3 parser
leaves them. Detected before GLM (both have `<arg_key>`) by its role sections.

Does not: render the role sections (the template does).
"""
from __future__ import annotations

from .base import State, Step
from .glm import Glm

ROLE_END = "<|role_end|>"


class Ling(Glm):
    name = "ling"
    signature = ("<role>ASSISTANT</role>", "<arg_key>")
    frames = (ROLE_END,)
    keeps_space = True

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if marker == ROLE_END:
            return Step(0, State.TEXT, silent=True)
        return super().begin(s, listed, schemas, marker)


LING = Ling()
