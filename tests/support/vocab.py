"""The embedded model's vocabulary alone (no weights), and walks of a grammar over a text's
tokens as llama.cpp's sampler would take them: what a grammar allows, token by token.
"""
from __future__ import annotations

import ctypes

import llama_cpp as C

from unsloth_min.engine.constrain import Candidates, Constraint, grammar_sampler
from unsloth_min.engine.model import _init_backend


class Vocab:
    def __init__(self, path: str):
        _init_backend()  # llama.cpp's log goes to `logging`
        params = C.llama_model_default_params()
        params.vocab_only = True
        self.model = C.llama_model_load_from_file(path.encode(), params)
        self.vocab = C.llama_model_get_vocab(self.model)
        self.cand = Candidates(C.llama_vocab_n_tokens(self.vocab))
        self.eos = C.llama_vocab_eos(self.vocab)

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        buf = (C.llama_token * (len(data) + 8))()
        n = C.llama_tokenize(self.vocab, data, len(data), buf, len(buf), False, True)
        return list(buf[:n])

    def walk(self, grammar, text: str, end: bool = True) -> str:
        """'ok', or the text up to the first refused token."""
        smpl = grammar_sampler(self.vocab, grammar.gbnf, grammar.triggers)
        assert smpl, "llama.cpp rejected the grammar"
        try:
            done = b""
            for tok in self.tokenize(text):
                if not self.cand.allows(smpl, tok):
                    return "refused after " + done.decode(errors="replace")
                C.llama_sampler_accept(smpl, tok)
                done += self.piece(tok)
            if end and not self.cand.allows(smpl, self.eos):
                return "no end allowed"
            return "ok"
        finally:
            C.llama_sampler_free(smpl)

    def walk_watched(self, grammar, text: str) -> tuple[str, Constraint]:
        """As the scheduler samples: the grammar checks tokens once its Constraint has started it."""
        c = Constraint(self.vocab, grammar, self.piece)
        try:
            done = b""
            for tok in self.tokenize(text):
                if c.sampler is None:
                    c.watch(tok)
                elif not self.cand.allows(c.sampler, tok):
                    return "refused after " + done.decode(errors="replace"), c
                else:
                    C.llama_sampler_accept(c.sampler, tok)
                done += self.piece(tok)
            return "ok", c
        finally:
            c.free()

    def endless(self) -> dict:
        """A `logit_bias` that bans every end-of-generation token: a greedy or sampled stream
        that runs to its max_tokens, whatever the model would have said."""
        n = C.llama_vocab_n_tokens(self.vocab)
        return {str(t): -100 for t in range(n) if C.llama_vocab_is_eog(self.vocab, t)}

    def piece(self, tok: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = C.llama_token_to_piece(self.vocab, tok, buf, 64, 0, True)
        return buf.raw[:n]
