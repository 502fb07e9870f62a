"""The scheduler: one worker thread decodes every running sequence in shared llama.cpp batches.

Strategy: the model has `n_parallel` slots, each a llama.cpp sequence id with its own KV cells. A
request becomes a `Sequence`; it waits in a FIFO queue (bounded: beyond it, 503) until a slot is
free, takes the free slot whose cached tokens share the longest prefix with its prompt (else the
least recently used), lets the prompt cache (prompt_cache.py) put a longer prefix there from RAM,
disk or a busy slot, and evaluates only the rest, its last token in a step of its own. Each step
builds one `llama_batch`: one token for every decoding sequence, then prompt chunks of prefilling
ones in the room left (chunked prefill, so a long prompt never stalls running streams), one
`llama_decode`, then one sample per sequence with its own sampler chain. Events leave through each
sequence's `emit` callback (thread-safe, set by the caller), gathered during a step and handed over
just before the next `llama_decode`: the event loop then wakes while the worker waits in C without
the GIL, instead of taking the GIL in the middle of the worker's Python work (each ctypes call
releases it) and stalling the next decode.
A prompt may hold images (vision.py): negative pseudo-tokens in `prompt`, plus a `media` chunk at
each image's start. When prefill reaches one, the chunk is evaluated on its own, before the shared
batch (embeddings cannot share a llama_batch with tokens), and a cached prefix never ends inside one.

A sequence may carry a GBNF grammar (grammar.py), eager or lazy: it is checked against the token
the chain picks, and filters the whole vocabulary only when it rejects it (constrain.py).

Does not: render or tokenize prompts, parse thinking or tool calls, or know about asyncio.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

import llama_cpp as C

from ..core import ApiError, Finish, TextDelta, Usage
from .constrain import Candidates, Constraint, sample
from .model import Model
from .prompt_cache import DISK_MIN_TOKENS, PromptCache
from .sampling import TokenSampler
from .sequence import Sequence, Slot, StepTimes, common_prefix
from .stats import EngineStats, computing
from .textstream import TextStream

log = logging.getLogger("unsloth_min.engine")
MAX_QUEUE = 128           # waiting requests before a 503: 100 concurrent clients all get served
MIN_REUSE = 64            # shared tokens that make a free slot a sequence's own (Scheduler._affinity)
# From this many prompt tokens, the last one is decoded in a step of its own, as when the rest came
# from a cache: llama.cpp's CPU attention sums differently for a query among 64 or more (tiled)
# than for one alone (split over the KV cells past 512), and a greedy answer may flip on that.
# One decode step more (~10 ms on the embedded model) buys the same text cold, warm and restored.
LAST_ALONE_FROM = 64
FAIL_ALL_LOCK_S = 5.0     # fail_all's wait for the lock that a worker stuck in llama.cpp may hold


class Scheduler:
    def __init__(self, model: Model, max_queue: int = MAX_QUEUE, cache: PromptCache | None = None,
                 stats: EngineStats | None = None):
        self.model = model
        self.stats = stats or EngineStats()  # (the server's outlives this scheduler: stats.py)
        self.max_queue = max_queue
        self.cache = cache or PromptCache(model, 0)  # (without RAM or disk: copies from busy slots)
        self.slots = [Slot(i) for i in range(model.params.n_parallel)]
        self._clock = 0  # slot uses so far: Slot.used
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
        locked = self._cv.acquire(timeout=FAIL_ALL_LOCK_S)  # the worker may be stuck holding it
        try:
            seqs = self._active() + list(self._waiting)
            self._waiting.clear()
        finally:
            if locked:
                self._cv.release()
        for seq in seqs:
            seq.cancelled = True
            seq.emit(err)

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=10)
        if self._batch is not None:  # (a second close frees nothing)
            C.llama_batch_free(self._batch)
            self._batch = None

    @property
    def busy(self) -> int:
        return sum(1 for s in self.slots if s.seq) + len(self._waiting)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

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
            self._attach(seq, max(free, key=lambda s: self._affinity(s, seq)))

    @staticmethod
    def _affinity(slot: Slot, seq: Sequence) -> tuple[int, int]:
        """The free slot to take: the longest shared prefix, counted from MIN_REUSE tokens (a
        chat template's opening line is no conversation), else the least recently used (empty
        ones first): a returning conversation then finds its slot as often as possible."""
        n = common_prefix(slot.tokens, seq.prompt)
        return (n if n >= MIN_REUSE else 0), -slot.used

    @staticmethod
    def _usable(seq: Sequence, n: int) -> int:
        """How much of `n` shared tokens a sequence may take from a cache."""
        n = min(n, len(seq.prompt) - 1)  # the last prompt token is always decoded: it gives logits
        return next((s for s, m in seq.media.items() if s < n < s + m.n_tokens), n)  # no half images

    def _attach(self, seq: Sequence, slot: Slot) -> None:
        self._clock += 1
        slot.used = self._clock
        usable = lambda k: self._usable(seq, k)  # noqa: E731
        busy = [s for s in self.slots if s.seq is not None]
        n = self.cache.fill(slot, seq.prompt, usable(common_prefix(slot.tokens, seq.prompt)), busy, usable)
        if not C.llama_memory_seq_rm(self.model.memory, slot.seq_id, n, -1):  # cells that cannot
            C.llama_memory_seq_rm(self.model.memory, slot.seq_id, -1, -1)     # be cut (recurrent)
            n = 0
        del slot.tokens[n:]
        seq.n_done = seq.cached = n
        seq.slot, slot.seq = slot, seq
        self.stats.attach(seq, time.monotonic())
        log.debug("slot %d: a prompt of %d tokens, %d of them cached", slot.seq_id, len(seq.prompt), n)
        seq.sampler = TokenSampler(seq.sampling, self.model.n_vocab, seq.prompt)
        if seq.grammar:
            seq.constraint = Constraint(self.model.vocab, seq.grammar,
                                        lambda t: self.model.piece(t, special=True))
        seq.text = TextStream(seq.sampling.stop)

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
        outputs = self._plan()
        if self._batch.n_tokens == 0:
            return
        self._flush()
        with self.model.watched():  # (--rpc: the wait for the servers' work is watched)
            t0 = time.perf_counter()
            with computing(self._active()):  # (a long prompt's chunk: lines while it computes)
                rc = C.llama_decode(self.model.ctx, self._batch)
                if rc == 0:  # a GPU's or RPC server's work is waited for here, with the GIL free
                    C.llama_synchronize(self.model.ctx)  # (sampling keeps it: sampling.py)
            decode = time.perf_counter() - t0
            if rc != 0:
                raise RuntimeError("the KV cache is full" if rc == 1 else f"llama_decode returned {rc}")
            for seq, progress in self.stats.decoded(self._active(), self._batch.n_tokens, time.monotonic()):
                self._emit(seq, progress)
            self._checkpoint(outputs)
            sampling = self._sample_all(outputs)
        self.times.add(len(outputs), decode, sampling, time.perf_counter() - start)

    def _plan(self) -> list[tuple[Sequence, int]]:
        """Fill the batch: one token for every decoding sequence, then prompt chunks in the room
        left. Returns (sequence, logits index) for each sequence that samples after this decode."""
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
            n = len(seq.prompt)
            last = n - 1 if n >= LAST_ALONE_FROM and seq.n_done < n - 1 else n
            end = min(last, seq.n_done + room, min((s for s in seq.media if s > seq.n_done), default=n))
            for i in range(seq.n_done, end):
                idx = self._add(seq.slot, seq.prompt[i], i == len(seq.prompt) - 1)
            room -= end - seq.n_done
            seq.n_done = end
            if not seq.prefilling:
                outputs.append((seq, idx))
        return outputs

    def _checkpoint(self, outputs: list[tuple[Sequence, int]]) -> None:
        """A long prefill just done is kept (prompt_cache.py): a fifth conversation or a restart
        will not cost it again."""
        for seq, _ in outputs:
            if seq.last < 0 and len(seq.prompt) - seq.cached >= DISK_MIN_TOKENS:
                self.cache.save(seq.slot.seq_id, seq.slot.tokens)

    def _sample_all(self, outputs: list[tuple[Sequence, int]]) -> float:
        """Sample each sequence's next token and pass it on; the seconds spent sampling."""
        sampling = 0.0
        for seq, idx in outputs:
            if not seq.cancelled:
                ts = time.perf_counter()
                token = self._sample(seq, idx)
                sampling += time.perf_counter() - ts
                self._on_token(seq, token)
        return sampling

    def _sample(self, seq: Sequence, idx: int) -> int:
        s, c, ctx = seq.sampler, seq.constraint, self.model.ctx
        if c is None or c.sampler is None:
            token = s.sample(ctx, idx)
            if c is not None and c.waiting:
                c.watch(token)
            return token
        if self._candidates is None:
            self._candidates = Candidates(self.model.n_vocab)
        s.adjust(ctx, idx)
        token = sample(s.chain, c.sampler, self._candidates, ctx, idx)
        s.accept(token)
        return token

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
        with self.model.watched():
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
        self.stats.release(seq, time.monotonic())
        if seq.slot is not None:
            seq.slot.seq = None
        if seq.sampler is not None:
            seq.sampler.free()
        if seq.constraint is not None:
            seq.constraint.free()
        seq.sampler = seq.constraint = None
