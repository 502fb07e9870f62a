"""Calls written as JSON objects, `{"name": "f", "arguments": {…}}`: the reader and the shared base.

Strategy: `JsonReader` scans one object as it arrives — a string/depth scanner finds where the
object ends and where its top-level members end. Once `{"name": "…", "arguments":` has arrived
(within `HEAD_LIMIT` characters) the name is known and the arguments are certain up to the end of
the text so far, less trailing whitespace, until the member after them begins; so a first call
can stream its arguments as JSON text fragments. An object whose name does not come first is
read whole at its end. A reader given the name up front (Mistral v11's `NAME[ARGS]{…}`) reads
the object as the arguments. `JsonCalls` is the base of the formats that write such objects
(Hermes, Llama 3, Mistral): a `{` after the marker begins a call; its grammar rule is the object
with the tool's name and schema.

Does not: raise on malformed or cut-off JSON (a cut-off call keeps the arguments it had), or
check the arguments against the schema (the grammar does, when asked).
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

from ...core import Tool
from ..gbnf import GAP, Rules, literal, tool_schema
from .base import WS, CallFormat, State, Step

HEAD_LIMIT = 512  # chars of a call object within which a streamable head must appear


@dataclass(frozen=True)
class Keys:
    """The keys of a family's call objects. `name` None: the object's one key is the name and
    its value the arguments (`{"f": {…}}`); `id`: the model writes the call's id there."""
    name: str | None = "name"
    args: tuple[str, ...] = ("arguments", "parameters")
    id: str | None = None

    @functools.cached_property
    def head(self) -> re.Pattern:
        """A call whose name comes first can stream its arguments: where they start."""
        args = "|".join(map(re.escape, self.args))
        return re.compile(r'\{\s*"' + re.escape(self.name or "") + r'"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:'
                          + args + r')"\s*:\s*')


KEYS = Keys()
JSON_HEAD = ["{", GAP, '"name"', GAP, ":", GAP, '"']  # a call object's start, as grammar parts


class JsonReader:
    """One JSON call object (the text it is fed starts at its `{`)."""
    id: str | None = None  # the id the model wrote, once read

    def __init__(self, args_key: str = "arguments", name: str | None = None, keys: Keys = KEYS):
        self.args_key = args_key  # the arguments' key when the object is read whole
        self.keys = keys
        self.name = name          # given: the object is the arguments (Mistral v11)
        self.whole = name is not None
        self.lead = ""            # text before the object that belongs to the call (a named head)
        self.obj = ""             # the object so far
        self.stops: list[int] = []  # where top-level members end (`,` and the closing `}`)
        self.depth, self.in_str, self.esc = 0, False, False
        self.head = self.sent = 0 if self.whole else -1  # where the arguments start / given out up to

    @property
    def text(self) -> str:
        return self.lead + self.obj

    def feed(self, buf: str) -> Step:
        end = self._scan(buf)
        self.obj += buf if end == -1 else buf[:end]
        if self.head == -1 and len(self.obj) < HEAD_LIMIT and self.keys.name and not self.keys.id:
            self._find_head()  # (an id may come last: such a call is read whole)
        return Step(len(buf), State.CALL) if end == -1 else Step(end, State.AFTER)

    def _scan(self, chunk: str) -> int:
        """Advance the scanner over `chunk`: the index just past the object's end, or -1."""
        base, depth, in_str, esc = len(self.obj), self.depth, self.in_str, self.esc
        for i, c in enumerate(chunk):
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c == "{" or c == "[":
                depth += 1
            elif c == "}" or c == "]":
                if depth == 1:
                    self.stops.append(base + i)
                depth -= 1
                if depth == 0:
                    self.depth, self.in_str, self.esc = depth, in_str, esc
                    return i + 1
            elif c == "," and depth == 1:
                self.stops.append(base + i)
        self.depth, self.in_str, self.esc = depth, in_str, esc
        return -1

    def _find_head(self) -> None:
        m = self.keys.head.match(self.obj)
        if m is None or m.end() == len(self.obj):  # the arguments must have begun
            return
        try:
            self.name = json.loads('"' + m.group(1) + '"')
        except ValueError:
            return
        self.head = self.sent = m.end()

    def _args_end(self) -> int:
        if self.whole:
            return len(self.obj)
        return next((p for p in self.stops if p >= self.head), len(self.obj))

    def pieces(self) -> list[str]:
        if self.head == -1:
            return []
        piece = self.obj[self.sent:self._args_end()].rstrip(WS)
        self.sent += len(piece)
        return [piece] if piece else []

    def finish(self, complete: bool, rest: str) -> tuple[str, str] | None:
        if self.head != -1:
            return self.name, self.obj[self.head:self._args_end()].strip(WS)
        return self._whole_call() if complete else None

    def _whole_call(self) -> tuple[str, str] | None:
        """A finished object whose name did not come first: (name, arguments JSON) or None."""
        try:
            obj = json.loads(self.obj)
        except ValueError:
            return None
        keys = self.keys
        if not isinstance(obj, dict):
            return None
        if keys.name is None:  # `{"NAME": {…}}`
            if len(obj) != 1:
                return None
            (name, args), = obj.items()
        else:
            name = obj.get(keys.name)
            args = next((obj[k] for k in (self.args_key,) + keys.args if k in obj), {})
        if not isinstance(name, str):
            return None
        if keys.id and isinstance(obj.get(keys.id), (str, int)):
            self.id = str(obj[keys.id])
        return name, args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)


