"""The prompt cache beyond the slots (engine/prompt_cache.py, engine/kvfiles.py) with the real model:
states saved when a slot is reused or a long prefill ends, restored from RAM, from disk after a
"restart" (a new Model, cache and scheduler over the same folder) and copied from a busy slot,
with the same greedy text as cold; damaged and foreign files ignored; the bounds kept."""
from __future__ import annotations

import glob
import os
import threading

import pytest

from unsloth_min.core import Finish, Sampling, TextDelta
from unsloth_min.engine import LLAMA_DEFAULTS, embedded_model_path
from unsloth_min.engine import kvfiles, prompt_cache
from unsloth_min.engine.model import Model, ModelParams
from unsloth_min.engine.prompt_cache import CacheOptions, build_cache
from unsloth_min.engine.scheduler import Scheduler, Sequence
from support.servers import wait_for

pytestmark = pytest.mark.model
N_CTX = 2048
# Gemma 3 270M (make test assembles it from PyPI): sliding-window attention layers beside global ones
GEMMA3 = os.environ.get("UNSLOTH_MIN_GEMMA3") or ".cache/models/gemma-3-270m-q4_k_m.gguf"


class Server:
    """A model, its prompt cache and a scheduler: what a server process holds."""

    def __init__(self, folder: str | None, ram_mib: int = 256, disk_gib: float = 1.0,
                 path: str | None = None, **params):
        self.model = Model(ModelParams(path or embedded_model_path(), n_ctx=N_CTX, **params))
        self.cache = build_cache(self.model, CacheOptions(ram_mib, disk_gib if folder else 0, folder))
        self.scheduler = Scheduler(self.model, cache=self.cache)
        if self.cache.files is not None:
            assert self.cache.files.ready.wait(60)

    def tokens(self, text: str) -> list[int]:
        return self.model.tokenize(text, add_bos=True)

    def submit(self, prompt: list[int], max_tokens: int = 12) -> tuple[Sequence, list, threading.Event]:
        events, done = [], threading.Event()

        def emit(ev):
            events.append(ev)
            if isinstance(ev, (Finish, Exception)):
                done.set()
        seq = Sequence(prompt, Sampling(temperature=0).merged(LLAMA_DEFAULTS), max_tokens, emit)
        self.scheduler.submit(seq)
        return seq, events, done

    def run(self, prompt: list[int], max_tokens: int = 12) -> tuple[str, int]:
        """(greedy text, cached prompt tokens)"""
        _, events, done = self.submit(prompt, max_tokens)
        assert done.wait(300) and isinstance(events[-1], Finish), events[-1:]
        return "".join(e.text for e in events if isinstance(e, TextDelta)), events[-1].usage.cached_tokens

    def close(self) -> None:  # (again at the fixture's end: a no-op)
        self.scheduler.close()
        self.cache.close()
        self.model.close()


@pytest.fixture
def servers(tmp_path):
    made: list[Server] = []

    def make(folder=str(tmp_path / "kv"), **kw) -> Server:
        made.append(Server(folder, **kw))
        return made[-1]
    yield make
    for s in made:
        s.close()


LONG = "Fact: the lighthouse on island {i} was painted in {y}. "
def long_text(tag: str) -> str:  # noqa: E302 (about 1,300 tokens: past DISK_MIN_TOKENS)
    return tag + " " + "".join(LONG.format(i=i, y=1800 + i) for i in range(80)) + "Which island came first?"


def test_a_state_is_restored_from_ram_and_from_disk_with_the_cold_text(servers, tmp_path):
    s = servers(n_parallel=1)
    a, b = s.tokens(long_text("Conversation A.")), s.tokens("Tell me a story about a cat. " * 30)
    assert len(a) >= prompt_cache.DISK_MIN_TOKENS
    cold, cached = s.run(a)
    assert cached == 0
    s.run(b)                      # takes the only slot: A's state was checkpointed, then saved
    warm, cached = s.run(a)
    assert (warm, cached) == (cold, len(a) - 1) and s.cache.hits["ram"] == 1
    s.close()                     # (queued writes finish)
    assert len(glob.glob(str(tmp_path / "kv" / "*.kv"))) == 1  # the checkpoint gave way to A's whole state
    again = servers(n_parallel=1)  # a restart: same folder, empty RAM
    restored, cached = again.run(a)
    assert (restored, cached) == (cold, len(a) - 1) and again.cache.hits["disk"] == 1


def test_a_busy_slots_prefix_is_copied_not_recomputed(servers):
    s = servers(folder=None, ram_mib=0, n_parallel=2)
    a = s.tokens(long_text("Shared prefix."))
    cold, _ = s.run(a)
    busy, _, finished = s.submit(a + s.tokens(" Tell me more.")[1:], max_tokens=2000)
    assert wait_for(lambda: busy.n_generated > 0, 120)  # in A's slot, generating
    copied, cached = s.run(a)
    assert not finished.is_set() and s.cache.hits["copy"] == 1
    assert (copied, cached) == (cold, len(a) - 1)
    s.scheduler.cancel(busy)


