"""GBNF building blocks: literals, trigger regexes, JSON-Schema rules gathered from converter runs.

Strategy: each JSON Schema goes through llama-cpp-python's own JSON-Schema → GBNF converter
(`SchemaConverter`, one per schema so a failure cannot leave half a rule behind; ours adds what it
lacks: integer `minimum`/`maximum` and JSON's own string characters); `Rules` gathers the rules of
several runs into one grammar. Trigger regexes are written so that llama.cpp's std::regex and
Python's `re` read them alike; `WS_SET` is both a GBNF rule and such a regex, so the whitespace a
trigger matches is the whitespace the grammar allows.

Does not: know any tool-call format (engine/calls/ builds their rules from these) or decide when
a request gets a grammar (grammar.py).
"""
from __future__ import annotations

import copy
import logging
import math

from llama_cpp.llama_grammar import PRIMITIVE_RULES, RESERVED_NAMES, SchemaConverter

from ..core import Tool

log = logging.getLogger("unsloth_min.engine")

# Whitespace the grammar allows between call tokens, bounded so a weak model cannot loop on it;
# the trigger regexes use the very same set, so what they match the grammar accepts.
WS_SET = "[ \\t\\n]{0,4}"  # read alike as a GBNF rule and as a regex
GAP = object()  # a placeholder for WS_SET in a list of grammar parts
REGEX_SPECIAL = set("\\^$.|?*+()[]{}")  # std::regex ECMAScript
# JSON string characters. llama-cpp-python's converter allows raw control characters (`[^"\\]`),
# so a forced `{"code": "…"}` could hold a raw newline that no JSON parser accepts; this is
# llama.cpp's own (current) rule.
JSON_CHAR = ('[^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | '
             '"u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])')


def literal(text: str) -> str:
    """A GBNF string literal."""
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def regex_escape(text: str) -> str:
    return "".join("\\" + c if c in REGEX_SPECIAL else "\\n" if c == "\n" else c for c in text)


def prefix_regex(parts: list) -> str:
    """A regex for any prefix of the text `parts` spell that includes all of parts[0]."""
    atoms = [WS_SET if p is GAP else regex_escape(c) for p in parts[1:] for c in ([p] if p is GAP else p)]
    rest = ""
    for atom in reversed(atoms):  # a(?:b(?:c)?)?
        rest = atom + (f"(?:{rest})?" if rest else "")
    return regex_escape(parts[0]) + (f"(?:{rest})?" if rest else "")


def text_until(rules: "Rules", marker: str, name: str) -> str:
    """Raw text that never contains `marker`: a matcher for it (Knuth-Morris-Pratt), one rule per
    state (`{name}K`: the text so far ends in the marker's first K characters, and no earlier
    state fits better); any state may end, none may complete the marker. The start rule's name."""
    chars = sorted(set(marker))
    fail = [0] * (len(marker) + 1)  # the longest proper border of marker[:k]
    for k in range(2, len(marker) + 1):
        b = fail[k - 1]
        while b and marker[b] != marker[k - 1]:
            b = fail[b]
        fail[k] = b + 1 if marker[b] == marker[k - 1] else 0

    def step(k: int, c: str) -> int:
        while k and marker[k] != c:
            k = fail[k]
        return k + 1 if marker[k] == c else 0

    other = "[^" + "".join("\\" + c if c in "]\\^-" else c for c in chars) + "]"
    for k in range(len(marker)):
        alts = [f"{literal(c)} {name}{step(k, c)}" for c in chars if step(k, c) < len(marker)]
        rules.add(f"{name}{k}", "( " + " | ".join(alts + [f"{other} {name}0"]) + " )?")
    return f"{name}0"


# ---- schemas -------------------------------------------------------------------------------------
INT_DIGITS = 16  # the converter's own cap on an integer's digits
INT_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def digit_runs(a: int, b: int) -> list[str]:
    """GBNF sequences that together match exactly the decimal numbers a..b (0 <= a <= b)."""
    if a > b:
        return []
    sa, sb = str(a), str(b)
    if len(sa) < len(sb):  # one digit count at a time
        top = 10 ** len(sa) - 1
        return digit_runs(a, top) + digit_runs(top + 1, b)
    i = next((k for k in range(len(sa)) if sa[k] != sb[k]), len(sa))
    if i == len(sa):
        return [f'"{sa}"']
    head, rest = (f'"{sa[:i]}" ' if i else ""), len(sa) - i - 1
    span = f"[{sa[i]}-{sb[i]}]" if sa[i] != sb[i] else f'"{sa[i]}"'
    if sa[i + 1:] == "0" * rest and sb[i + 1:] == "9" * rest:  # every tail: one class run
        return [head + span + (f" [0-9]{{{rest}}}" if rest else "")]
    out = digit_runs(a, int(sa[:i + 1] + "9" * rest))  # the low digit with its tails up to 9…9
    if int(sa[i]) + 1 <= int(sb[i]) - 1:  # the digits between with any tail
        mid = f"[{int(sa[i]) + 1}-{int(sb[i]) - 1}]"
        out.append(head + mid + f" [0-9]{{{rest}}}")
    return out + digit_runs(int(sb[:i + 1] + "0" * rest), b)  # the high digit, tails from 0…0


