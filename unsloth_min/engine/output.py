"""Generated text → thinking, answer text and tool calls, as the text arrives.

Strategy: one incremental parser, fed the text of each token and closed at the end; streaming and
non-streaming answers both come out of it, so they cannot disagree. It is a small state machine
(`calls.State`) whose call states belong to the tool-call format's object (engine/calls/):
  THINK  inside `<think>…</think>` (the start state when the prompt opened the block) → ReasoningDelta
  TEXT   answer text → TextDelta, watching for the format's call marker; `<think>` counts only at
         the very start, and so does a bare call where the format has one (Llama 3's `{"name": …`)
  OPEN   after a marker (LIST: inside Mistral's list): the format's `begin` says what follows
  CALL   one call, read by the reader `begin` created; once the reader knows the call's name,
         the first call of the answer is announced (id + name) and its arguments stream as the
         reader finds them certain; later calls come out whole, once read (or are dropped when
         they repeat an earlier one, or when parallel calls are off)
  AFTER  between calls: the format's `after` reads the closing marker, separators
Text that might be the start of a marker is held back until it cannot be; a call that turns out
not to be one (no `{`, no name, no object) is given back as text. Nothing here raises on
malformed or cut-off output: a cut-off first call keeps the arguments it had (the reader closes
them), a cut-off later one is dropped.

Does not: decode tokens (textstream.py), know any format's text (engine/calls/), check arguments
against the schema (the grammar enforces them when it is asked to), or choose the format
(formats.py).
"""
from __future__ import annotations

import json

from ..core import ReasoningDelta, TextDelta, ToolCallDelta, new_id
from .calls import WS, CallFormat, Reader, State
from .formats import ThinkFormat
from .textstream import partial_suffix


def call_key(call: tuple[str, str]) -> tuple[str, str]:
    """A call as compared with others: arguments in canonical JSON when they parse."""
    try:
        return call[0], json.dumps(json.loads(call[1]), sort_keys=True)
    except ValueError:
        return call


