"""MiniMax M3: namespaced XML calls, `]<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name="NAME">
]<]minimax[>[<key>value]<]minimax[>[</key>…]<]minimax[>[</invoke>\n]<]minimax[>[</tool_call>`.

Strategy: every tag is preceded by the namespace token `]<]minimax[>[`; an argument is an element
named by its key, and objects and arrays nest (`<key><sub>…</sub></key>`, arrays as `<item>`
elements), as the template's `to_xml` writes them. A `TreeReader` reads each invoke whole, up to
its closing tag, then turns the elements into JSON by the tool's schema: a parameter that may be
a string keeps its inner text as written (tags and all), an object's children are its keys, an
array's `<item>`s its elements, a scalar is typed as Qwen3-Coder values are (xmlvalues.py).
Thinking is `<mm:think>…</mm:think>`; `thinking_mode` reaches the template from enable_thinking.

Does not: stream an invoke's parameters (each call comes whole), or read M2's format (minimax.py).
"""
from __future__ import annotations

import json
import re

from ...core import Tool
from ..gbnf import Rules, literal, text_until, tool_schema
from .base import State, Step, ThinkFormat, WholeReader
from .minimax import TaggedList
from .tagged import tagged_value
from .xmlvalues import property_schema, schema_types, xml_value

NS = "]<]minimax[>["
BLOCK, BLOCK_END, INVOKE, INVOKE_END = NS + "<tool_call>", NS + "</tool_call>", NS + "<invoke", NS + "</invoke>"
HEAD = re.compile(re.escape(INVOKE) + r'\s+name="(?P<name>[^"]{1,256})"\s*>')
TAG = re.compile(re.escape(NS) + r"<(/?)([^<>\s/]{1,256})>")
HEAD_LIMIT = 320


def branch(schema, kind: str):
    """The part of `schema` (itself, or one of its anyOf/oneOf options) that is of type `kind`."""
    if not isinstance(schema, dict):
        return None
    if kind in schema_types({k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}):
        return schema
    return next((b for o in (schema.get("anyOf") or []) + (schema.get("oneOf") or [])
                 if (b := branch(o, kind)) is not None), None)


def elements(body: str) -> list:
    """The elements of `body`: [(tag, inner text as written, children)], children alike."""
    stack: list = [("", 0, [])]
    for m in TAG.finditer(body):
        if not m.group(1):
            stack.append((m.group(2), m.end(), []))
        elif len(stack) > 1 and stack[-1][0] == m.group(2):
            tag, start, children = stack.pop()
            stack[-1][2].append((tag, body[start:m.start()], children))
    return stack[0][2]


def value_of(inner: str, children: list, schema):
    kinds = schema_types(schema)
    if not children:
        return xml_value(inner, schema)
    if "string" in kinds:  # (a string that holds tags: as written)
        return inner
    array = branch(schema, "array")
    if all(tag == "item" for tag, _, _ in children) and (array is not None or not kinds):
        items = array.get("items") if isinstance(array, dict) else None
        return [value_of(i, c, items) for _, i, c in children]
    obj = branch(schema, "object") or {}
    return {tag: value_of(i, c, property_schema(obj, tag)) for tag, i, c in children}


class TreeReader(WholeReader):
    """One invoke, read whole (fed the text from its `<invoke`)."""

    def __init__(self, schemas: dict):
        super().__init__()
        self.schemas = schemas

    def feed(self, buf: str) -> Step:
        start = 0
        if self.name is None:
            m = HEAD.match(buf)
            if m is None:  # (not whole yet, while what came can still grow into a head)
                growing = buf.startswith(INVOKE) and ">" not in buf[len(INVOKE):] and len(buf) < HEAD_LIMIT
                return Step(0, State.CALL if INVOKE.startswith(buf) or growing else State.TEXT)
            self.name, start = m.group("name"), m.end()
        end = buf.find(INVOKE_END, start)
        if end == -1:
            return Step(start, State.CALL)
        schema = self.schemas.get(self.name)
        args = {tag: value_of(inner, children, property_schema(schema, tag)) for tag, inner, children in elements(buf[start:end])}
        self.args = json.dumps(args, ensure_ascii=False)
        return Step(end + len(INVOKE_END), State.AFTER)

class MiniMaxM3(TaggedList):
    name, open, close, item = "minimax_m3", BLOCK, BLOCK_END, INVOKE
    think = ThinkFormat("<mm:think>", "</mm:think>")
    signature = (NS, "<tool_call>", "<invoke name=")
    calls_end_thinking = True

    def context(self, req, thinking: bool) -> dict:
        return {"thinking_mode": "enabled" if thinking else "disabled"}

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        step = super().begin(s, listed, schemas, marker)
        return Step(0, State.CALL, TreeReader(schemas)) if step and step.reader else step

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        schema = tool_schema(tool)
        props = schema.get("properties") if isinstance(schema, dict) else None
        parts = [literal(f'{INVOKE} name="{tool.name}">')]
        for j, (key, sub) in enumerate(props.items() if isinstance(props, dict) else []):
            end = NS + "</" + key + ">"  # (objects and arrays nest as free-form elements)
            nested = schema_types(sub) & {"object", "array"}
            value = None if nested else tagged_value(rules, sub, f"tool{i}-p{j}", end)
            one = f"{literal(NS + '<' + key + '>')} {value or text_until(rules, end, f'tool{i}-p{j}-t')} {literal(end)}"
            parts.append(one if key in (schema.get("required") or []) else f"( {one} )?")
        return " ".join(parts + [literal(INVOKE_END)])


MINIMAX_M3 = MiniMaxM3()
