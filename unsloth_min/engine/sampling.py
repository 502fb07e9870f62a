"""One sequence's sampler: llama.cpp's chain, with the steps that touch a few tokens done on the
logits themselves.

Strategy: llama.cpp's `llama_sampler_sample` first copies all logits into a candidate array (49k
entries for SmolLM2), and its repetition penalties then look every candidate up in a hash map:
55 µs for a greedy pick, 150 µs with penalties, per token, on the worker thread that every
stream waits for. But penalties and `logit_bias` change at most a few dozen logits, and a greedy
pick is an argmax. So both are applied in place to the decode's logits row (a numpy view; the
row is the sequence's own and is read once), with llama.cpp's exact arithmetic, and a greedy
sequence takes the first largest logit as llama.cpp's greedy sampler does (5 µs); any other
sequence then samples with a chain of the remaining samplers, which reads the adjusted row.
The penalty window is llama.cpp's: the last PENALTY_LAST_N tokens accepted, the prompt's tail
included.

Does not: decide which sequences sample (scheduler.py) or apply grammars (constrain.py).
"""
from __future__ import annotations

import collections
import ctypes

import llama_cpp as C
import numpy as np

from ..core import Sampling

RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp picks a random seed
PENALTY_LAST_N = 64       # llama.cpp's default window for repetition penalties


def gil_held(fn, restype=None):
    """The same C function, called without releasing the GIL: for calls of microseconds on the
    worker's path, where releasing it lets the event loop in and the worker waits for it."""
    proto = ctypes.PYFUNCTYPE(restype or fn.restype, *fn.argtypes)
    return proto(ctypes.cast(fn, ctypes.c_void_p).value)


_logits_at = gil_held(C.llama_get_logits_ith, ctypes.c_void_p)  # (an int: no pointer object)
_sample = gil_held(C.llama_sampler_sample)
_rows: dict[tuple[int, int], np.ndarray] = {}  # (address, n_vocab) → a view of llama.cpp's row


def logits_row(ctx, idx: int, n_vocab: int) -> np.ndarray:
    """The decode's logits for output `idx`: a writable view of llama.cpp's buffer. Views are
    kept by address: right after a decode, the worker's Python runs with cold caches (the
    weights went through them), and making a view costs more than the argmax over it."""
    address = _logits_at(ctx, idx)
    if not address:  # (llama.cpp logged why)
        raise RuntimeError(f"llama.cpp has no logits for output {idx}")
    row = _rows.get((address, n_vocab))
    if row is None:
        if len(_rows) >= 256:  # (a new output buffer: the old addresses are gone)
            _rows.clear()
        row = _rows[(address, n_vocab)] = np.frombuffer(
            (ctypes.c_float * n_vocab).from_address(address), dtype=np.float32)
    return row


def is_greedy(s: Sampling) -> bool:
    return not s.temperature or s.temperature <= 0


class TokenSampler:
    """A sequence's penalty window and biases, applied to its logits row, then the pick."""

    def __init__(self, s: Sampling, n_vocab: int, prompt: list[int]):
        self.n_vocab = n_vocab
        self.repeat = np.float32(s.repetition_penalty or 1.0)
        self.freq = np.float32(s.frequency_penalty or 0.0)
        self.present = np.float32(s.presence_penalty or 0.0)
        self.penalized = self.repeat != 1.0 or self.freq != 0.0 or self.present != 0.0
        self.window: collections.deque[int] = collections.deque()
        self.counts: dict[int, int] = {}
        if self.penalized:
            for t in prompt[-PENALTY_LAST_N:]:
                if t >= 0:  # not an image's pseudo-token
                    self.accept(t)
        self.bias_ids = np.array([t for t, _ in s.logit_bias], dtype=np.intp)
        self.bias = np.array([b for _, b in s.logit_bias], dtype=np.float32)
        self.greedy = is_greedy(s)
        self.chain = chain(s)

    def accept(self, token: int) -> None:
        """llama.cpp's penalty window: a count per token over the last PENALTY_LAST_N."""
        if not self.penalized:
            return
        self.counts[token] = self.counts.get(token, 0) + 1
        self.window.append(token)
        if len(self.window) > PENALTY_LAST_N:
            old = self.window.popleft()
            self.counts[old] -= 1
            if not self.counts[old]:
                del self.counts[old]

    def adjust(self, ctx, idx: int) -> np.ndarray:
        """Penalties, then biases, on the row of output `idx` (the order of llama.cpp's chain
        as we built it before, and of llama-server's)."""
        row = logits_row(ctx, idx, self.n_vocab)
        if self.penalized and self.counts:
            ids = np.fromiter(self.counts, dtype=np.intp, count=len(self.counts))
            n = np.fromiter(self.counts.values(), dtype=np.float32, count=len(self.counts))
            v = row[ids]
            v = np.where(v <= 0, v * self.repeat, v / self.repeat)
            row[ids] = v - (n * self.freq + self.present)
        if self.bias_ids.size:
            row[self.bias_ids] += self.bias
        return row

    def sample(self, ctx, idx: int) -> int:
        row = self.adjust(ctx, idx)
        if self.greedy:  # llama.cpp's greedy sampler: the first of the largest
            token = int(row.argmax())
        else:  # (reads the adjusted row; accepts the token into the chain itself)
            token = _sample(self.chain, ctx, idx)
        self.accept(token)
        return token

    def free(self) -> None:
        C.llama_sampler_free(self.chain)


def chain(s: Sampling):
    """llama.cpp's chain for what is left after penalties and biases: greedy, or llama-server's
    order of truncations, temperature and the random pick."""
    c = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
    add = lambda smpl: C.llama_sampler_chain_add(c, smpl)  # noqa: E731
    if is_greedy(s):
        add(C.llama_sampler_init_greedy())  # (what a grammar-constrained pick applies)
        return c
    if s.top_k and s.top_k > 0:
        add(C.llama_sampler_init_top_k(s.top_k))
    if s.typical_p is not None and s.typical_p < 1.0:
        add(C.llama_sampler_init_typical(s.typical_p, 1))
    if s.top_p is not None and s.top_p < 1.0:
        add(C.llama_sampler_init_top_p(s.top_p, 1))
    if s.min_p:
        add(C.llama_sampler_init_min_p(s.min_p, 1))
    add(C.llama_sampler_init_temp(s.temperature))
    add(C.llama_sampler_init_dist(RANDOM_SEED if s.seed is None else s.seed & 0xFFFFFFFF))
    return c
