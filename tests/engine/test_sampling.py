"""The sequence sampler against llama.cpp's own chain (penalties, logit_bias, then greedy or the
random pick), token by token on the real model's logits: the same tokens, or the in-place
penalties and biases are not llama.cpp's."""
from __future__ import annotations

import ctypes

import llama_cpp as C
import numpy as np
import pytest

from unsloth_min.core import Sampling
from unsloth_min.engine import sampling as sampling_module
from unsloth_min.engine.constrain import Candidates
from unsloth_min.engine.model import Model
from unsloth_min.engine.sampling import PENALTY_LAST_N, TokenSampler, chain, logits_row
from support.models import embedded

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def model():
    yield from embedded(2048, 1, 512)


def llama_chain(s: Sampling, n_vocab: int, prompt: list[int]):
    """What the scheduler built before: every step in llama.cpp's chain."""
    c = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
    rep, freq, pres = s.repetition_penalty or 1.0, s.frequency_penalty or 0.0, s.presence_penalty or 0.0
    if rep != 1.0 or freq or pres:
        pen = C.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, rep, freq, pres)
        for t in prompt[-PENALTY_LAST_N:]:
            C.llama_sampler_accept(pen, t)
        C.llama_sampler_chain_add(c, pen)
    if s.logit_bias:
        biases = (C.llama_logit_bias * len(s.logit_bias))(*[C.llama_logit_bias(*b) for b in s.logit_bias])
        C.llama_sampler_chain_add(c, C.llama_sampler_init_logit_bias(n_vocab, len(biases), biases))
    rest = chain(s)  # (greedy, or top_k … dist: moved into this chain one by one)
    while C.llama_sampler_chain_n(rest):
        C.llama_sampler_chain_add(c, C.llama_sampler_chain_remove(rest, 0))
    C.llama_sampler_free(rest)
    return c


def decode(model: Model, tokens: list[int], pos: int) -> None:
    C.llama_memory_seq_rm(model.memory, 0, pos, -1)
    arr = (C.llama_token * len(tokens))(*tokens)
    batch = C.llama_batch_get_one(arr, len(tokens))
    assert C.llama_decode(model.ctx, batch) == 0


@pytest.mark.parametrize("kind", ["greedy", "penalties", "bias", "all", "sampled", "sampled+all"])
def test_the_same_tokens_as_llama_cpps_chain(model, kind):
    prompt = model.tokenize("<|im_start|>user\nList the planets, then the planets again, and again."
                            "<|im_end|>\n<|im_start|>assistant\n", add_bos=False)
    favoured = model.tokenize(" the")[0]
    knobs = {"greedy": {}, "penalties": dict(repetition_penalty=1.3, frequency_penalty=0.4, presence_penalty=0.3),
             "bias": dict(logit_bias=((favoured, 3.5), (2, -100.0)))}
    knobs["all"] = {**knobs["penalties"], **knobs["bias"]}
    knobs["sampled"] = dict(temperature=0.9, top_k=40, top_p=0.95, min_p=0.05, seed=7)
    knobs["sampled+all"] = {**knobs["sampled"], **knobs["all"]}
    s = Sampling(**{"temperature": 0, **knobs[kind]})
    ours, theirs = TokenSampler(s, model.n_vocab, prompt), llama_chain(s, model.n_vocab, prompt)
    try:
        decode(model, prompt, 0)
        pos, picked = len(prompt), []
        for _ in range(48):
            expected = C.llama_sampler_sample(theirs, model.ctx, -1)  # (reads the logits, unchanged)
            got = ours.sample(model.ctx, -1)
            assert got == expected, (kind, len(picked), model.piece(got), model.piece(expected))
            picked.append(got)
            decode(model, [got], pos)
            pos += 1
        assert len(set(picked)) > 5
    finally:
        ours.free()
        C.llama_sampler_free(theirs)