def test_damaged_and_foreign_files_are_ignored(servers, tmp_path, caplog):
    folder = str(tmp_path / "kv")
    s = servers(folder, n_parallel=1)
    a = s.tokens(long_text("Damaged files."))
    cold, _ = s.run(a)
    s.close()
    (good,) = glob.glob(os.path.join(folder, "*.kv"))
    blob = open(good, "rb").read()

    def variant(name: str, data: bytes) -> str:
        path = os.path.join(folder, name + ".kv")
        with open(path, "wb") as f:
            f.write(data)
        return path
    os.unlink(good)
    truncated = variant("truncated", blob[:-1000])
    flipped = bytearray(blob)
    flipped[-5] ^= 0xFF
    corrupt = variant("corrupt", bytes(flipped))
    garbage = variant("garbage", b"not a state file at all")
    head, data = kvfiles.encode("0" * 64, kvfiles.Entry([1, 2, 3], 3), b"abc")
    foreign = variant("foreign", head + b"abc")  # another model's or layout's fingerprint
    t = servers(folder, n_parallel=1)
    assert not os.path.exists(truncated) and not os.path.exists(garbage)  # removed at the scan
    assert os.path.exists(foreign) and len(t.cache.files.usable()) == 1   # kept, not used
    text, cached = t.run(a)  # the corrupt one matches: read, found damaged, removed, recomputed
    assert (text, cached) == (cold, 0) and not os.path.exists(corrupt)
    assert "is damaged" in caplog.text and "is unreadable" in caplog.text


def test_another_layout_or_model_never_reads_a_state(servers, tmp_path):
    folder = str(tmp_path / "kv")
    s = servers(folder, n_parallel=1)
    a = s.tokens(long_text("Layouts."))
    s.run(a)
    fp = s.cache.files.fp
    s.close()
    other = servers(folder, n_parallel=2)  # another KV layout: two streams
    assert other.cache.files.fp != fp and other.cache.files.usable() == []
    assert other.run(a)[1] == 0


def test_the_bounds_hold_oldest_out_first(servers):
    s = servers(n_parallel=1, ram_mib=1)
    files = s.cache.files
    for i in range(3):  # (the writer yields the CPU to decoding: each written before the next run)
        s.run(s.tokens(long_text(f"Bound {i}.")))
        assert wait_for(lambda: len(files.usable()) == i + 1, 60)
    assert s.cache.ram == []  # a state of ~30 MiB never fits in 1 MiB
    files.max_bytes = int(1.5 * files.usable()[0].size)  # room for one: the newest stays
    last = s.tokens(long_text("Bound 3."))
    s.run(last)
    assert wait_for(lambda: any(e.tokens[:len(last)] == last for e in files.usable()), 60)
    s.run(s.tokens("Another short one. " * 20))
    assert wait_for(lambda: len(glob.glob(os.path.join(files.folder, "*.kv"))) == 1, 60)
    assert [e.tokens[:len(last)] for e in files.usable()] == [last]


def test_a_request_cancelled_while_its_prefix_is_restored_frees_the_slot(servers, monkeypatch):
    s = servers(n_parallel=1)
    a, b = s.tokens(long_text("Cancelled.")), s.tokens("A different prompt, short. " * 30)
    cold, _ = s.run(a)
    s.run(b)
    leaving = Sequence(a, Sampling(temperature=0).merged(LLAMA_DEFAULTS), 12, lambda ev: None)
    restore = s.cache._restore

    def restore_while_the_client_leaves(entry, slot):
        s.scheduler.cancel(leaving)
        return restore(entry, slot)
    monkeypatch.setattr(s.cache, "_restore", restore_while_the_client_leaves)
    s.scheduler.submit(leaving)
    assert wait_for(lambda: leaving.cancelled and all(x.seq is None for x in s.scheduler.slots), 60)
    assert leaving.n_generated == 0
    monkeypatch.undo()
    assert s.run(a) == (cold, len(a) - 1)  # the restored cells serve the next request


def test_a_model_whose_cells_cannot_be_cut_only_takes_whole_prefixes(servers):
    s = servers(n_parallel=1)
    s.cache.can_cut = False  # as for recurrent and hybrid models
    a = s.tokens(long_text("Uncut."))
    cold, _ = s.run(a)
    s.run(s.tokens("Something else. " * 40))
    longer = a + s.tokens(" And the last?")[1:]
    text, cached = s.run(longer)  # A's checkpoint (its whole prompt) is a prefix of this one
    assert cached == len(a)
    s.run(s.tokens("Something else again. " * 40))
    assert s.run(a[:-10])[1] == 0  # only a cut state would serve it: recomputed


def test_a_sliding_window_model_answers_the_same_cold_warm_and_restored(servers):
    if not os.path.exists(GEMMA3):
        pytest.skip(f"no Gemma 3 model at {GEMMA3} (make test assembles it)")
    import llama_cpp as C
    s = servers(n_parallel=1, path=GEMMA3)
    assert C.llama_model_n_swa(s.model.model) > 0
    a, b = s.tokens(long_text("Sliding windows.")), s.tokens("Write a poem about the sea. " * 30)
    assert len(a) > 2 * C.llama_model_n_swa(s.model.model)  # the window has moved on
    cold, _ = s.run(a)
    assert s.run(a) == (cold, len(a) - 1)  # its slot
    s.run(b)
    assert s.run(a) == (cold, len(a) - 1) and s.cache.hits["ram"] == 1
    s.close()
    again = servers(n_parallel=1, path=GEMMA3)
    assert again.run(a) == (cold, len(a) - 1) and again.cache.hits["disk"] == 1
