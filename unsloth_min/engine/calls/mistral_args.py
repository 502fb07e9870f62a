"""Mistral v11+ (Small 3.1+, Devstral, Magistral): `[TOOL_CALLS]NAME[ARGS]{…}`, one marker per call.

Strategy: after the marker, `NamedReader` waits for `NAME[ARGS]` (or `NAME[CALL_ID]ID[ARGS]`, the
id kept as the call's; ids are Mistral's 9 letters and digits, mistral.py) and the `{` after it; then the name is known and the object that follows is the
arguments, streamed as it arrives. A `{"name": …}` object right after the marker is read too
(lenient). Text that cannot grow into such a head gives the marker back as text. The forced
grammar writes `[TOOL_CALLS]NAME[ARGS]` then the schema's object (never a `[CALL_ID]`); the lazy
trigger waits for the marker plus the start of an allowed name, since `[TOOL_CALLS]` alone may
be prose.

Does not: read the older list format (mistral.py).
"""
from __future__ import annotations

import re

from ...core import Tool
from ..gbnf import Rules, literal, prefix_regex, regex_escape
from .base import WS, State, Step
from .jsoncalls import HEAD_LIMIT, JsonCalls, JsonReader, args_rule
from .mistral import fit_id, mint_id

ARGS, CALL_ID = "[ARGS]", "[CALL_ID]"
NAME_CHARS = r"[^\s\[\]{}()<>\"',;]"  # a call's name before `[ARGS]`
NAME_RUN, ID_RUN = re.compile(NAME_CHARS + "{0,256}"), re.compile(r"[^\s\[\]]{0,64}")
NAMED_HEAD = re.compile(  # `NAME[ARGS]` or `NAME[CALL_ID]ID[ARGS]`
    rf"({NAME_CHARS}{{1,256}})(?:{re.escape(CALL_ID)}({ID_RUN.pattern}))?{re.escape(ARGS)}")


def named_prefix(s: str) -> bool:
    """Can `s` (no whole `NAME[ARGS]` yet) still grow into one?"""
    name = NAME_RUN.match(s).end()
    rest = s[name:]
    if not rest or not name:
        return not rest
    if ARGS.startswith(rest) or CALL_ID.startswith(rest):
        return True
    if not rest.startswith(CALL_ID):
        return False
    rest = rest[len(CALL_ID):]
    return ARGS.startswith(rest[ID_RUN.match(rest).end():])


class NamedReader(JsonReader):
    """`NAME[ARGS]{…}`: the head, then a JSON object that is the arguments."""

    def __init__(self):
        super().__init__()
        self.whole = True

    def feed(self, buf: str) -> Step:
        if self.name is not None:
            return super().feed(buf)
        m = NAMED_HEAD.match(buf)
        rest = buf[m.end():].lstrip(WS) if m else ""
        if (not rest and (m or named_prefix(buf))) and len(buf) < HEAD_LIMIT:
            return Step(0, State.CALL)  # not sure yet
        if not rest.startswith("{"):  # not a call: the marker was text
            return Step(0, State.TEXT)
        self.name, self.lead, self.head, self.sent = m.group(1), buf[:len(buf) - len(rest)], 0, 0
        self.id = m.group(2) or None
        step = super().feed(rest)
        return Step(len(self.lead) + step.take, step.then)


class MistralArgs(JsonCalls):
    name, open, extra_markers = "mistral_args", "[TOOL_CALLS]", (ARGS, CALL_ID)
    signature = ("[TOOL_CALLS]", ARGS)

    def fit_id(self, call_id: str, index: int, name: str) -> str:
        return fit_id(call_id)

    def mint_id(self, name: str, index: int) -> str:
        return mint_id()

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if s[0] != "{":
            return Step(0, State.CALL, NamedReader())
        return super().begin(s, listed, schemas, marker)

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        return f"{literal(self.open + tool.name + ARGS)} {args_rule(rules, tool, i)}"

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        return rules.add("x-calls", f"{call} (x-ws {call})*" if parallel else call)

    def preamble(self) -> list:
        return [self.open]

    def triggers(self, names: list[str]) -> tuple[str, ...]:
        names = "|".join(prefix_regex([name[0], name[1:] + ARGS]) for name in names if name)
        return (f"({regex_escape(self.open)}(?:{names}))$",)


MISTRAL_ARGS = MistralArgs()
