"""engine/stats.py without a model: what a sequence adds to the totals, the progress it reports
(events for a request that asked, log lines for a long prompt), and the slots' view."""
from __future__ import annotations

import contextlib
import logging
import time

from unsloth_min.core import PromptProgress, Sampling
from unsloth_min.engine import stats as stats_module
from unsloth_min.engine.sequence import Sequence, Slot
from unsloth_min.engine.stats import PROGRESS_LOG_FROM, EngineStats, computing, slot_view


def running(n_prompt: int, cached: int = 0, progress: bool = False) -> Sequence:
    slot = Slot(1, tokens=list(range(cached)))
    seq = Sequence(list(range(n_prompt)), Sampling(), 16, emit=None, return_progress=progress,
                   request_id="chatcmpl-abc", dialect="openai")
    seq.slot, slot.seq, seq.n_done, seq.cached = slot, seq, cached, cached
    return seq


def prefill(stats: EngineStats, seq: Sequence, chunks: list[int], t: float) -> list:
    """Each chunk decoded at one second intervals after `t`; the progress events sent."""
    out = []
    for i, n in enumerate(chunks):
        seq.n_done += n
        seq.slot.tokens += [0] * n
        out += stats.decoded([seq], n, t + i + 1)
    return out


def test_progress_is_sent_only_to_a_request_that_asked():
    stats = EngineStats()
    asked, silent = running(1100, cached=100, progress=True), running(1100, cached=100)
    for seq in (asked, silent):
        stats.attach(seq, 10.0)
    assert prefill(stats, silent, [512, 488], 10.0) == []
    sent = prefill(stats, asked, [512, 487, 1], 10.0)
    assert sent == [(asked, PromptProgress(1100, 100, 612, 1000)), (asked, PromptProgress(1100, 100, 1099, 2000)),
                    (asked, PromptProgress(1100, 100, 1100, 3000))]
    assert stats.decoded([asked], 2, 20.0) == []  # generating: no more progress
    assert asked.t_prompt == 13.0 and stats.decodes == 6 and stats.max_batch == 512


def test_a_long_prompt_logs_each_chunk(caplog):
    stats, seq = EngineStats(), running(PROGRESS_LOG_FROM + 100)
    stats.attach(seq, 0.0)
    with caplog.at_level(logging.INFO, "unsloth_min.engine"):
        prefill(stats, seq, [512] * 4 + [PROGRESS_LOG_FROM + 100 - 2048], 0.0)
    lines = [r.getMessage() for r in caplog.records if "prompt" in r.getMessage()]
    assert len(lines) == 5
    assert lines[0] == f"slot 1: prompt 512/{PROGRESS_LOG_FROM + 100} tokens (24%), 512 tok/s, ETA 3 s"
    short = running(PROGRESS_LOG_FROM - 1)
    stats.attach(short, 0.0)
    with caplog.at_level(logging.INFO, "unsloth_min.engine"):
        caplog.clear()
        prefill(stats, short, [PROGRESS_LOG_FROM - 1], 0.0)
    assert caplog.records == []


def test_release_adds_computed_tokens_and_times_once():
    stats, seq = EngineStats(), running(600, cached=200)
    stats.attach(seq, 5.0)
    prefill(stats, seq, [400], 5.0)  # the prompt done at 6.0
    seq.n_generated = 30
    stats.release(seq, 9.0)
    stats.release(seq, 12.0)  # (a second release counts nothing)
    assert (stats.prompt_tokens, stats.prompt_seconds) == (400, 1.0)
    assert (stats.predicted_tokens, stats.predicted_seconds) == (30, 3.0)
    assert stats.last_rates[1] == (400.0, 10.0)


def test_the_slots_view_holds_no_prompt():
    stats, seq = EngineStats(), running(300, cached=50)
    stats.attach(seq, 1.0)
    view = slot_view(seq.slot, stats, 2.0)
    assert view == {"id": 1, "state": "busy", "n_tokens": 50, "request_id": "chatcmpl-abc",
                    "dialect": "openai", "phase": "prompt", "n_prompt": 300, "n_cached": 50,
                    "n_processed": 50, "n_generated": 0, "prompt_tokens_per_second": 0.0,
                    "tokens_per_second": 0.0}
    assert slot_view(Slot(2), stats, 2.0) == {"id": 2, "state": "idle", "n_tokens": 0,
                                              "prompt_tokens_per_second": 0.0, "tokens_per_second": 0.0}


def test_a_long_chunk_logs_while_it_computes(monkeypatch, caplog):
    monkeypatch.setattr(stats_module, "PROGRESS_EVERY_S", 0.05)
    long, short = running(PROGRESS_LOG_FROM + 600, cached=100), running(1000)
    for seq in (long, short):
        stats_module.EngineStats.attach(seq, time.monotonic() - 10)
        seq.n_done += 512  # the chunk this decode computes
    long.reported, long.n_done = 612, 1124  # one chunk done, the second computing
    assert isinstance(computing([short]), contextlib.nullcontext)
    with caplog.at_level(logging.INFO, "unsloth_min.engine"):
        with computing([short, long]):
            time.sleep(0.3)
        after = len(caplog.records)
        time.sleep(0.2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) >= 3 and len(caplog.records) == after  # and none once it is done
    assert lines[0].startswith(f"slot 1: prompt 612/{PROGRESS_LOG_FROM + 600} tokens (23%), computing 512 more for 0 s,")
    assert all("ETA" in line for line in lines)
