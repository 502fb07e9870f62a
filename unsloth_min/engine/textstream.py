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
        keep = self._partial_stop(text)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep], None

    def _partial_stop(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        best = 0
        for s in self._stops:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best

    def flush(self) -> str:
        """Everything still held (the stream ended without a stop string)."""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text
