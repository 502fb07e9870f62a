"""Generated text → thinking, answer text and tool calls, as the text arrives.

Strategy: one incremental parser, fed the text of each token and closed at the end; streaming and
non-streaming answers both come out of it, so they cannot disagree. It is a small state machine:
  think  inside `<think>…</think>` (the start state when the prompt opened the block) → ReasoningDelta
  text   answer text → TextDelta, watching for the format's call marker (`<tool_call>`,
         `[TOOL_CALLS]`, `<|python_tag|>`); `<think>` counts only at the very start, and so does
         a bare `{"name": …` object for Llama 3
  open   after a marker, before the call's `{` (or Mistral's `[`)
  named  Mistral v11+: `NAME[ARGS]` (or `NAME[CALL_ID]ID[ARGS]`, the id ignored) after the marker;
         once the arguments' `{` follows, the call is announced and `call` reads that object
  call   inside one call object: a string/depth scanner finds where the object ends; once
         `{"name": "…", "arguments":` has arrived the call is announced (id + name) and its
         arguments stream as JSON text fragments
         (a `named` call's object is its arguments, streamed whole)
  after  between calls: the closing marker, separators
Qwen3-Coder's XML calls take two more states after `open` has seen `<function=` (`fname`, `xml`:
xmlcalls.py, a mixin of this parser).
Text that might be the start of a marker is held back until it cannot be; a call that turns out
not to be one (no `{`, no name; no `NAME[ARGS]{`; no `<function=NAME>`) is given back as text.
Nothing here raises on malformed or cut-off JSON: a cut-off call keeps the arguments it had (an
XML one closes its object, with the cut parameter's text so far).

Does not: decode tokens (textstream.py), check arguments against the schema (the grammar enforces
them when it is asked to; the schema only picks an XML value's type), or choose the format
(formats.py).
"""
from __future__ import annotations

import json
import re

from ..core import ReasoningDelta, TextDelta, ToolCallDelta, new_id
from .formats import ARGS, CALL_ID, ThinkFormat, ToolFormat
from .textstream import partial_suffix
from .xmlcalls import FUNC, XmlCalls
from .xmlvalues import WS

# A call whose name comes first can stream its arguments: where they start.
HEAD = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*')
HEAD_LIMIT = 512  # chars of a call object within which a streamable head must appear
NAME_KEY = '"name"'
NAME_CHARS = r"[^\s\[\]{}()<>\"',;]"  # Mistral v11+: a call's name before `[ARGS]`
NAME_RUN, ID_RUN = re.compile(NAME_CHARS + "{0,256}"), re.compile(r"[^\s\[\]]{0,64}")
NAMED_HEAD = re.compile(  # `NAME[ARGS]` or `NAME[CALL_ID]ID[ARGS]`
    rf"({NAME_CHARS}{{1,256}})(?:{re.escape(CALL_ID)}{ID_RUN.pattern})?{re.escape(ARGS)}")


def maybe_bare_call(s: str) -> bool | None:
    """Llama 3: does `s` (starting with `{`) open a `{"name":` call? None: can't tell yet."""
    rest = s[1:].lstrip(WS)
    if len(rest) < len(NAME_KEY):
        return None if NAME_KEY.startswith(rest) else False
    if not rest.startswith(NAME_KEY):
        return False
    rest = rest[len(NAME_KEY):].lstrip(WS)
    return None if not rest else rest[0] == ":"


def named_prefix(s: str) -> bool:
    """Mistral v11+: can `s` (no whole `NAME[ARGS]` yet) still grow into one?"""
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


def call_key(call: tuple[str, str]) -> tuple[str, str]:
    """A call as compared with others: arguments in canonical JSON when they parse."""
    try:
        return call[0], json.dumps(json.loads(call[1]), sort_keys=True)
    except ValueError:
        return call


