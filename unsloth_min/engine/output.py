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
A format may begin calls at several markers (`begin` is told which), end thinking at a call
marker, start the answer inside a header the prompt opened (gpt-oss's `<|start|>assistant`),
and have structure markers (`frames`) watched even when no tools are offered: its `begin` may
then answer with a header (`silent`: neither text nor call), thinking (THINK) or a call, which,
with no tools offered, is read and dropped. A call's id is the one the model wrote, if its reader
found one, or one the format mints.
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

from ..core import ReasoningDelta, TextDelta, ToolCallDelta
from .calls import WS, CallFormat, Reader, State, ThinkFormat
from .textstream import partial_suffix


def call_key(call: tuple[str, str]) -> tuple[str, str]:
    """A call as compared with others: arguments in canonical JSON when they parse."""
    try:
        return call[0], json.dumps(json.loads(call[1]), sort_keys=True)
    except ValueError:
        return call


class OutputParser:
    def __init__(self, tools: CallFormat | None = None, think: ThinkFormat = ThinkFormat(),
                 thinking: bool = False, parallel: bool = True, schemas: dict | None = None,
                 calling: bool = True, start: str | None = None):
        self.fmt, self.think, self.parallel = tools, think, parallel
        self.calling = calling and tools is not None  # tools are offered: calls are answers
        self.keep = tools is not None and tools.keeps_space  # the model's whitespace stays as it is
        self.schemas = schemas or {}  # tool name → parameters schema (types XML values)
        self.opens = tools.opens if self.calling else ()  # the markers that begin calls
        self.markers = tuple(dict.fromkeys((tools.frames if tools else ()) + self.opens))  # all watched
        self.opened = start or ""  # the marker of the header or call being opened
        self.state = State.OPEN if start is not None else State.THINK if thinking else State.TEXT
        self.buf = think.open if thinking and think.kept else ""  # received, not yet given out
        self.out: list = []
        self.fresh = True        # the current text run is whitespace so far
        self.strip = False       # ...and that whitespace is dropped (after thinking or a call)
        self.think_fresh = True  # no reasoning given out yet (its leading whitespace is dropped)
        self.can_think = not thinking and bool(think.open)  # `<think>` opens thinking only first
        self.can_bare = self.calling  # a bare call, only at the very start
        self.calls = 0           # calls announced
        self.seen: set = set()   # (name, arguments) of the calls read
        self.cut = False         # the streamed call was cut off by the end of generation
        self.repeating = False   # a call repeated an earlier one: generation may stop
        self.raw = ""            # marker text of the call being read, given back if it is no call
        self.reader: Reader | None = None  # the call being read
        self.in_thought: bool | str = False  # ...opened inside the thinking block (str: after this space)
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
            self._reason(buf if self.keep else buf.rstrip(WS))
        elif state is State.TEXT:
            self._say(buf.lstrip(WS) if self.fresh and self.strip else buf)
        elif state is State.OPEN and self.opened in self.fmt.frames and not buf.strip(WS):
            pass  # (a structure marker that ends the answer: a frame of nothing)
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

    def _announce(self, name: str, call_id: str | None) -> None:
        self.index = self.calls
        self.calls += 1
        self.out.append(ToolCallDelta(self.index, call_id or self.fmt.mint_id(name, self.index), name, ""))

    def _stream(self, pieces: list[str]) -> None:
        if self.index is not None:
            self.out.extend(ToolCallDelta(self.index, arguments=p) for p in pieces)

    # ---- states: each consumes from self.buf; True when it changed state and may go on ----------
    def _in_think(self) -> bool:
        if self.think_fresh and self.think.open and not self.think.kept:  # the prompt opened the
            s = self.buf.lstrip(WS)                                       # block, the model again
            if self.think.open.startswith(s):
                return False
            if s.startswith(self.think.open):
                self.buf = s[len(self.think.open):]
        buf, close = self.buf, self.think.close
        i = buf.find(close)
        at, marker = self._marker_in(buf) if self.calling and self.fmt.calls_end_thinking else (-1, "")
        if at != -1 and (i == -1 or at < i):  # a call ends the thinking (its close never came)
            said = buf[:at] if self.keep else buf[:at].rstrip(WS)
            self._reason(said)
            self._open(buf, at, marker)
            self.in_thought = buf[len(said):at] or True  # (until the call is sure: if it is none,
            return True                                   # thinking goes on, with this whitespace)
        if i != -1:
            self._reason(buf[:i] if self.keep else buf[:i].rstrip(WS))
            self.buf = buf[i + len(close):]
            self.state, self.fresh, self.strip, self.can_think = State.TEXT, True, True, False
            return True
        ends = self.markers if self.calling and self.fmt.calls_end_thinking else ()
        hold = max(partial_suffix(buf, m) for m in (close,) + ends)
        sent = buf[:len(buf) - hold].rstrip(WS)  # trailing whitespace waits: it may end the block
        self._reason(sent)
        self.buf = buf[len(sent):]
        return False

    def _marker_in(self, buf: str) -> tuple[int, str]:
        """The first watched marker in `buf`: (where, which), or (-1, "")."""
        at, marker = -1, ""
        for m in self.markers:
            i = buf.find(m)
            if i != -1 and (at == -1 or i < at):
                at, marker = i, m
        return at, marker

    def _open(self, buf: str, at: int, marker: str) -> None:
        self.buf, self.raw, self.opened, self.state = buf[at + len(marker):], marker, marker, State.OPEN
        self.can_think = self.can_bare = False

    def _in_text(self) -> bool:
        if self.fresh:
            went_on = self._text_start()
            if went_on is not None:
                return went_on
        buf, gap = self.buf, self.calling and self.fmt.gap_before_calls
        at, marker = self._marker_in(buf)
        if at != -1:
            self._say(buf[:at].rstrip(WS) if gap and marker in self.fmt.opens else buf[:at])
            self._open(buf, at, marker)
            return True
        hold = max((partial_suffix(buf, m) for m in self.markers), default=0)
        said = buf[:len(buf) - hold]
        said = said.rstrip(WS) if gap else said  # (whitespace waits: a call may follow it)
        self._say(said)
        self.buf = buf[len(said):]
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
            self.buf, self.raw, self.opened, self.state = s, "", "", State.OPEN
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
        step = self.fmt.begin(s, listed, self.schemas, self.opened)
        if step is None:
            return False
        self.raw = "" if step.silent else self.raw + s[:step.take]
        self.buf = s[step.take:]
        if step.then is State.CALL:
            self.state, self.reader, self.index = State.CALL, step.reader, None
        elif step.then is State.TEXT:  # not a call: the marker was text (inside a list: dropped)
            self._after_calls("" if listed else self.raw)
        elif step.then is State.THINK:  # a header that opens thinking
            self.state, self.raw = State.THINK, ""
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
        if r.name is not None and self.index is None and not self.calls and self.calling:
            self._announce(r.name, getattr(r, "id", None))  # the first call streams; later ones come whole
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
        elif self.calling:  # (no tools offered: a call written anyway is dropped)
            self._emit_whole(call, getattr(r, "id", None))
        self.seen.add(call_key(call))
        self.raw, self.state, self.reader, self.in_thought = "", State.AFTER, None, False

    def _emit_whole(self, call: tuple[str, str], call_id: str | None) -> None:
        if call_key(call) in self.seen:  # a weak model repeating itself: the answer is complete
            self.repeating = True
        elif self.parallel or not self.calls:
            self._announce(call[0], call_id)
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
        """Back to answer text; `give_back` is text that looked like a call but was not (inside
        the thinking block: back to thinking)."""
        if self.in_thought:
            held = self.in_thought if isinstance(self.in_thought, str) else ""
            self.in_thought = False
            if give_back:
                self._reason(held + give_back)
                self.state, self.raw, self.reader = State.THINK, "", None
                return
        self._say(give_back)
        self.state, self.raw, self.reader = State.TEXT, "", None
        self.fresh, self.strip = not give_back, not give_back and not self.keep

    STATES = {State.THINK: _in_think, State.TEXT: _in_text, State.OPEN: _in_open, State.LIST: _in_open,
              State.CALL: _in_call, State.AFTER: _in_after}
