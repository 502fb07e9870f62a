"""Qwen3-Coder XML tool calls: a parameter's raw text → the JSON value its schema's type asks for.

Strategy: as llama.cpp's and vLLM's Qwen3-Coder parsers do, a string is the raw text less one
leading and one trailing newline; a number, boolean, null, object or array is parsed from that
text (objects and arrays also as Python literals, which a template's `|string` writes); text that
parses as none of the types the schema allows stays a string.

Does not: find parameters in the model's text or constrain them (qwen3_xml.py does both).
"""
from __future__ import annotations

import ast
import json
import math

from .base import WS

LITERAL_LIMIT = 65536  # Python-literal fallback for object/array values: only for short text


def json_type(value) -> str:
    for kind, types in (("boolean", bool), ("integer", int), ("number", float), ("string", str),
                        ("array", list), ("object", dict)):
        if isinstance(value, types):
            return kind
    return "null"


def schema_values(schema) -> list | None:
    """The values an `enum` or `const` allows (None: the schema lists none)."""
    values = schema.get("enum", [schema["const"]] if "const" in schema else None) \
        if isinstance(schema, dict) else None
    return values if isinstance(values, list) and values else None


def schema_types(schema) -> set:
    """The JSON types a parameter's schema allows; empty: any (or it does not say)."""
    if not isinstance(schema, dict):
        return set()
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    values = schema_values(schema)
    if values:
        return {json_type(v) for v in values}
    out: set = set()
    for sub in (schema.get("anyOf") or []) + (schema.get("oneOf") or []):
        kinds = schema_types(sub)
        if not kinds:
            return set()
        out |= kinds
    return out


def _number(text: str, integer: bool):
    try:
        value = json.loads(text)
    except ValueError:  # what Python reads (`007`, `+5`, `.5`), as the reference parsers do
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if integer and isinstance(value, float):
        return int(value) if value.is_integer() else None
    return value


def _container(text: str, kind: type):
    """JSON text, or a Python literal (`{'a': True}`) as the template's `|string` writes one."""
    try:
        value = json.loads(text)
    except ValueError:
        if len(text) > LITERAL_LIMIT or not text.startswith(("{", "[")):
            return None
        try:
            value = ast.literal_eval(text)
            json.dumps(value)
        except Exception:  # not a literal, or one JSON cannot hold (a set, bytes, …)
            return None
    return value if isinstance(value, kind) else None


PARSERS = (  # tried in this order for the types a schema allows; None: does not parse as that
    ("null", lambda t: () if t in ("null", "None") else None),
    ("boolean", lambda t: (t.lower() == "true",) if t.lower() in ("true", "false") else None),
    ("integer", lambda t: (v,) if (v := _number(t, True)) is not None else None),
    ("number", lambda t: (v,) if (v := _number(t, False)) is not None else None),
    ("object", lambda t: (v,) if (v := _container(t, dict)) is not None else None),
    ("array", lambda t: (v,) if (v := _container(t, list)) is not None else None),
)


def xml_value(raw: str, schema, trim: bool = True) -> object:
    """A parameter's value as llama.cpp's and vLLM's Qwen3-Coder parsers read it: a string is the
    raw text less one leading and one trailing newline; a number, boolean, null, object or array
    is parsed from that text (objects/arrays also as Python literals); what does not parse as any
    type the schema allows stays a string. No schema (an unknown key): any type that parses."""
    text = raw[1:] if trim and raw.startswith("\n") else raw
    text = text[:-1] if trim and text.endswith("\n") else text
    kinds = schema_types(schema)
    if kinds == {"string"}:
        return text
    bare = text.strip(WS)
    for kind, parse in PARSERS:
        if not kinds or kind in kinds:
            got = parse(bare)
            if got is not None:
                return got[0] if got else None
    return text


def property_schema(parameters, key: str):
    props = parameters.get("properties") if isinstance(parameters, dict) else None
    return props.get(key) if isinstance(props, dict) else None