class HeadReader(JsonReader):
    """`HEAD{…}`: a head matched by `pattern` (group "name", maybe "id"), then a JSON object that
    is the arguments, streamed. A head that cannot be one (a `{` came and it did not match, or it
    grew too long) gives the marker back as text."""

    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern, self.whole = pattern, True

    def feed(self, buf: str) -> Step:
        if self.name is not None:
            return super().feed(buf)
        m = self.pattern.match(buf)
        if m is None or not buf.startswith("{", m.end()):  # (the head is whole when the object begins)
            return Step(0, State.TEXT if "{" in buf or len(buf) >= HEAD_LIMIT else State.CALL)
        self.name, self.id = m.group("name"), m.groupdict().get("id")
        self.lead, self.head, self.sent = buf[:m.end()], 0, 0
        step = super().feed(buf[m.end():])
        return Step(m.end() + step.take, step.then)


def args_rule(rules: Rules, tool: Tool, i: int) -> str:
    """The rule for tool `i`'s arguments: its schema's object (any object if it cannot be spelled)."""
    return rules.schema(tool_schema(tool), f"tool{i}-args") or rules.any_object()


class JsonCalls(CallFormat):
    """A format whose calls are `{"name": …, ARGS_KEY: {…}}` objects after its marker."""
    args_key = "arguments"
    keys = KEYS

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if s[0] == "{":
            return Step(0, State.CALL, JsonReader(self.args_key, keys=self.keys))
        return Step(0, State.TEXT)

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        args = args_rule(rules, tool, i)
        if self.keys.name is None:
            return f'"{{" x-ws {literal(json.dumps(tool.name))} x-ws ":" x-ws {args} x-ws "}}"'
        return (f'"{{" x-ws {literal(json.dumps(self.keys.name))} x-ws ":" x-ws {literal(json.dumps(tool.name))} '
                f'x-ws "," x-ws {literal(json.dumps(self.args_key))} x-ws ":" x-ws {args} x-ws "}}"')

    def json_head(self) -> list:
        """The start of a call object, as grammar parts."""
        return ["{", GAP, '"'] if self.keys.name is None else ["{", GAP, json.dumps(self.keys.name), GAP, ":", GAP, '"']

    def preamble(self) -> list:
        return [self.open, GAP] + self.json_head()


class JsonList(JsonCalls):
    """`OPEN[{call}, {call}]CLOSE`: one JSON list of call objects after the marker (Mistral
    before v11, Nemotron, Apriel, firefunction, Command R). `begin` opens the list at `[` (a `{`
    right after the marker is no call), `after` reads `,` (the next call), `]` and the closing
    marker; inside the list, whatever is no call ends it and is dropped."""

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if not listed:
            return Step(1, State.LIST) if s[0] == "[" else Step(0, State.TEXT)
        return super().begin(s, listed, schemas, marker)

    def after(self, s: str) -> Step | None:
        if s[0] == ",":
            return Step(1, State.LIST)
        if s[0] == "]":
            return Step(1, State.AFTER if self.close else State.TEXT)
        return super().after(s)

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        more = f' (x-ws "," x-ws {call})*' if parallel else ""
        close = f" x-ws {literal(self.close)}" if self.close else ""
        return rules.add("x-calls", f'{literal(self.open)} x-ws "[" x-ws {call}{more} x-ws "]"{close}')

    def preamble(self) -> list:
        return [self.open, GAP, "[", GAP] + self.json_head()


class HeadedCalls(CallFormat):
    """A section of calls between `open` and `close`, each `item`, a head (`head`: the name, maybe
    the id) and the JSON arguments, streamed (DeepSeek R1/V3.1, Kimi K2)."""
    item = ""
    head: re.Pattern

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if s.startswith(self.item):
            return Step(len(self.item), State.CALL, HeadReader(self.head))
        return None if self.item.startswith(s) else Step(0, State.TEXT)

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        more = f" (x-ws {call})*" if parallel else ""
        return rules.add("x-calls", f"{literal(self.open)} {call}{more} {literal(self.close)}")

    def preamble(self) -> list:
        return [self.open, GAP, self.item]
