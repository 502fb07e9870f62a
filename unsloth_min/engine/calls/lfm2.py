"""Liquid LFM2 / LFM2.5: Python-style calls, `<|tool_call_start|>[f(a=1), g(b="x")]<|tool_call_end|>`.

Strategy: the marker opens a list (LIST); each call, `NAME(key=value, …)`, is read by a `PyReader`
that scans to the call's closing parenthesis (minding Python strings and brackets), then parses
the arguments with `ast` — never evaluated: each value is a literal (Python's `True`/`None`, or
JSON's `true`/`null`, which LFM2 also writes) turned into JSON. A call's name is announced at its
`(`, its arguments come whole at its `)`. `after` reads `,`, `]` and the closing marker. Thinking
is `<think>…</think>`, which the model opens itself; a call written inside it is thinking.
History calls carry their reasoning in `thinking`, as the LFM2.5 template reads it. Detected by
the tool-list markers (LFM2) or the plain `List of tools: [` (LFM2.5), as llama.cpp does.

Does not: accept positional arguments (LFM2 writes keywords only; a positional one is no call).
"""
from __future__ import annotations

import ast
import json
import re

from ...core import Tool
from ..gbnf import Rules, literal, prefix_regex, regex_escape, tool_schema
from .base import State, Step, WholeReader
from .jsoncalls import JsonList

START, END = "<|tool_call_start|>", "<|tool_call_end|>"
NAME = re.compile(r"[A-Za-z_][\w.\-]{0,255}\(")
JSON_WORDS = {"true": True, "false": False, "null": None}
CALL_LIMIT = 1 << 20  # characters one call may take before it is no call


def py_value(node: ast.AST):
    """A literal's value; JSON's true/false/null read as Python's. ValueError: not a literal."""
    if isinstance(node, ast.Name) and node.id in JSON_WORDS:
        return JSON_WORDS[node.id]
    if isinstance(node, ast.Dict):
        return {py_value(k): py_value(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [py_value(e) for e in node.elts]
    return ast.literal_eval(node)


class PyReader(WholeReader):
    """One `NAME(…)` call (fed the text from its name)."""

    def __init__(self):
        super().__init__()
        self.depth, self.quote, self.esc, self.scanned = 0, "", False, 0

    def feed(self, buf: str) -> Step:
        if self.name is None:
            m = NAME.match(buf)
            if m is None:
                return Step(0, State.CALL if re.fullmatch(r"[\w.\-]{0,256}", buf) else State.TEXT)
            self.name = m.group(0)[:-1]
        end = self._scan(buf)
        if end == -1:
            return Step(0, State.CALL) if len(buf) < CALL_LIMIT else Step(0, State.TEXT)
        try:
            call = ast.parse(buf[:end], mode="eval").body
            if not isinstance(call, ast.Call) or call.args:
                raise ValueError("positional arguments")
            self.args = json.dumps({k.arg: py_value(k.value) for k in call.keywords}, ensure_ascii=False)
        except (SyntaxError, ValueError, TypeError):
            return Step(0, State.TEXT)
        return Step(end, State.AFTER)

    def _scan(self, buf: str) -> int:
        """Where the call's closing parenthesis ends (-1: not yet); resumes where it stopped."""
        for i in range(self.scanned, len(buf)):
            c = buf[i]
            if self.quote:
                if self.esc:
                    self.esc = False
                elif c == "\\":
                    self.esc = True
                elif c == self.quote:
                    self.quote = ""
            elif c in "\"'":
                self.quote = c
            elif c in "([{":
                self.depth += 1
            elif c in ")]}":
                self.depth -= 1
                if self.depth == 0:
                    return i + 1
        self.scanned = len(buf)
        return -1

class Lfm2(JsonList):
    """(`JsonList`'s list reading — `[`, `,`, `]`, the closing marker — with Python calls inside.)"""
    name, open, close = "lfm2", START, END

    def detect(self, source: str) -> bool:
        return ("<|tool_list_start|>" in source and "<|tool_list_end|>" in source) or \
            ("List of tools: [" in source and "<|tool_list_start|>" not in source)

    def adjust(self, messages: list[dict]) -> list[dict]:
        return [dict(m, thinking=m["reasoning_content"]) if m.get("reasoning_content") else m for m in messages]

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        return Step(0, State.CALL, PyReader()) if listed else super().begin(s, listed, schemas, marker)

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        """`NAME(k=v, …)`: the required keys in schema order, then any optional ones; values as
        JSON (which the reader takes as Python literals too)."""
        schema = tool_schema(tool)
        props = schema.get("properties") if isinstance(schema, dict) else None
        required = (schema.get("required") or []) if isinstance(schema, dict) else []
        must, may = [], []
        for j, (key, sub) in enumerate(props.items() if isinstance(props, dict) else []):
            value = rules.schema(sub, f"tool{i}-p{j}") or rules.schema({}, f"tool{i}-p{j}-any")
            (must if key in required else may).append(f"{literal(key + '=')} {value}")
        optional = f"( {' | '.join(may)} )" if may else ""
        if must:
            args = ' ", " '.join(must) + (f' ( ", " {optional} )*' if may else "")
        else:
            args = f'( {optional} ( ", " {optional} )* )?' if may else ""
        return f"{literal(tool.name + '(')} {args} {literal(')')}"

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        more = f' ("," x-ws {call})*' if parallel else ""
        return rules.add("x-calls", f'{literal(START + "[")} {call}{more} {literal("]" + END)}')

    def preamble(self) -> list:
        return [START, "["]

    def triggers(self, names: list[str]) -> tuple[str, ...]:
        names = "|".join(prefix_regex([name]) for name in names if name)
        return (f"({regex_escape(START + '[')}(?:{names}))$",)


LFM2 = Lfm2()
