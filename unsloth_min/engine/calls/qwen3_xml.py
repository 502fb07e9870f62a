"""Qwen3-Coder's XML calls: `<tool_call><function=NAME><parameter=KEY>\nvalue\n</parameter>…</function></tool_call>`.

Strategy: Hermes's markers with XML inside. After `<function=`, `XmlReader` reads the name up to
`>` (a name that is no name gives the marker back as text), then the body: each parameter is
read whole — its value is raw text up to the first `</parameter>` — and converted by the type
its tool's JSON schema gives it (xmlvalues.py), becoming the next piece of a JSON object (a
first call streams them); `</function>` (or `</tool_call>`) ends the call, anything else inside
it is skipped. A cut-off call closes its object, with the cut parameter's text so far. A Hermes
JSON object inside the markers is read too (lenient).
The forced grammar (`xml_call`): `<function=f>\n`, then the schema's properties in its order as
`<parameter=k>\nVALUE\n</parameter>\n` (the required ones present), then `</function>`; a VALUE
is an enum's literals, raw text that cannot contain `</parameter>` for a string (or untyped)
property, and the converter's JSON for the other types. A tool whose schema this cannot spell
(not an object, a key no tag can hold, a property the converter fails on) gets free-form
parameters and a warning; one without `properties` gets free-form parameters. The lazy trigger
waits for `<tool_call>` + `<function=` and a prefix of an allowed name, so that a `<tool_call>`
mentioned in prose stays prose.

Does not: type values (xmlvalues.py), or watch for `<tool_call>` in the text (output.py).
"""
from __future__ import annotations

import re

from ...core import Tool
from ..gbnf import GAP, WS_SET, Rules, literal, log, prefix_regex, regex_escape, text_until, tool_schema
from ..textstream import partial_suffix
from .base import WS, State, Step
from .hermes import Hermes
from .tagged import ObjectPieces, tagged_value
from .xmlvalues import property_schema, schema_types, schema_values, xml_value

FUNC, FUNC_END = "<function=", "</function>"
PARAM, PARAM_END = "<parameter=", "</parameter>"
XML_NAME = re.compile(r"[^\s<>]{0,256}")  # a function or parameter name (an over-long one is none)
TAG_END, VALUE_END = ">\n", "\n" + PARAM_END + "\n"  # `<function=f>⏎`, `⏎</parameter>⏎`


class XmlReader(ObjectPieces):
    """One XML call, fed the text after its `<function=`."""

    def __init__(self, close: str, schemas: dict):
        super().__init__()
        self.close, self.schemas = close, schemas
        self.key: str | None = None  # the parameter whose value is being read
        self.scanned = 0             # how far that value was searched for its end tag

    def feed(self, buf: str) -> Step:
        s = buf
        if self.name is None:
            end = buf.find(">")
            name = buf if end == -1 else buf[:end]
            if not XML_NAME.fullmatch(name) or end == 0:  # not a name: the marker was text
                return Step(0, State.TEXT)
            if end == -1:
                return Step(0, State.CALL)
            self.name, s = name, buf[end + 1:]
        then = None
        while then is None:
            s, then = self._value(s) if self.key is not None else self._tag(s)
        return Step(len(buf) - len(s), then)

    def _tag(self, s: str) -> tuple[str, State | None]:
        """Between parameters: a `<parameter=KEY>`, the call's end, or something skipped.
        The text left, and CALL (more is needed), AFTER (the call ended) or None (go on)."""
        s = s.lstrip(WS)
        if s.startswith(PARAM):
            end = s.find(">")
            key = s[len(PARAM):] if end == -1 else s[len(PARAM):end]
            if XML_NAME.fullmatch(key):
                if end == -1:
                    return s, State.CALL
                self.key, self.scanned = key, 0
                return s[end + 1:], None
        elif s.startswith(FUNC_END) or s.startswith(self.close):  # (`</tool_call>`: lenient)
            return (s[len(FUNC_END):] if s.startswith(FUNC_END) else s), State.AFTER
        elif not s or any(m.startswith(s) for m in (PARAM, FUNC_END, self.close)):
            return s, State.CALL
        nxt = s.find("<", 1)  # anything else inside the call is skipped, up to the next tag
        return (s[nxt:], None) if nxt != -1 else ("", State.CALL)

    def _value(self, s: str) -> tuple[str, State | None]:
        end = s.find(PARAM_END, self.scanned)
        if end == -1:
            self.scanned = max(0, len(s) - len(PARAM_END) + 1)
            return s, State.CALL
        self._param(s[:end])
        return s[end + len(PARAM_END):], None

    def _param(self, raw: str) -> None:
        self._add(self.key, xml_value(raw, property_schema(self.schemas.get(self.name), self.key)))
        self.key = None

    def finish(self, complete: bool, rest: str) -> tuple[str, str] | None:
        if not complete and self.key is not None:  # the cut parameter keeps what it had
            self._param(rest[:len(rest) - partial_suffix(rest, PARAM_END)])
        return self._close()


