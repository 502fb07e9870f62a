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

A format is also its family's whole output shape: `think` (its thinking markers, when they are
not `<think>…</think>`), `frames` (markers of its message structure that mean something even
without tools: gpt-oss's channel headers), `start` (the answer begins inside a header the prompt
opened), and for the prompt its template signature (`detect`), its call ids (`fit_id`, `mint_id`)
and the variables and message shapes its template expects (`context`, `adjust`).

Does not: emit events, count calls or decide which call streams (output.py), or know how
grammars are sampled (grammar.py, constrain.py).
"""
from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ...core import Tool
from ..gbnf import Rules, prefix_regex

WS = " \t\r\n"  # whitespace, as the parser and the readers skip it


@dataclass(frozen=True)
class ThinkFormat:
    """The markers around a model's thinking. `kept`: the opening text is the reasoning's first
    words (Apriel's prompt ends with `Here are my reasoning steps:`), not a marker."""
    open: str = "<think>"
    close: str = "</think>"
    kept: bool = False


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
    silent: bool = False  # from begin: the marker and what it took are a header, not text


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


class WholeReader:
    """A reader whose call comes out whole once read: its `name` is known early (the first call is
    announced then), its `args` (JSON text) at its end, given as one piece."""
    text, id = "", None  # (nothing given back once it is a call; no id of the model's)

    def __init__(self):
        self.name: str | None = None
        self.args: str | None = None
        self.given = False

    def pieces(self) -> list[str]:
        if self.args is None or self.given:
            return []
        self.given = True
        return [self.args]

    def finish(self, complete: bool, rest: str) -> tuple[str, str] | None:
        return (self.name, self.args) if complete and self.args is not None else None


def follows(s: str, marks: tuple) -> Step | None:
    """What follows a call, read by a table of (marker, state): the first marker `s` starts with
    (LIST: left for `begin` to read; any other: consumed), None while `s` may still grow into
    one, else TEXT (the calls are over)."""
    for mark, then in marks:
        if s.startswith(mark):
            return Step(0 if then is State.LIST else len(mark), then)
        if mark.startswith(s):
            return None
    return Step(0, State.TEXT)


class CallFormat:
    """One tool-call format. Subclasses set `name`, `open` (and `close`) and implement `begin`,
    `call_rule`, `calls_of` and `preamble`; the rest has defaults that fit most formats."""
    name: str = ""
    open: str = ""          # the marker before a call (before the list, for Mistral)
    close: str = ""         # the marker after each call ("" → none)
    extra_markers: tuple[str, ...] = ()  # other markers inside a call (control tokens to keep)
    more_opens: tuple[str, ...] = ()     # other markers that begin calls (`begin` is told which)
    frames: tuple[str, ...] = ()         # structure markers, watched even when no tools are offered
    think: ThinkFormat | None = None     # its thinking markers (None: as the template shows them)
    calls_end_thinking = False           # a call marker inside thinking ends the thinking
    keeps_space = False                  # reasoning's trailing and after-call leading whitespace kept
    gap_before_calls = False             # whitespace before a call marker is the format's, not text
    signature: tuple[str, ...] = ()      # the template source holds all these: it is this format

    def __repr__(self) -> str:
        return f"<{self.name} tool calls>"

    @property
    def markers(self) -> tuple[str, ...]:
        """Every marker of the format (control tokens in some vocabularies)."""
        think = (self.think.open, self.think.close) if self.think else ()
        found = (self.open, self.close) + self.more_opens + self.frames + self.extra_markers + think
        return tuple(dict.fromkeys(m for m in found if m))

    @property
    def opens(self) -> tuple[str, ...]:
        """The markers that begin calls, as the parser watches the text for them."""
        return tuple(m for m in (self.open,) + self.more_opens if m)

    # ---- the template --------------------------------------------------------------------------------
    def detect(self, source: str) -> bool:
        """Is `source` (a chat template) one that teaches this format?"""
        return bool(self.signature) and all(m in source for m in self.signature)

    def start(self, rendered: str) -> str | None:
        """The marker of the header the prompt ends inside (the answer continues it), or None."""
        return None

    def fit_id(self, call_id: str, index: int, name: str) -> str:
        """A call id from the conversation (the `index`-th, of a call of `name`), as the template
        accepts it (most: any)."""
        return call_id

    def mint_id(self, name: str, index: int) -> str:
        """A new call's id, when the model wrote none (`index`: the call's place in the answer)."""
        return "call_" + secrets.token_hex(12)

    def context(self, req, thinking: bool) -> dict:
        """Extra variables the template reads (MiniMax M3's `thinking_mode`, …)."""
        return {}

    def effort(self, level: str) -> str:
        """A request's reasoning effort (a dialect's level) as the template reads `reasoning_effort`."""
        return level

    def adjust(self, messages: list[dict]) -> list[dict]:
        """The messages (Hugging Face dicts) in the shape the family's template expects."""
        return messages

    # ---- reading -----------------------------------------------------------------------------------
    def maybe_bare_call(self, s: str) -> bool | None:
        """Does the answer's start `s` (whitespace skipped) open a call without a marker? None:
        can't tell yet. Most formats: never."""
        return False

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        """After `marker` (or, `listed`, inside an opened list), `s` not starting with whitespace:
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

    def answer_rule(self, rules: Rules, answer: str) -> str:
        """The rule for a JSON answer (`response_format`), given its value's rule."""
        return answer

    def forced_root(self, rules: Rules, body: str) -> str:
        """The root rule of a forced answer whose calls (or JSON) are `body`."""
        return f"({body}) x-ws"

    def triggers(self, names: list[str]) -> tuple[str, ...]:
        """Auto mode's lazy triggers: regexes matching the end of text that has begun a call of
        one of `names` (see grammar.lazy_triggers for the rules they follow)."""
        return (f"({prefix_regex(self.preamble())})$",)
