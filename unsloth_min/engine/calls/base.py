"""What a tool-call format is to the engine: the interface every format object implements.

Strategy: the output parser (output.py) moves through a few states (`State`) and, outside its own
thinking and text states, asks the format what the text means: `begin` right after the call
marker (or inside Mistral's list), a `Reader` while one call is read, `after` once it ended. Each
answers with a `Step` (how many characters it consumed, which state follows) or None (can't tell
yet: wait for more text). The grammar side is the same object's `calls_rule` (the GBNF for forced
calls), `preamble` and `triggers` (where a lazy grammar starts).

A reader is created per call and holds that call's scanning state; it gives the call's name once
it is known (the parser then announces the first call), argument fragments as they become certain
(`pieces`) and, at the end, the call as (name, arguments JSON) or None (no call after all).

Does not: emit events, count calls or decide which call streams (output.py), or know how
grammars are sampled (grammar.py, constrain.py).
"""
from __future__ import annotations

import enum
from typing import NamedTuple, Protocol

from ...core import Tool
from ..gbnf import Rules, prefix_regex

WS = " \t\r\n"  # whitespace, as the parser and the readers skip it


class State(enum.Enum):
    """Where the output parser is."""
    THINK = "think"  # inside the thinking block
    TEXT = "text"    # answer text, watching for the call marker
    OPEN = "open"    # just after the marker: `begin` says whether a call follows
    LIST = "list"    # inside an opened list of calls (Mistral's `[`): what is no call ends it, dropped
    CALL = "call"    # one call being read by its `Reader`
    AFTER = "after"  # after a call: closing marker, separators (`after`)


class Step(NamedTuple):
    """What a format made of the text it was shown."""
    take: int        # characters consumed
    then: State      # the state that follows (TEXT from begin/a reader: it was no call)
    reader: Reader | None = None  # with then=CALL: the new call's reader


class Reader(Protocol):
    """One call being read; created by `CallFormat.begin`."""
    name: str | None  # the call's name, once known

    @property
    def text(self) -> str:
        """What it consumed (given back as text if this is no call)."""

    def feed(self, buf: str) -> Step:
        """Read from `buf` (what it left last time, plus new text): CALL: more is needed; AFTER:
        the call ended; TEXT: it is no call. `take` is how much of `buf` it used."""

    def pieces(self) -> list[str]:
        """The argument fragments that became certain since the last ask (JSON text, in order)."""

    def finish(self, complete: bool, rest: str) -> tuple[str, str] | None:
        """The call ended (complete) or generation did inside it (`rest`: what it had not taken):
        (name, arguments JSON), or None if it is no call. Later `pieces` close the arguments."""


class CallFormat:
    """One tool-call format. Subclasses set `name`, `open` (and `close`) and implement `begin`,
    `call_rule`, `calls_of` and `preamble`; the rest has defaults that fit most formats."""
    name: str = ""
    open: str = ""          # the marker before a call (before the list, for Mistral)
    close: str = ""         # the marker after each call ("" → none)
    extra_markers: tuple[str, ...] = ()  # other markers inside a call (control tokens to keep)

    def __repr__(self) -> str:
        return f"<{self.name} tool calls>"

    @property
    def markers(self) -> tuple[str, ...]:
        """Every marker of the format (control tokens in some vocabularies)."""
        return tuple(m for m in (self.open, self.close) + self.extra_markers if m)

    # ---- reading -----------------------------------------------------------------------------------
    def maybe_bare_call(self, s: str) -> bool | None:
        """Does the answer's start `s` (whitespace skipped) open a call without a marker? None:
        can't tell yet. Most formats: never."""
        return False

    def begin(self, s: str, listed: bool, schemas: dict) -> Step | None:
        """After the marker (or, `listed`, inside an opened list), `s` not starting with whitespace:
        a call's reader, a list opening, or TEXT (no call: the marker was text). `schemas`: tool
        name → parameters schema, for formats whose values are typed by it."""
        raise NotImplementedError

    def after(self, s: str) -> Step | None:
        """After a call, `s` not starting with whitespace: the closing marker, then text."""
        close = self.close
        if close and close.startswith(s[:len(close)]):
            return None if len(s) < len(close) else Step(len(close), State.TEXT)
        return Step(0, State.TEXT)

    # ---- grammar -----------------------------------------------------------------------------------
    def calls_rule(self, rules: Rules, tools: list[Tool], parallel: bool) -> str:
        """The GBNF rule (its name) for calls of `tools` only, in this format, one or more."""
        alts = [rules.add(f"x-call{i}", self.call_rule(rules, tool, i)) for i, tool in enumerate(tools)]
        return self.calls_of(rules, rules.add("x-call", " | ".join(alts)), parallel)

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        """GBNF for one call of `tool` (the i-th allowed), as written between markers."""
        raise NotImplementedError

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        """The rule for the whole answer's calls, given the rule `call` for one (no markers)."""
        raise NotImplementedError

    def preamble(self) -> list:
        """The text every call starts with, as grammar parts (`gbnf.GAP`: whitespace)."""
        raise NotImplementedError

    def triggers(self, names: list[str]) -> tuple[str, ...]:
        """Auto mode's lazy triggers: regexes matching the end of text that has begun a call of
        one of `names` (see grammar.lazy_triggers for the rules they follow)."""
        return (f"({prefix_regex(self.preamble())})$",)
