"""What the engine has done, for /metrics, /slots and the log: token and time totals, decode
steps, the prompt cache's hits, and the progress of each prompt being computed.

Strategy: one `EngineStats` outlives the engines it counts (the server keeps it across
`--sleep-idle` unloads, so its counters only grow). The scheduler's worker calls `attach`,
`decoded` (after each `llama_decode`) and `release`, and nothing else writes here; readers on
the event loop read plain numbers (under the GIL a scrape may see a step half added, never a
torn number). Totals are added when a sequence leaves its slot, as llama-server adds them: its
computed prompt tokens (cached ones not), the seconds from taking the slot to the prompt's end,
its generated tokens and the seconds after. A prompt being computed gets a `PromptProgress` after
each chunk when its request asked (`return_progress`), and a log line when it is long.

Does not: decode, touch llama.cpp, or format anything for the wire (metrics.py and ops.py do).
"""
from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field

from ..core import PromptProgress
from .sequence import Sequence, Slot

log = logging.getLogger("unsloth_min.engine")

SOURCES = ("slot", "copy", "ram", "disk")  # where the prompt cache's reused tokens came from
PROGRESS_LOG_FROM = 2048  # prompt tokens to compute from which each chunk logs a progress line
# (a 2k-token prompt takes seconds on a small CPU; a shorter one is done before a line helps)
PROGRESS_EVERY_S = 3.0  # while one chunk computes longer, a line this often (Heartbeat)


@dataclass
class EngineStats:
    prompt_tokens: int = 0        # computed, llama-server's prompt_tokens_total
    prompt_seconds: float = 0.0
    predicted_tokens: int = 0     # generated, its tokens_predicted_total
    predicted_seconds: float = 0.0
    decodes: int = 0              # llama_decode calls (n_decode_total)
    busy_slots: int = 0           # busy slots summed over the decodes (n_busy_slots_per_decode)
    max_batch: int = 0            # the most tokens one decode took (n_tokens_max)
    # the prompt cache's (prompt_cache.py), by source: requests served, prompt tokens reused
    cache_hits: collections.Counter = field(default_factory=collections.Counter)
    cache_reused: collections.Counter = field(default_factory=collections.Counter)
    # slot id → (prompt tok/s, generated tok/s) of the last request it finished
    last_rates: dict = field(default_factory=dict)

    # ---- the worker's calls ----------------------------------------------------------------------
    @staticmethod
    def attach(seq: Sequence, now: float) -> None:
        seq.t_start, seq.reported = now, seq.n_done

    def decoded(self, active: list[Sequence], n_tokens: int, now: float) -> list[tuple]:
        """After a decode of `n_tokens` for the `active` sequences: the (sequence, PromptProgress)
        pairs to send, for those whose prompt advanced and that asked."""
        self.decodes += 1
        self.busy_slots += len(active)
        self.max_batch = max(self.max_batch, n_tokens)
        out = []
        for seq in active:
            if seq.t_prompt or seq.n_done <= seq.reported:
                continue  # generating, or no prompt tokens in this batch
            seq.reported = seq.n_done
            if not seq.prefilling:
                seq.t_prompt = now
            progress = PromptProgress(len(seq.prompt), seq.cached, seq.n_done,
                                      int((now - seq.t_start) * 1000))
            if len(seq.prompt) - seq.cached >= PROGRESS_LOG_FROM:
                log_progress(seq.slot.seq_id, progress)
            if seq.return_progress:
                out.append((seq, progress))
        return out

    def release(self, seq: Sequence, now: float) -> None:
        if not seq.t_start:  # it never had a slot
            return
        end_prompt = seq.t_prompt or now
        computed, prompt_s = seq.n_done - seq.cached, end_prompt - seq.t_start
        gen_s = now - end_prompt if seq.t_prompt else 0.0
        self.prompt_tokens += computed
        self.prompt_seconds += prompt_s
        self.predicted_tokens += seq.n_generated
        self.predicted_seconds += gen_s
        if seq.slot is not None:
            self.last_rates[seq.slot.seq_id] = (rate(computed, prompt_s), rate(seq.n_generated, gen_s))
        seq.t_start = 0.0  # counted once


def rate(tokens: int, seconds: float) -> float:
    return round(tokens / seconds, 1) if seconds > 0 else 0.0


def log_progress(slot: int, p: PromptProgress, computing: str = "") -> None:
    done, todo = p.processed - p.cache, p.total - p.cache
    speed = rate(done, p.time_ms / 1000)
    eta = f"{(todo - done) / speed:.0f} s" if speed else "?"
    log.info("slot %d: prompt %d/%d tokens (%.0f%%), %s%.0f tok/s, ETA %s", slot, p.processed,
             p.total, 100 * p.processed / p.total, computing, speed, eta)


_QUIET = contextlib.nullcontext()  # (reusable)


def computing(active: list[Sequence]):
    """Around a llama_decode: a `Heartbeat` when it computes a chunk of a long prompt."""
    long = [s for s in active if not s.t_prompt and s.n_done > s.reported
            and len(s.prompt) - s.cached >= PROGRESS_LOG_FROM]
    return Heartbeat(long) if long else _QUIET


class Heartbeat:
    """A chunk deep in a long prompt takes tens of seconds on a small CPU (512 tokens at 12k of
    context: 29 s on 2 shared cores, the embedded model), and nothing can report from inside
    llama_decode. So a thread logs every PROGRESS_EVERY_S while the chunk computes: the tokens
    done before it, the chunk, its seconds so far, the rate and ETA. (Smaller chunks deep in a
    prompt were tried: they read the KV cache once more per chunk, and a 4k-token prompt took
    11-29 % longer.)"""

    def __init__(self, seqs: list[Sequence]):
        self.seqs, self.stop = seqs, threading.Event()
        self.thread = threading.Thread(target=self._run, name="unsloth-progress", daemon=True)

    def __enter__(self):
        self.started = time.monotonic()
        self.thread.start()

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stop.wait(PROGRESS_EVERY_S):
            now = time.monotonic()
            for seq in self.seqs:  # (the rate: of the chunks done before this one)
                done = PromptProgress(len(seq.prompt), seq.cached, seq.reported,
                                      int((self.started - seq.t_start) * 1000))
                log_progress(seq.slot.seq_id, done, f"computing {seq.n_done - seq.reported} more "
                             f"for {now - self.started:.0f} s, ")


def slot_view(slot: Slot, stats: EngineStats, now: float) -> dict:
    """One slot for /slots: what it holds and does, never the prompt's text (or its tokens)."""
    seq = slot.seq
    view = {"id": slot.seq_id, "state": "idle" if seq is None else "busy", "n_tokens": len(slot.tokens)}
    prompt_tps, gen_tps = stats.last_rates.get(slot.seq_id, (0.0, 0.0))
    if seq is not None:
        phase = "prompt" if seq.prefilling else "generating"
        view.update(request_id=seq.request_id, dialect=seq.dialect, phase=phase,
                    n_prompt=len(seq.prompt), n_cached=seq.cached, n_processed=seq.n_done,
                    n_generated=seq.n_generated)
        if seq.t_prompt:
            gen_tps = rate(seq.n_generated, now - seq.t_prompt)
        elif seq.t_start:
            prompt_tps = rate(seq.n_done - seq.cached, now - seq.t_start)
    view.update(prompt_tokens_per_second=prompt_tps, tokens_per_second=gen_tps)
    return view