def test_adjusted_logits_are_llama_cpps_to_the_bit(model):
    """Penalties (repeat, frequency, presence) and biases on the row in place give exactly the
    logits llama.cpp's samplers give its candidate array, step after step of the window."""
    prompt = model.tokenize("<|im_start|>user\nCount: one two one two one two<|im_end|>\n"
                            "<|im_start|>assistant\n", add_bos=False)
    s = Sampling(temperature=0, repetition_penalty=1.3, frequency_penalty=0.4, presence_penalty=0.3,
                 logit_bias=((model.tokenize(" two")[0], 2.5), (2, -100.0)))
    ours = TokenSampler(s, model.n_vocab, prompt)
    theirs = llama_chain(s, model.n_vocab, prompt)
    C.llama_sampler_chain_remove(theirs, C.llama_sampler_chain_n(theirs) - 1)  # (greedy: not applied)
    cand = Candidates(model.n_vocab)
    try:
        decode(model, prompt, 0)
        pos = len(prompt)
        for _ in range(24):
            C.llama_sampler_apply(theirs, cand.fill(model.ctx, -1))
            row = ours.adjust(model.ctx, -1)
            assert np.array_equal(row, cand.buf["logit"]), np.flatnonzero(row != cand.buf["logit"])
            token = int(row.argmax())
            ours.accept(token)
            C.llama_sampler_accept(theirs, token)
            decode(model, [token], pos)
            pos += 1
    finally:
        ours.free()
        C.llama_sampler_free(theirs)


def test_penalties_and_biases_change_the_greedy_pick(model):
    """The in-place adjustment is not a no-op: the penalties turn a repeating greedy answer away
    from its loop, and a bias of +100 on a token makes it the pick."""
    prompt = model.tokenize("<|im_start|>user\nSay hello hello hello hello hello<|im_end|>\n"
                            "<|im_start|>assistant\nhello hello hello hello", add_bos=False)
    hello = model.tokenize(" hello")[0]
    decode(model, prompt, 0)
    plain = TokenSampler(Sampling(temperature=0), model.n_vocab, prompt)
    assert plain.sample(model.ctx, -1) == hello  # the model goes on repeating
    decode(model, prompt, 0)
    penalized = TokenSampler(Sampling(temperature=0, repetition_penalty=3.0), model.n_vocab, prompt)
    assert penalized.sample(model.ctx, -1) != hello
    decode(model, prompt, 0)
    biased = TokenSampler(Sampling(temperature=0, logit_bias=((1234, 100.0),)), model.n_vocab, prompt)
    assert biased.sample(model.ctx, -1) == 1234
    for t in (plain, penalized, biased):
        t.free()


def test_the_penalty_window_is_the_last_64_tokens_accepted():
    t = TokenSampler(Sampling(temperature=0, repetition_penalty=1.1), 100, [5] * 70 + [-3, 6])
    assert t.counts == {5: 62, 6: 1} and len(t.window) == PENALTY_LAST_N - 1  # (an image's -3: skipped)
    for _ in range(63):
        t.accept(7)
    assert t.counts == {6: 1, 7: 63}
    t.accept(8)
    assert t.counts == {7: 63, 8: 1}
    t.free()


def test_a_missing_logits_row_is_an_error_not_a_crash(model):
    decode(model, model.tokenize("Hi"), 0)
    with pytest.raises(RuntimeError, match="no logits"):
        logits_row(model.ctx, 5, model.n_vocab)  # (only the last token has logits)


def test_sampling_keeps_the_gil_and_reads_llama_cpps_buffer(model):
    """gil_held calls the same C function (the pointer llama_cpp's binding holds), and the row is
    a view of llama.cpp's own logits, not a copy: what adjust() writes, llama.cpp's sampler reads."""
    held = sampling_module.gil_held(C.llama_get_logits_ith)
    assert ctypes.cast(held, ctypes.c_void_p).value == ctypes.cast(C.llama_get_logits_ith, ctypes.c_void_p).value
    assert held._flags_ & ctypes._FUNCFLAG_PYTHONAPI
    decode(model, model.tokenize("Hi there"), 0)
    row = logits_row(model.ctx, -1, model.n_vocab)
    theirs = np.ctypeslib.as_array(C.llama_get_logits_ith(model.ctx, -1), shape=(model.n_vocab,))
    assert np.array_equal(row, theirs) and row.ctypes.data == theirs.ctypes.data
    assert logits_row(model.ctx, -1, model.n_vocab) is row  # (kept by address)