class Qwen3Xml(Hermes):
    name = "qwen3_xml"
    more_opens = (FUNC,)
    calls_end_thinking = True
    signature = ("<tool_call>", "<function=")

    def detect(self, source: str) -> bool:  # (not GLM-style templates that write no newlines)
        return super().detect(source) and "'<tool_call><function=' ~ tool_call.name ~ '>'" not in source

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if marker == FUNC:  # (a call without `<tool_call>`, as Qwen3-Coder sometimes writes)
            return Step(0, State.CALL, XmlReader(self.close, schemas))
        if s.startswith(FUNC):
            return Step(len(FUNC), State.CALL, XmlReader(self.close, schemas))
        if FUNC.startswith(s):
            return None
        return super().begin(s, listed, schemas, marker)

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        return xml_call(rules, tool, i)

    def preamble(self) -> list:
        return [self.open, GAP, FUNC]

    def triggers(self, names: list[str]) -> tuple[str, ...]:
        names = "|".join(prefix_regex(["", name + ">\n"]) for name in names)
        return (f"({regex_escape(self.open)}{WS_SET}{regex_escape(FUNC)}(?:{names}))$",)


QWEN3_XML = Qwen3Xml()


# ---- the forced grammar --------------------------------------------------------------------------
def xml_text(rules: Rules) -> str:
    """Raw text that never contains `</parameter>`."""
    return text_until(rules, PARAM_END, "xml-t")


def xml_value_rule(rules: Rules, schema, name: str) -> str | None:
    """A value as the reader reads it back (tagged.py's rule, the raw text ending at `</parameter>`)."""
    if not schema_values(schema) and (not schema_types(schema) or "string" in schema_types(schema)):
        return xml_text(rules)  # (one shared rule for every raw text)
    return tagged_value(rules, schema, name, PARAM_END)


def xml_params(rules: Rules, schema, i: int) -> str | None:
    """The parameters of tool `i` in schema order; None: the schema cannot be spelled."""
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        return None
    props, required = schema.get("properties"), schema.get("required") or []
    if not isinstance(props, dict):
        return xml_free(rules) if props is None else None
    parts = []
    for j, (key, sub) in enumerate(props.items()):
        value = xml_value_rule(rules, sub, f"tool{i}-p{j}") if XML_NAME.fullmatch(key) and key else None
        if value is None:
            return None
        one = f"{literal(PARAM + key + TAG_END)} {value} {literal(VALUE_END)}"
        parts.append(one if key in required else f"( {one} )?")
    return " ".join(parts) or '""'


def xml_free(rules: Rules) -> str:
    text = xml_text(rules)
    return rules.add("xml-free", f'( {literal(PARAM)} [^<> \\t\\r\\n]{{1,128}} {literal(TAG_END)} {text} '
                                 f'{literal(VALUE_END)} )*')

def xml_call(rules: Rules, tool: Tool, i: int) -> str:
    params = xml_params(rules, tool_schema(tool), i)
    if params is None:
        log.warning("cannot build an XML call grammar for tool %r: its parameters are free-form", tool.name)
        params = xml_free(rules)
    return f"{literal(FUNC + tool.name + TAG_END)} {params} {literal(FUNC_END)}"

