"""Qwen3-Coder's XML tool calls, read as they arrive: the OutputParser's `fname` and `xml` states.

Strategy: `<tool_call><function=NAME><parameter=KEY>\nvalue\n</parameter>…</function></tool_call>`.
After output.py's `open` state has seen `<function=`:
  fname  the function's name, up to `>`: then the call is announced (id + name)
  xml    the body: each parameter is read whole (its value is raw text up to the first
         `</parameter>`) and converted by the type its tool's JSON schema gives it (`xml_value`),
         then the first call streams it as the next piece of a JSON object; `</function>` (or
         `</tool_call>`) ends the call
A name that is no name gives the marker back as text; a cut-off call closes its object, with the
cut parameter's text so far. This is a mixin of `OutputParser` (output.py), whose buffer, call
bookkeeping and emitting it shares.

Does not: type values (xmlvalues.py), or watch for `<tool_call>` in the text (output.py).
"""
from __future__ import annotations

import json
import re

from ..core import ToolCallDelta
from .textstream import partial_suffix
from .xmlvalues import WS, property_schema, xml_value

FUNC, FUNC_END = "<function=", "</function>"
PARAM, PARAM_END = "<parameter=", "</parameter>"
XML_NAME = re.compile(r"[^\s<>]{0,256}")  # a function or parameter name (an over-long one is none)


class XmlCalls:
    """The XML call states; `OutputParser` supplies buf, fmt, schemas, calls and the emitters."""

    def _in_fname(self) -> bool:
        buf = self.buf
        end = buf.find(">")
        name = buf if end == -1 else buf[:end]
        if not XML_NAME.fullmatch(name) or end == 0:  # not a name: the marker was text
            self._after_calls(self.raw)
            return True
        if end == -1:
            return False
        self.buf, self.raw = buf[end + 1:], ""
        self.state, self.name, self.key, self.pieces, self.index = "xml", name, None, [], None
        if not self.calls:  # the first call streams; later ones come out whole (see _end_xml)
            self._announce(name)
        return True

    def _in_xml(self) -> bool:
        if self.key is not None:
            return self._in_value()
        s = self.buf = self.buf.lstrip(WS)
        if s.startswith(PARAM):
            end = s.find(">")
            key = s[len(PARAM):] if end == -1 else s[len(PARAM):end]
            if XML_NAME.fullmatch(key):
                if end == -1:
                    return False
                self.key, self.buf, self.scanned = key, s[end + 1:], 0
                return True
        elif s.startswith(FUNC_END) or s.startswith(self.fmt.close):  # (`</tool_call>`: lenient)
            if s.startswith(FUNC_END):
                self.buf = s[len(FUNC_END):]
            self._end_xml(complete=True)
            return True
        elif not s or any(m.startswith(s) for m in (PARAM, FUNC_END, self.fmt.close)):
            return False
        nxt = s.find("<", 1)  # anything else inside the call is skipped, up to the next tag
        self.buf = s[nxt:] if nxt != -1 else ""
        return bool(self.buf)

    def _in_value(self) -> bool:
        buf = self.buf
        end = buf.find(PARAM_END, self.scanned)
        if end == -1:
            self.scanned = max(0, len(buf) - len(PARAM_END) + 1)
            return False
        self._param(buf[:end])
        self.buf = buf[end + len(PARAM_END):]
        return True

    def _param(self, raw: str) -> None:
        value = xml_value(raw, property_schema(self.schemas.get(self.name), self.key))
        piece = ("{" if not self.pieces else ", ") + json.dumps(self.key, ensure_ascii=False) + ": " \
            + json.dumps(value, ensure_ascii=False)
        self.pieces.append(piece)
        self.key = None
        if self.index is not None:
            self.out.append(ToolCallDelta(self.index, arguments=piece))

    def _end_xml(self, complete: bool) -> None:
        """`</function>` (or the end of generation inside the call)."""
        if self.index is None and not complete:  # a later call, cut off: dropped
            return
        if not complete and self.key is not None:  # the cut parameter keeps what it had
            self._param(self.buf[:len(self.buf) - partial_suffix(self.buf, PARAM_END)])
        tail = "}" if self.pieces else "{}"
        call = (self.name, "".join(self.pieces) + tail)
        if self.index is not None:  # the streamed first call
            self.out.append(ToolCallDelta(self.index, arguments=tail))
            self.cut = not complete
        else:
            self._emit_whole(call)
        self._done(call)