class OutputParser(XmlCalls):
    def __init__(self, tools: ToolFormat | None = None, think: ThinkFormat = ThinkFormat(),
                 thinking: bool = False, parallel: bool = True, schemas: dict | None = None):
        self.fmt, self.think, self.parallel = tools, think, parallel
        self.schemas = schemas or {}  # tool name → parameters schema (types XML values)
        self.markers = (tools.open,) if tools else ()
        self.state = "think" if thinking else "text"
        self.buf = ""            # text received and not yet given out
        self.out: list = []
        self.fresh = True        # the current text run is whitespace so far
        self.strip = False       # ...and that whitespace is dropped (after thinking or a call)
        self.think_fresh = True  # no reasoning given out yet (its leading whitespace is dropped)
        self.can_think = not thinking  # `<think>` opens thinking only before anything else
        self.can_bare = bool(tools and tools.bare_json)
        self.in_list = False
        self.calls = 0           # calls announced
        self.seen: set = set()   # (name, arguments) of the calls read
        self.cut = False         # the streamed call was cut off by the end of generation
        self.repeating = False   # a call repeated an earlier one: generation may stop
        self.raw = ""            # marker text of the call being read, given back if it is no call

    @property
    def passthrough(self) -> bool:
        """True when text can skip the parser: nothing left to watch for."""
        return self.state == "text" and not self.fresh and not self.markers

    def push(self, text: str) -> list:
        self.buf += text
        self.out = []
        while self.STATES[self.state](self):
            pass
        return self.out

    def close(self) -> list:
        """The end of generation: give out what was held, as far as it means anything."""
        self.out = []
        buf, state = self.buf, self.state
        if state == "think":
            self._reason(buf.rstrip(WS))
        elif state == "text":
            self._say(buf.lstrip(WS) if self.fresh and self.strip else buf)
        elif state == "open" and not self.in_list:
            self._say(self.raw + buf)
        elif state == "call":
            self._end_call(complete=False)
        elif state in ("fname", "named") and not self.calls:  # no name yet: it was text
            self._say(self.raw + buf)
        elif state == "xml":
            self._end_xml(complete=False)
        self.buf = ""
        return self.out

    # ---- emitting --------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        if text:
            self.out.append(TextDelta(text))

    def _reason(self, text: str) -> None:
        if self.think_fresh:
            text = text.lstrip(WS)
        if text:
            self.think_fresh = False
            self.out.append(ReasoningDelta(text))

    # ---- states: each consumes from self.buf; True when it changed state and may go on ----------
    def _in_think(self) -> bool:
        buf, close = self.buf, self.think.close
        i = buf.find(close)
        if i != -1:
            self._reason(buf[:i].rstrip(WS))
            self.buf = buf[i + len(close):]
            self.state, self.fresh, self.strip, self.can_think = "text", True, True, False
            return True
        hold = partial_suffix(buf, close)
        sent = buf[:len(buf) - hold].rstrip(WS)  # trailing whitespace waits: it may end the block
        self._reason(sent)
        self.buf = buf[len(sent):]
        return False

    def _in_text(self) -> bool:
        if self.fresh:
            went_on = self._text_start()
            if went_on is not None:
                return went_on
        buf, at, marker = self.buf, -1, ""
        for m in self.markers:
            i = buf.find(m)
            if i != -1 and (at == -1 or i < at):
                at, marker = i, m
        if at != -1:
            self._say(buf[:at])
            self.buf, self.raw, self.state = buf[at + len(marker):], marker, "open"
            self.can_think = self.can_bare = False
            return True
        hold = max((partial_suffix(buf, m) for m in self.markers), default=0)
        self._say(buf[:len(buf) - hold])
        self.buf = buf[len(buf) - hold:]
        return False

    def _text_start(self) -> bool | None:
        """Only whitespace so far: look for `<think>` or a bare call. None: go on as plain text."""
        s = self.buf.lstrip(WS)
        if not s:
            return False
        opener = self.think.open
        if self.can_think and opener.startswith(s[:len(opener)]):
            if len(s) < len(opener):
                return False
            self.buf, self.state, self.can_think = s[len(opener):], "think", False
            return True
        if self.can_bare and s[0] == "{":
            bare = maybe_bare_call(s)
            if bare is None:
                return False
            if bare:
                self.buf, self.raw = s, ""
                self._start_call()
                return True
        self.fresh = self.can_think = self.can_bare = False
        if self.strip:
            self.buf = s
        return None

    def _in_open(self) -> bool:
        s = self.buf.lstrip(WS)
        self.raw += self.buf[:len(self.buf) - len(s)]
        self.buf = s
        if not s:
            return False
        if self.fmt.named and s[0] != "{":  # (a `{"name": …}` object is read too: lenient)
            self.state = "named"
            return True
        if self.fmt.xml and s.startswith(FUNC):
            self.raw, self.buf, self.state = self.raw + FUNC, s[len(FUNC):], "fname"
            return True
        if self.fmt.xml and FUNC.startswith(s):
            return False
        if self.fmt.listed and not self.in_list and s[0] == "[":
            self.in_list, self.raw, self.buf = True, self.raw + "[", s[1:]
            return True
        if s[0] == "{" and (self.in_list or not self.fmt.listed):
            self._start_call()
            return True
        self._after_calls(self.raw if not self.in_list else "")  # not a call after all
        return True

    def _start_call(self) -> None:
        self.state, self.obj, self.stops = "call", "", []
        self.depth, self.in_str, self.esc = 0, False, False
        self.head = self.sent = -1  # where the arguments start / how far they were given out
        self.index, self.whole = None, False  # whole: the object is the arguments (named calls)

    def _in_named(self) -> bool:
        buf = self.buf
        m = NAMED_HEAD.match(buf)
        rest = buf[m.end():].lstrip(WS) if m else ""
        if (not rest and (m or named_prefix(buf))) and len(buf) < HEAD_LIMIT:
            return False  # not sure yet
        if not rest.startswith("{"):  # not a call: the marker was text
            self._after_calls(self.raw)
            return True
        self.raw, self.buf = self.raw + buf[:len(buf) - len(rest)], rest
        self._start_call()
        self.name, self.head, self.sent, self.whole = m.group(1), 0, 0, True
        if not self.calls:  # the first call streams; later ones come out whole (see _end_call)
            self._announce(self.name)
        return True

    def _in_call(self) -> bool:
        buf = self.buf
        end = self._scan(buf)
        self.obj += buf if end == -1 else buf[:end]
        self.buf = "" if end == -1 else buf[end:]
        if self.head == -1 and len(self.obj) < HEAD_LIMIT:
            self._find_head()
        if self.head != -1:
            self._send_args()
        if end == -1:
            return False
        self._end_call(complete=True)
        return True

    def _scan(self, chunk: str) -> int:
        """Advance the JSON scanner over `chunk`: the index just past the object's end, or -1."""
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
        m = HEAD.match(self.obj)
        if m is None or m.end() == len(self.obj):  # the arguments must have begun
            return
        try:
            self.name = json.loads('"' + m.group(1) + '"')
        except ValueError:
            return
        self.head = self.sent = m.end()
        if not self.calls:  # the first call streams; later ones come out whole (see _end_call)
            self._announce(self.name)

    def _announce(self, name: str) -> None:
        self.index = self.calls
        self.calls += 1
        self.out.append(ToolCallDelta(self.index, new_id("call_"), name, ""))

    def _args_end(self) -> int:
        if self.whole:
            return len(self.obj)
        return next((p for p in self.stops if p >= self.head), len(self.obj))

    def _send_args(self) -> None:
        if self.index is None:
            return
        piece = self.obj[self.sent:self._args_end()].rstrip(WS)
        if piece:
            self.out.append(ToolCallDelta(self.index, arguments=piece))
        self.sent += len(piece)

    def _end_call(self, complete: bool) -> None:
        """A call object ended (or generation did, inside it)."""
        if self.index is not None:  # the streamed first call: all of it is out already
            self.cut = not complete
            call = (self.name, self.obj[self.head:self._args_end()].strip(WS))
        elif not complete:  # cut off: a later call is dropped, a first one was only text
            if not self.calls:
                self._after_calls(self.raw + self.obj)
            return
        else:
            call = ((self.name, self.obj[self.head:self._args_end()].strip(WS)) if self.head != -1
                    else self._whole_call())
            if call is None:  # not a call: give its text back
                self._after_calls(self.raw + self.obj)
                return
            self._emit_whole(call)
        self._done(call)

    def _done(self, call: tuple[str, str]) -> None:
        """A call was read (and given out, or dropped): remember it, then look for the next."""
        self.seen.add(call_key(call))
        self.raw, self.state = "", "after"

    def _emit_whole(self, call: tuple[str, str]) -> None:
        if call_key(call) in self.seen:  # a weak model repeating itself: the answer is complete
            self.repeating = True
        elif self.parallel or not self.calls:
            self._announce(call[0])
            self.out.append(ToolCallDelta(self.index, arguments=call[1]))

    def _whole_call(self) -> tuple[str, str] | None:
        """A finished object whose name did not come first: (name, arguments JSON) or None."""
        try:
            obj = json.loads(self.obj)
        except ValueError:
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return None
        args = obj.get(self.fmt.args_key, obj.get("arguments", obj.get("parameters", {})))
        return obj["name"], args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)

    def _in_after(self) -> bool:
        s = self.buf.lstrip(WS)
        self.buf = s
        if not s:
            return False
        close = self.fmt.close
        if close and close.startswith(s[:len(close)]):
            if len(s) < len(close):
                return False
            self.buf = s[len(close):]
            self._after_calls("")
            return True
        if self.in_list and s[0] in ",]":
            self.buf = s[1:]
            if s[0] == "]":
                self.in_list = False
                self._after_calls("")
            else:
                self.state, self.raw = "open", ""
            return True
        if self.fmt.bare_json and s[0] in ";{":
            self.buf = s[1:] if s[0] == ";" else s
            self.state, self.raw = ("after", "") if s[0] == ";" else ("open", "")
            return True
        self._after_calls("")
        return True

    def _after_calls(self, give_back: str) -> None:
        """Back to answer text; `give_back` is text that looked like a call but was not."""
        self._say(give_back)
        self.state, self.raw, self.in_list = "text", "", False
        self.fresh, self.strip = not give_back, not give_back

    STATES = {"think": _in_think, "text": _in_text, "open": _in_open, "call": _in_call, "named": _in_named,
              "after": _in_after, "fname": XmlCalls._in_fname, "xml": XmlCalls._in_xml}
