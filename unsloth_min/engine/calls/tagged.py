"""Calls whose arguments are tagged values, one tag pair per parameter: the shared reader.

Strategy: GLM's `NAME<arg_key>k</arg_key><arg_value>v</arg_value>`, MiniMax's `<invoke name="NAME">
<parameter name="k">v</parameter>`, DeepSeek's DSML, Kimi K3's `<|open|>argument key="k" …`,
MiniCPM5's `<param name="k">` and Seed-OSS's `<parameter=k>` differ only in their tags, so one
`TaggedReader` reads them all from a `Tags` description: the call's head (its name), a
parameter's opening tag (its key and, where the model declares one, its kind), what ends a value
and what ends the call. Each parameter is read whole — its value is raw text up to the first end
tag — and typed as Qwen3-Coder's are (xmlvalues.py: by the tool's schema, or by the kind the model
declared: DSML's `string="false"` means JSON), becoming the next piece of a JSON object, so a
first call streams parameter by parameter. A value in `<![CDATA[…]]>` is the text inside, as it
stands. Anything else inside the call is skipped; a cut-off call closes its object with the cut
parameter's text so far.

Does not: know where calls start or how they are grouped (each format's `begin`/`after`), or
write grammars (the formats do, with `tagged_call`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ...core import Tool
from ..gbnf import Rules, literal, text_until, tool_schema
from ..textstream import partial_suffix
from .base import WS, State, Step
from .xmlvalues import property_schema, schema_types, schema_values, xml_value

HEAD_LIMIT = 320  # characters a call's head may take before it is no head
CDATA, CDATA_END = "<![CDATA[", "]]>"  # a value that may hold anything (MiniCPM5's)


@dataclass(frozen=True)
class Tags:
    head: re.Pattern          # matches the call's head at the reader's start: group "name" (, "id")
    head_ends: tuple          # the head can be judged once one of these is in the text
    param: re.Pattern         # a parameter's opening tag: group "key" (, "kind")
    param_start: str          # the literal start of that tag
    value_end: str            # what ends a value
    call_end: tuple           # what ends the call (consumed; the first is the one grammars write)
    kinds: dict = field(default_factory=dict)  # a declared kind → the schema its value is read as
    trim: bool = True         # one newline either side of a value is the template's, not the value's


class ObjectPieces:
    """A call's arguments built one parameter at a time: each becomes the next piece of a JSON
    object, given out once whole (a first call streams them); `_close` ends the object."""
    text = ""  # (never given back once the head is read: it is a call)
    id: str | None = None

    def __init__(self):
        self.name: str | None = None
        self.done: list[str] = []  # the JSON pieces of the parameters read
        self.new: list[str] = []   # ...and those not asked for yet

    def _add(self, key: str, value) -> None:
        piece = ("{" if not self.done else ", ") + json.dumps(key, ensure_ascii=False) + ": " \
            + json.dumps(value, ensure_ascii=False)
        self.done.append(piece)
        self.new.append(piece)

    def pieces(self) -> list[str]:
        out, self.new = self.new, []
        return out

    def _close(self) -> tuple[str, str]:
        tail = "}" if self.done else "{}"
        self.new.append(tail)
        return self.name, "".join(self.done) + tail


class TaggedReader(ObjectPieces):
    """One call, fed the text after its opening marker."""

    def __init__(self, tags: Tags, schemas: dict):
        super().__init__()
        self.tags, self.schemas = tags, schemas
        self.key: str | None = None   # the parameter whose value is being read
        self.kind: str | None = None  # ...and the kind the model declared for it
        self.scanned = 0              # how far that value was searched for its end tag

    def feed(self, buf: str) -> Step:
        s = buf
        if self.name is None:
            if not any(e in buf for e in self.tags.head_ends) and len(buf) < HEAD_LIMIT:
                return Step(0, State.CALL)
            m = self.tags.head.match(buf)
            if m is None:  # not a call: the marker was text
                return Step(0, State.TEXT)
            self.name, s = m.group("name"), buf[m.end():]
            self.id = m.groupdict().get("id")
        then = None
        while then is None:
            s, then = self._value(s) if self.key is not None else self._tag(s)
        return Step(len(buf) - len(s), then)

    def _tag(self, s: str) -> tuple[str, State | None]:
        """Between parameters: an opening tag, the call's end, or something skipped."""
        tags = self.tags
        s = s.lstrip(WS)
        m = tags.param.match(s)
        if m:
            self.key, self.kind, self.scanned = m.group("key"), m.groupdict().get("kind"), 0
            return s[m.end():], None
        end = next((e for e in tags.call_end if s.startswith(e)), None)
        if end is not None:
            return s[len(end):], State.AFTER
        if not s or any(t.startswith(s) for t in (tags.param_start,) + tags.call_end):
            return s, State.CALL
        if s.startswith(tags.param_start) and len(s) < HEAD_LIMIT:
            return s, State.CALL  # (the tag is not whole yet)
        nxt = s.find("<", 1)  # anything else inside the call is skipped, up to the next tag
        return (s[nxt:], None) if nxt != -1 else ("", State.CALL)

    def _value(self, s: str) -> tuple[str, State | None]:
        if s.startswith(CDATA) or (CDATA.startswith(s) and s):  # `<![CDATA[…]]>`: ends at its `]]>`
            end = s.find(CDATA_END + self.tags.value_end, len(CDATA))
            if end == -1:
                return s, State.CALL
            self._param(s[len(CDATA):end], cdata=True)
            return s[end + len(CDATA_END) + len(self.tags.value_end):], None
        end = s.find(self.tags.value_end, self.scanned)
        if end == -1:
            self.scanned = max(0, len(s) - len(self.tags.value_end) + 1)
            return s, State.CALL
        self._param(s[:end])
        return s[end + len(self.tags.value_end):], None

    def _param(self, raw: str, cdata: bool = False) -> None:
        schema = self.tags.kinds.get(self.kind) if self.kind is not None else None
        if schema is None:
            schema = property_schema(self.schemas.get(self.name), self.key)
        self._add(self.key, raw if cdata else xml_value(raw, schema, self.tags.trim))
        self.key = None

    def finish(self, complete: bool, rest: str) -> tuple[str, str] | None:
        if self.name is None:
            return None
        if not complete and self.key is not None:  # the cut parameter keeps what it had
            self._param(rest[:len(rest) - partial_suffix(rest, self.tags.value_end)])
        return self._close()