def integer_range(schema: dict) -> str | None:
    """A GBNF expression for the integers a schema's bounds allow (None: no bounds, or none fit)."""
    if not any(k in schema for k in INT_BOUNDS):
        return None
    big = 10 ** INT_DIGITS - 1
    lo, hi = -big, big
    def bound(key: str):
        value = schema.get(key)  # (draft 4's boolean exclusive* flags are not bounds)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return value if ok else None

    if (v := bound("minimum")) is not None:
        lo = max(lo, math.ceil(v))
    if (v := bound("exclusiveMinimum")) is not None:
        lo = max(lo, math.floor(v) + 1)
    if (v := bound("maximum")) is not None:
        hi = min(hi, math.floor(v))
    if (v := bound("exclusiveMaximum")) is not None:
        hi = min(hi, math.ceil(v) - 1)
    if lo > hi:
        return None
    runs = []
    if lo < 0:  # the negative part, by magnitude
        runs += [f'"-" {r}' for r in digit_runs(max(1, -min(hi, -1)), -lo)]
    if hi >= 0:
        runs += digit_runs(max(lo, 0), hi)
    return "(" + " | ".join(runs) + ")"


# keywords that describe a value without constraining it: a schema of only these allows any value
ANNOTATIONS = frozenset({"description", "title", "default", "examples", "$comment", "deprecated",
                         "readOnly", "writeOnly"})


class Converter(SchemaConverter):
    """llama-cpp-python's converter, with integer bounds (it reads an integer's type only) and
    typeless schemas (Claude Code's `{"description": …}`: any value; it refuses those)."""

    def visit(self, schema, name):
        if isinstance(schema, dict) and schema and not set(schema) - ANNOTATIONS:
            rule = name + "-" if name in RESERVED_NAMES else name or "root"
            return self._add_rule(rule, self._add_primitive("value", PRIMITIVE_RULES["value"]))
        plain = not any(k in schema for k in ("$ref", "oneOf", "anyOf", "const", "enum"))
        if plain and schema.get("type") == "integer":
            bounded = integer_range(schema)
            if bounded is not None:
                rule = name + "-" if name in RESERVED_NAMES else name or "root"
                return self._add_rule(rule, f"{bounded} space")
        return super().visit(schema, name)


class Rules:
    """GBNF rules gathered from several converter runs (their shared primitives are identical)."""

    def __init__(self):
        self.rules: dict[str, str] = {}

    def add(self, name: str, rule: str) -> str:
        self.rules[name] = rule
        return name

    def schema(self, schema: dict, name: str) -> str | None:
        conv = Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        try:
            schema = conv.resolve_refs(copy.deepcopy(schema), "request")
            root = conv.visit(schema, name)
        except Exception as e:  # the converter asserts/raises on what it does not support
            log.warning("cannot build a grammar for the JSON schema %r: %s", name, e)
            return None
        if not self.merge(conv._rules):
            log.warning("grammar rule clash for schema %r", name)
            return None
        return root

    def any_object(self) -> str:
        conv = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        name = conv._add_primitive("object", PRIMITIVE_RULES["object"])
        self.merge(conv._rules)
        return name

    def merge(self, rules: dict[str, str]) -> bool:
        rules = {k: JSON_CHAR if k == "char" else v for k, v in rules.items()}
        if any(self.rules.get(k, v) != v for k, v in rules.items()):
            return False
        self.rules.update(rules)
        return True

    def text(self) -> str:
        return "\n".join(f"{k} ::= {v}" for k, v in sorted(self.rules.items()))


def tool_schema(tool: Tool) -> dict:
    """A tool's parameters; none or `{}` (which would allow any JSON value) mean any object."""
    return tool.parameters or {"type": "object"}
