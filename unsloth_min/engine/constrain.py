"""Grammar-constrained sampling that costs almost nothing while the model already complies.

Strategy: checking a GBNF grammar against every token of the vocabulary costs ~10 ms per token for a
49k vocabulary, on the worker thread that samples for every running stream. So, as llama.cpp's
`common_sampler` does, the ordinary sampler chain picks a token from the logits first, and the
grammar judges only that one token; only when it rejects it are all candidates filtered by the
grammar and the chain applied again. Both samplers then accept the final token (a lazy grammar
uses it to watch for its trigger). The candidates live in one reused numpy buffer laid out as
`llama_token_data[]`.

Does not: build grammars (grammar.py) or decide when to sample (scheduler.py). Not thread-safe:
the scheduler's worker thread is its only user.
"""
from __future__ import annotations

import ctypes
import math

import llama_cpp as C
import numpy as np

TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # = llama_token_data
assert TOKEN_DATA.itemsize == ctypes.sizeof(C.llama_token_data)


def grammar_sampler(vocab, gbnf: str, triggers: tuple[str, ...]):
    """A llama.cpp grammar sampler (lazy when there are triggers), or None if it is rejected."""
    if not triggers:
        return C.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root") or None
    patterns = (ctypes.c_char_p * len(triggers))(*(p.encode() for p in triggers))
    return C.llama_sampler_init_grammar_lazy_patterns(vocab, gbnf.encode(), b"root", patterns,
                                                      len(triggers), None, 0) or None


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
        logits = np.ctypeslib.as_array(C.llama_get_logits_ith(ctx, idx), shape=(self.n,))
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
