"""The scheduler: one worker thread decodes every running sequence in shared llama.cpp batches.

Strategy: the model has `n_parallel` slots, each a llama.cpp sequence id with its own KV cells.
A request becomes a `Sequence`; it waits in a FIFO queue (bounded: beyond it, 503) until a slot is
free, takes the free slot whose cached tokens share the longest prefix with its prompt, and
evaluates only the rest. Each step builds one `llama_batch`: one token for every decoding sequence,
then prompt chunks of prefilling ones in the room left (chunked prefill, so a long prompt never
stalls running streams), one `llama_decode`, then one sample per sequence with its own sampler
chain. Events leave through each sequence's `emit` callback (thread-safe, set by the caller),
gathered during a step and handed over just before the next `llama_decode`: the event loop then
wakes while the worker waits in C without the GIL, instead of taking the GIL in the middle of the
worker's Python work (each ctypes call releases it) and stalling the next decode.
A prompt may hold images (vision.py): negative pseudo-tokens in `prompt`, plus a `media` chunk at
each image's start. When prefill reaches one, the chunk is evaluated on its own, before the shared
batch (embeddings cannot share a llama_batch with tokens), and a cached prefix never ends inside one.
ctypes releases the GIL inside llama.cpp, so the event loop runs while the model computes.

A sequence may carry a GBNF grammar (grammar.py), eager or lazy: it is checked against the token
the chain picks, and filters the whole vocabulary only when it rejects it (constrain.py).

Does not: render or tokenize prompts, parse thinking or tool calls, or know about asyncio.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import llama_cpp as C

from ..core import ApiError, Finish, Sampling, TextDelta, Usage
from .constrain import Candidates, Constraint, sample
from .grammar import Grammar
from .model import Model
from .textstream import TextStream

log = logging.getLogger("unsloth_min.engine")
RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp picks a random seed
PENALTY_LAST_N = 64       # llama.cpp's default window for repetition penalties
MAX_QUEUE = 128           # waiting requests before a 503: 100 concurrent clients all get served


@dataclass(eq=False)
class Sequence:
    prompt: list[int]
    sampling: Sampling           # complete: merged with the server defaults
    max_tokens: int
    emit: Callable[[object], None]
    grammar: Grammar | None = None  # constrains the answer (eager, or lazy with triggers)
    special: frozenset = frozenset()  # control tokens shown as text (format markers)
    media: dict = field(default_factory=dict)  # prompt index → image chunk (n_tokens, evaluate())
    cancelled: bool = False
    stop: bool = False           # set by the consumer: finish ("stop") instead of the next token
    # scheduler state
    n_done: int = 0              # prompt tokens already in the KV cache
    cached: int = 0              # of which reused from an earlier request
    n_generated: int = 0
    last: int = -1               # the sampled token still to be decoded
    sampler: object = None
    constraint: object = None    # the grammar, kept out of the chain (constrain.Constraint)
    text: TextStream = field(default=None)
    slot: "Slot" = None

    @property
    def prefilling(self) -> bool:
        return self.n_done < len(self.prompt)


@dataclass(eq=False)
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # exactly the tokens whose KV this slot holds
    seq: Sequence | None = None


@dataclass
class StepTimes:
    """Where the worker's time goes, summed over the server's life and logged at shutdown (the
    Python per token against the decode). `python` is the step's own work: building the batch,
    detokenizing, stop strings, handing events over; `sample` is sampling, mostly llama.cpp's."""
    steps: int = 0
    tokens: int = 0      # sampled
    decode: float = 0.0  # seconds inside llama_decode (prompt chunks included)
    sample: float = 0.0
    python: float = 0.0

    def summary(self) -> str:
        per = 1000 / max(self.tokens, 1)
        return (f"{self.tokens} tokens in {self.steps} steps; per sampled token: llama_decode "
                f"{self.decode * per:.2f} ms, sampling {self.sample * per:.3f} ms, "
                f"scheduler Python {self.python * per:.3f} ms")


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Scheduler:
    def __init__(self, model: Model, max_queue: int = MAX_QUEUE):
        self.model = model
        self.max_queue = max_queue
        self.slots = [Slot(i) for i in range(model.params.n_parallel)]
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._cv = threading.Condition()
        self._stop = False
        self._batch = C.llama_batch_init(model.params.n_batch, 0, 1)
        self._candidates: Candidates | None = None  # for grammar-constrained sampling
        self._outbox: list[tuple[Sequence, object]] = []  # events of this step, not yet handed over
        self.times = StepTimes()
        self._thread = threading.Thread(target=self._run, name="unsloth-engine", daemon=True)
        self._warmed = threading.Event()
        self._warm_up_error: Exception | None = None
        self._thread.start()
        self._warmed.wait()
        if self._warm_up_error is not None:  # the worker has ended: nothing to stop
            C.llama_batch_free(self._batch)
            raise self._warm_up_error

    # ---- called from other threads ---------------------------------------------------------------
    def submit(self, seq: Sequence) -> None:
        with self._cv:
            if len(self._waiting) >= self.max_queue:
                raise ApiError(503, "overloaded_error", "the server is busy: too many queued requests",
                               headers=[("Retry-After", "1")])
            self._waiting.append(seq)
            self._cv.notify()

    def cancel(self, seq: Sequence) -> None:
        seq.cancelled = True
        with self._cv:
            if seq.slot is None and seq in self._waiting:  # give its queue place back now
                self._waiting.remove(seq)
            self._cv.notify()

    def fail_all(self, err: ApiError) -> None:
        """Every sequence, running or queued, ends with `err` now, from any thread: for when
        llama.cpp can run no more (the worker is stuck inside it). Touches nothing of llama.cpp."""
        with self._cv:
            seqs = self._active() + list(self._waiting)
            self._waiting.clear()
        for seq in seqs:
            seq.cancelled = True
            seq.emit(err)

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=10)
        C.llama_batch_free(self._batch)

    @property
    def busy(self) -> int:
        return sum(1 for s in self.slots if s.seq) + len(self._waiting)

    # ---- the worker thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:  # on this thread, which decodes from now on (Model.warm_up says why)
            self.model.warm_up()
        except Exception as e:
            self._warm_up_error = e
            return
        finally:
            self._warmed.set()
        while True:
            if not self._active():  # (while sequences run, the next step hands the events over)
                self._flush()
            with self._cv:
                while not self._stop and not self._waiting and not self._active():
                    self._cv.wait()
                if self._stop:
                    break
                # freed first: a client's retry of the request it just gave up on (Claude Code
                # after its stream watchdog) finds that slot, and the prefill it left, free
                self._drop_cancelled()
                self._admit()
            if self._active():
                try:
                    self._step()
                except Exception as e:  # a llama.cpp failure must not kill the worker
                    log.exception("decode step failed")
                    for seq in self._active():
                        self._finish_error(seq, e)
        for seq in self._active() + list(self._waiting):
            self._finish_error(seq, RuntimeError("the server is shutting down"))
        self._flush()
        if self.times.tokens:
            log.info("engine: %s", self.times.summary())

    def _active(self) -> list[Sequence]:
        return [s.seq for s in self.slots if s.seq is not None]

    def _admit(self) -> None:
        while self._waiting:
            seq = self._waiting[0]
            if seq.cancelled:
                self._waiting.popleft()
                continue
            free = [s for s in self.slots if s.seq is None]
            if not free:
                return
            self._waiting.popleft()
            slot = max(free, key=lambda s: common_prefix(s.tokens, seq.prompt))
            self._attach(seq, slot)

    def _attach(self, seq: Sequence, slot: Slot) -> None:
        n = common_prefix(slot.tokens, seq.prompt)
        n = min(n, len(seq.prompt) - 1)  # the last prompt token is always decoded: it gives logits
        n = next((s for s, m in seq.media.items() if s < n < s + m.n_tokens), n)  # no half images
        C.llama_memory_seq_rm(self.model.memory, slot.seq_id, n, -1)
        del slot.tokens[n:]
        seq.n_done = seq.cached = n
        seq.slot, slot.seq = slot, seq
        log.debug("slot %d: a prompt of %d tokens, %d of them cached", slot.seq_id, len(seq.prompt), n)
        seq.sampler = self._sampler(seq)
        if seq.grammar:
            seq.constraint = Constraint(self.model.vocab, seq.grammar,
                                        lambda t: self.model.piece(t, special=True))
        seq.text = TextStream(seq.sampling.stop)

    def _sampler(self, seq: Sequence):
        s, m = seq.sampling, self.model
        chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        add = lambda smpl: C.llama_sampler_chain_add(chain, smpl)  # noqa: E731
        rep, freq, pres = s.repetition_penalty or 1.0, s.frequency_penalty or 0.0, s.presence_penalty or 0.0
        if rep != 1.0 or freq or pres:
            pen = C.llama_sampler_init_penalties(m.n_vocab, PENALTY_LAST_N, rep, freq, pres)
            for t in seq.prompt[-PENALTY_LAST_N:]:
                if t >= 0:  # not an image's pseudo-token
                    C.llama_sampler_accept(pen, t)
            add(pen)
        if not s.temperature or s.temperature <= 0:
            add(C.llama_sampler_init_greedy())
            return chain
        if s.top_k and s.top_k > 0:
            add(C.llama_sampler_init_top_k(s.top_k))
        if s.top_p is not None and s.top_p < 1.0:
            add(C.llama_sampler_init_top_p(s.top_p, 1))
        if s.min_p:
            add(C.llama_sampler_init_min_p(s.min_p, 1))
        add(C.llama_sampler_init_temp(s.temperature))
        add(C.llama_sampler_init_dist(RANDOM_SEED if s.seed is None else s.seed & 0xFFFFFFFF))
        return chain

    def _drop_cancelled(self) -> None:
        for seq in self._active():
            if seq.cancelled:
                log.debug("slot %d: cancelled after %d of %d prompt tokens and %d generated",
                          seq.slot.seq_id, seq.n_done, len(seq.prompt), seq.n_generated)
                self._release(seq)

    def _step(self) -> None:
        """One llama_decode for every running sequence, then one sample each."""
        self._prefill_media()  # (image encoding: not in `times`)
        start = time.perf_counter()
        b, n_ctx = self._batch, self.model.n_ctx
        b.n_tokens = 0
        outputs: list[tuple[Sequence, int]] = []
        for seq in self._active():
            if seq.prefilling:
                continue
            if len(seq.slot.tokens) >= n_ctx:  # no room for the sampled token: the context is full
                self._finish(seq, "length")
                continue
            outputs.append((seq, self._add(seq.slot, seq.last, True)))
        room = self.model.params.n_batch - b.n_tokens
        for seq in self._active():
            if not seq.prefilling or room <= 0:
                continue
            end = min(len(seq.prompt), seq.n_done + room,
                      min((s for s in seq.media if s > seq.n_done), default=len(seq.prompt)))
            for i in range(seq.n_done, end):
                idx = self._add(seq.slot, seq.prompt[i], i == len(seq.prompt) - 1)
            room -= end - seq.n_done
            seq.n_done = end
            if not seq.prefilling:
                outputs.append((seq, idx))
        if b.n_tokens == 0:
            return
        self._flush()
        t0 = time.perf_counter()
        rc = C.llama_decode(self.model.ctx, b)
        t1 = time.perf_counter()
        if rc != 0:
            raise RuntimeError("the KV cache is full" if rc == 1 else f"llama_decode returned {rc}")
        sampling = 0.0
        for seq, idx in outputs:
            if not seq.cancelled:
                ts = time.perf_counter()
                token = self._sample(seq, idx)
                sampling += time.perf_counter() - ts
                self._on_token(seq, token)
        times = self.times
        times.steps += 1
        times.tokens += len(outputs)
        times.decode += t1 - t0
        times.sample += sampling
        times.python += time.perf_counter() - start - (t1 - t0) - sampling

    def _sample(self, seq: Sequence, idx: int) -> int:
        c = seq.constraint
        if c is None or c.sampler is None:
            token = C.llama_sampler_sample(seq.sampler, self.model.ctx, idx)
            if c is not None and c.waiting:
                c.watch(token)
            return token
        if self._candidates is None:
            self._candidates = Candidates(self.model.n_vocab)
        return sample(seq.sampler, c.sampler, self._candidates, self.model.ctx, idx)

    def _prefill_media(self) -> None:
        """Evaluate the images that prefilling sequences have reached, one sequence at a time."""
        for seq in self._active():
            try:
                while seq.prefilling and seq.n_done in seq.media:
                    self._eval_media(seq, seq.media[seq.n_done])
            except Exception as e:  # fails this request only
                log.exception("image evaluation failed")
                self._finish_error(seq, e)

    def _eval_media(self, seq: Sequence, chunk) -> None:
        slot = seq.slot
        self._flush()
        rc = chunk.evaluate(slot.seq_id, len(slot.tokens))
        if rc != 0:
            C.llama_memory_seq_rm(self.model.memory, slot.seq_id, len(slot.tokens), -1)
            raise RuntimeError("the KV cache is full" if rc == 1 else f"image evaluation returned {rc}")
        slot.tokens += seq.prompt[seq.n_done:seq.n_done + chunk.n_tokens]
        seq.n_done += chunk.n_tokens

    def _add(self, slot: Slot, token: int, logits: bool) -> int:
        b = self._batch
        i = b.n_tokens
        b.token[i] = token
        b.pos[i] = len(slot.tokens)
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = slot.seq_id
        b.logits[i] = logits
        b.n_tokens = i + 1
        slot.tokens.append(token)
        return i

    def _on_token(self, seq: Sequence, token: int) -> None:
        if seq.stop or self.model.is_eog(token):
            return self._finish(seq, "stop")
        seq.n_generated += 1
        seq.last = token
        text, stop = seq.text.push(self.model.piece(token, token in seq.special))
        if text:
            self._emit(seq, TextDelta(text))
        if stop is not None:
            self._finish(seq, "stop_sequence", stop)
        elif seq.n_generated >= seq.max_tokens:
            self._finish(seq, "length")

    def _emit(self, seq: Sequence, ev) -> None:
        self._outbox.append((seq, ev))

    def _flush(self) -> None:
        box, self._outbox = self._outbox, []
        for seq, ev in box:
            seq.emit(ev)

    def _finish(self, seq: Sequence, reason: str, stop: str | None = None) -> None:
        rest = seq.text.flush() if stop is None else ""
        if rest:
            self._emit(seq, TextDelta(rest))
        usage = Usage(len(seq.prompt), seq.n_generated, seq.cached)
        self._emit(seq, Finish(reason, usage, stop))
        self._release(seq)

    def _finish_error(self, seq: Sequence, err: Exception) -> None:
        self._emit(seq, ApiError(500, "server_error", f"generation failed: {err}"))
        if seq.slot is not None:  # its KV state is unknown after a failed step: forget it
            C.llama_memory_seq_rm(self.model.memory, seq.slot.seq_id, 0, -1)
            seq.slot.tokens.clear()
        self._release(seq)

    def _release(self, seq: Sequence) -> None:
        """Free the slot; its KV cells stay as a prefix cache for the next request."""
        if seq.slot is not None:
            seq.slot.seq = None
        if seq.sampler is not None:
            C.llama_sampler_free(seq.sampler)
        if seq.constraint is not None:
            seq.constraint.free()
        seq.sampler = seq.constraint = None