class OutputParser:
    def __init__(self, tools: CallFormat | None = None, think: ThinkFormat = ThinkFormat(),
                 thinking: bool = False, parallel: bool = True, schemas: dict | None = None):
        self.fmt, self.think, self.parallel = tools, think, parallel
        self.schemas = schemas or {}  # tool name → parameters schema (types XML values)
        self.markers = (tools.open,) if tools else ()
        self.state = State.THINK if thinking else State.TEXT
        self.buf = ""            # text received and not yet given out
        self.out: list = []
        self.fresh = True        # the current text run is whitespace so far
        self.strip = False       # ...and that whitespace is dropped (after thinking or a call)
        self.think_fresh = True  # no reasoning given out yet (its leading whitespace is dropped)
        self.can_think = not thinking  # `<think>` opens thinking only before anything else
        self.can_bare = tools is not None  # a bare call, only at the very start
        self.calls = 0           # calls announced
        self.seen: set = set()   # (name, arguments) of the calls read
        self.cut = False         # the streamed call was cut off by the end of generation
        self.repeating = False   # a call repeated an earlier one: generation may stop
        self.raw = ""            # marker text of the call being read, given back if it is no call
        self.reader: Reader | None = None  # the call being read
        self.index: int | None = None      # its index, once announced (the streamed first call)

    @property
    def passthrough(self) -> bool:
        """True when text can skip the parser: nothing left to watch for."""
        return self.state is State.TEXT and not self.fresh and not self.markers

    @property
    def thinking(self) -> bool:
        return self.state is State.THINK

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
        if state is State.THINK:
            self._reason(buf.rstrip(WS))
        elif state is State.TEXT:
            self._say(buf.lstrip(WS) if self.fresh and self.strip else buf)
        elif state is State.OPEN:
            self._say(self.raw + buf)
        elif state is State.CALL:
            self._end_call(complete=False)
        self.buf = ""  # (inside a list, or after a call: what is held means nothing)
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

    def _announce(self, name: str) -> None:
        self.index = self.calls
        self.calls += 1
        self.out.append(ToolCallDelta(self.index, new_id("call_"), name, ""))

    def _stream(self, pieces: list[str]) -> None:
        if self.index is not None:
            self.out.extend(ToolCallDelta(self.index, arguments=p) for p in pieces)

    # ---- states: each consumes from self.buf; True when it changed state and may go on ----------
    def _in_think(self) -> bool:
        buf, close = self.buf, self.think.close
        i = buf.find(close)
        if i != -1:
            self._reason(buf[:i].rstrip(WS))
            self.buf = buf[i + len(close):]
            self.state, self.fresh, self.strip, self.can_think = State.TEXT, True, True, False
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
            self.buf, self.raw, self.state = buf[at + len(marker):], marker, State.OPEN
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
            self.buf, self.state, self.can_think = s[len(opener):], State.THINK, False
            return True
        bare = self.fmt.maybe_bare_call(s) if self.can_bare else False
        if bare is None:
            return False
        if bare:  # a call with no marker: nothing to give back if it is none
            self.buf, self.raw, self.state = s, "", State.OPEN
            return True
        self.fresh = self.can_think = self.can_bare = False
        if self.strip:
            self.buf = s
        return None

    def _in_open(self) -> bool:
        """After the marker (OPEN) or inside a list of calls (LIST): the format's `begin`."""
        s = self.buf.lstrip(WS)
        self.raw += self.buf[:len(self.buf) - len(s)]
        self.buf = s
        if not s:
            return False
        listed = self.state is State.LIST
        step = self.fmt.begin(s, listed, self.schemas)
        if step is None:
            return False
        self.raw, self.buf = self.raw + s[:step.take], s[step.take:]
        if step.then is State.CALL:
            self.state, self.reader, self.index = State.CALL, step.reader, None
        elif step.then is State.TEXT:  # not a call: the marker was text (inside a list: dropped)
            self._after_calls("" if listed else self.raw)
        else:
            self.state = step.then
        return True

    def _in_call(self) -> bool:
        r = self.reader
        step = r.feed(self.buf)
        self.buf = self.buf[step.take:]
        if step.then is State.TEXT:  # not a call: its text goes back out
            self._after_calls(self.raw + r.text)
            return True
        if r.name is not None and self.index is None and not self.calls:
            self._announce(r.name)  # the first call streams; later ones come out whole
        self._stream(r.pieces())
        if step.then is State.CALL:
            return False
        self._end_call(complete=True)
        return True

    def _end_call(self, complete: bool) -> None:
        """A call ended (or generation did, inside it)."""
        r, streamed = self.reader, self.index is not None
        if not complete and not streamed:  # cut off: a later call is dropped, a first one was text
            if not self.calls:
                self._after_calls(self.raw + r.text + self.buf)
            return
        call = r.finish(complete, self.buf)
        if call is None:  # not a call: give its text back
            self._after_calls(self.raw + r.text)
            return
        if streamed:  # the rest of its arguments (an XML call's closing brace)
            self._stream(r.pieces())
            self.cut = not complete
        else:
            self._emit_whole(call)
        self.seen.add(call_key(call))
        self.raw, self.state, self.reader = "", State.AFTER, None

    def _emit_whole(self, call: tuple[str, str]) -> None:
        if call_key(call) in self.seen:  # a weak model repeating itself: the answer is complete
            self.repeating = True
        elif self.parallel or not self.calls:
            self._announce(call[0])
            self.out.append(ToolCallDelta(self.index, arguments=call[1]))

    def _in_after(self) -> bool:
        s = self.buf = self.buf.lstrip(WS)
        if not s:
            return False
        step = self.fmt.after(s)
        if step is None:
            return False
        self.buf = s[step.take:]
        if step.then is State.TEXT:
            self._after_calls("")
        else:
            self.state, self.raw = step.then, ""
        return True

    def _after_calls(self, give_back: str) -> None:
        """Back to answer text; `give_back` is text that looked like a call but was not."""
        self._say(give_back)
        self.state, self.raw, self.reader = State.TEXT, "", None
        self.fresh, self.strip = not give_back, not give_back

    STATES = {State.THINK: _in_think, State.TEXT: _in_text, State.OPEN: _in_open, State.LIST: _in_open,
              State.CALL: _in_call, State.AFTER: _in_after}
