"""Token bytes → text deltas: UTF-8 safe, with stop strings held back until they cannot match.

Strategy: an incremental UTF-8 decoder keeps a character split across tokens until it is whole;
text that could be the start of a stop string is held, not sent, so a client never sees a stop
string or half of one. Pure and synchronous; the scheduler calls it once per token.
"""
from __future__ import annotations

import codecs


def partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    i = text.find(marker[0], max(0, len(text) - len(marker) + 1))
    while i != -1:
        if marker.startswith(text[i:]):
            return len(text) - i
        i = text.find(marker[0], i + 1)
    return 0


class TextStream:
    def __init__(self, stops: tuple[str, ...] = ()):
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def push(self, data: bytes) -> tuple[str, str | None]:
        """Feed one token's bytes: (text safe to send now, the stop string hit or None)."""
        text = self._held + self._decoder.decode(data)
        if not self._stops:
            self._held = ""
            return text, None
        hit, at = None, len(text)
        for s in self._stops:
            i = text.find(s)
            if i != -1 and i < at:
                hit, at = s, i
        if hit is not None:
            self._held = ""
            return text[:at], hit
        keep = max(partial_suffix(text, s) for s in self._stops)  # may start a stop string
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep], None

    def flush(self) -> str:
        """Everything still held (the stream ended without a stop string)."""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text