# ---- the forced grammar --------------------------------------------------------------------------
def tagged_value(rules: Rules, schema, name: str, value_end: str) -> str | None:
    """A value as the reader reads it back: an enum's literals, raw text without `value_end` for
    a string (or untyped) parameter, the converter's JSON for the other types."""
    values = schema_values(schema)
    if values:
        return "(" + " | ".join(literal(v if isinstance(v, str) else json.dumps(v)) for v in values) + ")"
    kinds = schema_types(schema)
    if not kinds or "string" in kinds:
        return text_until(rules, value_end, f"{name}-t")
    return rules.schema(schema, name)


def tagged_call(rules: Rules, tool: Tool, i: int, head: str, param, value_end: str, end: str) -> str:
    """One call of `tool`: `head`, each property as `param` (its `{key}` filled in; a tuple: its
    parts, whitespace allowed between them; a function: of the key), the value and `value_end`,
    the required ones present, then `end`, whitespace allowed between tags. A schema this cannot
    spell (not an object's properties) gets no parameters: the arguments are what the model writes."""
    schema = tool_schema(tool)
    props = schema.get("properties") if isinstance(schema, dict) else None
    required = (schema.get("required") or []) if isinstance(schema, dict) else []
    parts = [literal(head)]
    for j, (key, sub) in enumerate(props.items() if isinstance(props, dict) else []):
        value = tagged_value(rules, sub, f"tool{i}-p{j}", value_end)
        if value is None:
            value = text_until(rules, value_end, f"tool{i}-p{j}-t")
        spelled = param(key) if callable(param) else param
        tag = " x-ws ".join(literal(p.format(key=key)) for p in ((spelled,) if isinstance(spelled, str) else spelled))
        one = f"{tag} {value} {literal(value_end)}"
        parts.append(one if key in required else f"( {one} )?")
    return " x-ws ".join(parts + [literal(end)])
