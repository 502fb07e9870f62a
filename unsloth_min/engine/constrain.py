"""Grammar-constrained sampling that costs almost nothing while the model already complies.

Strategy: checking a GBNF grammar against every token of the vocabulary costs ~10 ms per token for a
49k vocabulary, on the worker thread that samples for every running stream. So, as llama.cpp's
`common_sampler` does, the ordinary sampler chain picks a token from the logits first, and the
grammar judges only that one token; only when it rejects it are all candidates filtered by the
grammar and the chain applied again. Both samplers then accept the final token. The candidates
live in one reused numpy buffer laid out as `llama_token_data[]`.

A lazy grammar is not handed to llama.cpp until it is needed: llama.cpp would run its trigger
regexes over *all* the text generated so far at every token (quadratic over a long answer).
`Constraint` watches the same regexes over a short window of recent text (every trigger matches
at most a few dozen bytes at the end), and when one matches creates llama.cpp's lazy sampler and
replays the window's tokens into it: llama.cpp fires the trigger itself and feeds the grammar the
exact text from the match on, partial tokens included.

Does not: build grammars (grammar.py) or decide when to sample (scheduler.py). Not thread-safe:
the scheduler's worker thread is its only user.
"""
from __future__ import annotations

import collections
import ctypes
import logging
import math
import re
from typing import Callable

from .grammar import Grammar
from .sampling import logits_row

import llama_cpp as C
import numpy as np

log = logging.getLogger("unsloth_min.engine")
WINDOW = 192  # bytes of recent text watched for a trigger: far more than any trigger spans

TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # = llama_token_data
assert TOKEN_DATA.itemsize == ctypes.sizeof(C.llama_token_data)


def grammar_sampler(vocab, gbnf: str, triggers: tuple[str, ...]):
    """A llama.cpp grammar sampler (lazy when there are triggers), or None if it is rejected."""
    if not triggers:
        return C.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root") or None
    patterns = (ctypes.c_char_p * len(triggers))(*(p.encode() for p in triggers))
    return C.llama_sampler_init_grammar_lazy_patterns(vocab, gbnf.encode(), b"root", patterns,
                                                      len(triggers), None, 0) or None


class Constraint:
    """One sequence's grammar: eager from the start, or lazy and started by its triggers."""

    def __init__(self, vocab, grammar: Grammar, piece: Callable[[int], bytes]):
        self.vocab, self.gbnf, self.triggers, self.piece = vocab, grammar.gbnf, grammar.triggers, piece
        self.sampler = None
        self.failed = False
        self.watched = [re.compile(p.encode()) for p in grammar.triggers]
        self.after = grammar.after.encode()  # until written, nothing triggers (inside thinking)
        self.recent: collections.deque = collections.deque()  # (token, bytes) in the window
        self.size = 0
        self.at_start = True  # the window still begins at the answer's first token (for `^`)
        if not grammar.lazy:
            self._start()

    @property
    def waiting(self) -> bool:
        return self.sampler is None and not self.failed

    def _start(self) -> None:
        self.sampler = grammar_sampler(self.vocab, self.gbnf, self.triggers)
        if self.sampler is None:  # llama.cpp logged why; the output parser still reads the answer
            self.failed = True
            log.warning("llama.cpp rejected the grammar: decoding without it")
            return
        for token, _ in self.recent:  # the lazy sampler's own trigger fires on these
            C.llama_sampler_accept(self.sampler, token)
        self.recent.clear()

    def watch(self, token: int) -> None:
        """A token sampled while waiting: start the grammar if a trigger now matches."""
        piece = self.piece(token)
        self.recent.append((token, piece))
        self.size += len(piece)
        while self.size - len(self.recent[0][1]) >= WINDOW:
            self.size -= len(self.recent.popleft()[1])
            self.at_start = False
        text = b"".join(p for _, p in self.recent)
        if self.after:
            end = text.find(self.after)
            if end == -1:
                return
            self._forget_through(end + len(self.after))
            text = b"".join(p for _, p in self.recent)
        if any(w.search(text) for w in self.watched if self.at_start or not w.pattern.startswith(b"^")):
            self._start()

    def _forget_through(self, end: int) -> None:
        """The thinking ended at byte `end` of the window: from now on the window (replayed into
        llama.cpp's lazy sampler, whose triggers must not see the thinking) starts after it. A
        token that ends the marker and begins the answer goes too: its answer part is not watched."""
        while self.recent and end > 0:
            end -= len(self.recent.popleft()[1])
        self.size = sum(len(p) for _, p in self.recent)
        self.after, self.at_start = b"", True

    def free(self) -> None:
        if self.sampler is not None:
            C.llama_sampler_free(self.sampler)
            self.sampler = None


class Candidates:
    """One llama_token_data_array over the whole vocabulary, refilled from logits."""

    def __init__(self, n_vocab: int):
        self.n = n_vocab
        self.ids = np.arange(n_vocab, dtype=np.int32)
        self.buf = np.zeros(n_vocab, dtype=TOKEN_DATA)
        self.array = C.llama_token_data_array(
            self.buf.ctypes.data_as(ctypes.POINTER(C.llama_token_data)), n_vocab, -1, False)
        self.one = (C.llama_token_data * 1)()
        self.one_array = C.llama_token_data_array(self.one, 1, -1, False)

    def fill(self, ctx, idx: int):
        logits = logits_row(ctx, idx, self.n)
        self.buf["id"] = self.ids  # samplers sort the array in place: reset every time
        self.buf["logit"] = logits
        self.buf["p"] = 0.0
        a = self.array
        a.size, a.selected, a.sorted = self.n, -1, False
        return ctypes.byref(a)

    def allows(self, grammar, token: int) -> bool:
        self.one[0].id, self.one[0].logit, self.one[0].p = token, 0.0, 0.0
        a = self.one_array
        a.size, a.selected, a.sorted = 1, -1, False
        C.llama_sampler_apply(grammar, ctypes.byref(a))
        return not math.isinf(self.one[0].logit)

    def selected(self) -> int:
        a = self.array
        return a.data[a.selected].id


def sample(chain, grammar, cand: Candidates, ctx, idx: int) -> int:
    """One token from `chain` that `grammar` allows; both samplers accept it."""
    C.llama_sampler_apply(chain, cand.fill(ctx, idx))
    token = cand.selected()
    if not cand.allows(grammar, token):
        arr = cand.fill(ctx, idx)
        C.llama_sampler_apply(grammar, arr)
        C.llama_sampler_apply(chain, arr)
        token = cand.selected()
    C.llama_sampler_accept(grammar, token)
    C.llama_sampler_accept(chain, token)
    return token
