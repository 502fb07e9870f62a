"""Gemma 4: `<|tool_call>call:NAME{key:value,…}<tool_call|>`, thinking in `<|channel>thought…<channel|>`.

Strategy: the arguments are Gemma's own object notation — bare keys, strings between `<|"|>`
delimiters, JSON's numbers, `true`/`false`/`null`, lists and nested objects — so a `GemmaReader`
reads the call's name up to `{`, scans to the object's closing brace (strings skipped), and turns
the notation into JSON (strings quoted, keys quoted, the rest as written; JSON strings are taken
too). The call comes whole at its end. Thinking is a `thought` channel: the model opens it
itself (the prompt closes an empty one when thinking is off); a stray or empty channel later in
the answer, and a lone `<channel|>`, are dropped (`frames`).
The forced grammar writes strings in `<|"|>` delimiters and other values as JSON.

Does not: read `<|tool_response>` blocks (the model does not write them).
"""
from __future__ import annotations

import json
import re

from ...core import Tool
from ..gbnf import Rules, literal, text_until, tool_schema
from .base import CallFormat, State, Step, ThinkFormat, WholeReader

CALL, CALL_END, QUOTE = "<|tool_call>", "<tool_call|>", '<|"|>'
CHANNEL, CHANNEL_END = "<|channel>", "<channel|>"
HEAD = re.compile(r"call:(?P<name>[^\s{<>]{1,256})\{")
KEY = re.compile(r"[A-Za-z_][\w.\-]*(?=\s*:)")
LIMIT = 1 << 20


def gemma_json(text: str) -> str:
    """Gemma's object notation as JSON text (ValueError when it is neither)."""
    out, i = [], 0
    while i < len(text):
        if text.startswith(QUOTE, i):
            end = text.find(QUOTE, i + len(QUOTE))
            if end == -1:
                raise ValueError("an unclosed string")
            out.append(json.dumps(text[i + len(QUOTE):end], ensure_ascii=False))
            i = end + len(QUOTE)
        elif text[i] == '"':  # a JSON string, as it stands
            m = re.compile(r'"(?:[^"\\]|\\.)*"').match(text, i)
            if m is None:
                raise ValueError("an unclosed string")
            out.append(m.group(0))
            i = m.end()
        elif (m := KEY.match(text, i)) and text[i - 1:i] in ("{", ",", " ", "") and m.group(0) not in ("true", "false", "null"):
            out.append(json.dumps(m.group(0)))
            i = m.end()
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class GemmaReader(WholeReader):
    """One call, fed the text after `<|tool_call>`."""

    def feed(self, buf: str) -> Step:
        m = HEAD.match(buf)
        if m is None:
            growing = "{" not in buf and re.fullmatch(r"(?:c(?:a(?:l(?:l(?::[^\s{<>]*)?)?)?)?)?", buf)
            return Step(0, State.CALL if growing else State.TEXT)
        self.name = m.group("name")
        end = self._end(buf, m.end() - 1)
        if end == -1:
            return Step(0, State.CALL) if len(buf) < LIMIT else Step(0, State.TEXT)
        try:
            args = json.loads(gemma_json(buf[m.end() - 1:end]))
        except ValueError:
            return Step(0, State.TEXT)
        self.args = json.dumps(args, ensure_ascii=False)
        return Step(end, State.AFTER)

    @staticmethod
    def _end(buf: str, start: int) -> int:
        """Just past the brace that closes the one at `start` (-1: not yet)."""
        depth, i = 0, start
        while i < len(buf):
            if buf.startswith(QUOTE, i):
                end = buf.find(QUOTE, i + len(QUOTE))
                if end == -1:
                    return -1
                i = end + len(QUOTE)
                continue
            if buf[i] in "{[":
                depth += 1
            elif buf[i] in "}]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return -1

class Gemma4(CallFormat):
    name, open, close = "gemma4", CALL, CALL_END
    extra_markers = (QUOTE,)
    frames = (CHANNEL, CHANNEL_END)
    think = ThinkFormat(CHANNEL + "thought", CHANNEL_END)
    signature = ("'<|tool_call>call:'",)

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if marker == CHANNEL_END:
            return Step(0, State.TEXT, silent=True)
        if marker == CHANNEL:  # a thought channel later in the answer (opened more than once, maybe)
            rest = s
            while rest.startswith(CHANNEL):
                rest = rest[len(CHANNEL):]
            if "thought".startswith(rest):
                return None
            take = len(s) - len(rest) + (len("thought") if rest.startswith("thought") else 0)
            return Step(take, State.THINK, silent=True)
        return Step(0, State.CALL, GemmaReader())

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        schema = tool_schema(tool)
        props = schema.get("properties") if isinstance(schema, dict) else None
        required = (schema.get("required") or []) if isinstance(schema, dict) else []
        parts = []
        for j, (key, sub) in enumerate(props.items() if isinstance(props, dict) else []):
            if isinstance(sub, dict) and sub.get("type") == "string" and "enum" not in sub:
                value = f"{literal(QUOTE)} {text_until(rules, QUOTE, f'tool{i}-p{j}-t')} {literal(QUOTE)}"
            else:
                value = rules.schema(sub, f"tool{i}-p{j}") or rules.schema({}, f"tool{i}-p{j}-any")
            parts.append((key in required, f"{literal(key + ':')} {value}"))
        must = [p for r, p in parts if r]
        may = [p for r, p in parts if not r]
        body = ' "," '.join(must) + "".join(f' ( "," {p} )?' for p in may) if must else \
            (f"( ( {' | '.join(may)} ) ( \",\" ( {' | '.join(may)} ) )* )?" if may else "")
        return f"{literal('call:' + tool.name + '{')} {body} {literal('}')}"

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        one = rules.add("x-one", f"{literal(CALL)} {call} {literal(CALL_END)}")
        return rules.add("x-calls", f"{one} (x-ws {one})*" if parallel else one)

    def preamble(self) -> list:
        return [CALL, "call:"]


GEMMA4 = Gemma4()
