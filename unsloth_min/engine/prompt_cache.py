"""Prompts beyond the slots: sequences' KV states kept in host RAM and on disk, by token prefix.

Strategy: a slot keeps its last sequence's KV cells as a prefix cache, but there are only
`--parallel` slots, and the fifth conversation used to take one and lose its owner's prompt (for a
coding agent on a CPU, minutes of prefill). So before a slot's cells are cut or replaced, its state
is copied out (`llama_state_seq_get_data`) into an `Entry` under its tokens, and a long prefill is
checkpointed as soon as it is done. A request whose prompt shares a longer prefix (by `MIN_GAIN`)
with an entry, or with a busy slot, than with the free slot it got has that state put in its slot
(`llama_state_seq_set_data`; from a busy slot `llama_memory_seq_cp`), cut to the shared prefix, and
decodes only the rest. Entries stay in RAM up to `--cache-ram` bytes, least recently used out
first; those of at least `DISK_MIN_TOKENS` are also written to disk (kvfiles.py) and read back when
needed, after a restart too. An entry that a longer one extends is dropped: the longer one serves
every prompt the shorter did. Models whose cells cannot be cut (recurrent or hybrid layers) only
take states that are a whole prefix of the prompt, and keep their checkpoints. Everything here
runs on the scheduler's worker thread (the disk writer has its own).

Does not: choose a slot or decode (scheduler.py), or know the file format (kvfiles.py).
"""
from __future__ import annotations

import collections
import ctypes
import logging
import time
from dataclasses import dataclass

import llama_cpp as C

from .kvfiles import Entry, KvFiles
from .model import GIB, Model, available_memory
from .sequence import Slot, common_prefix
from .stats import EngineStats

log = logging.getLogger("unsloth_min.engine")

MIN_SAVE_TOKENS = 256    # shorter states are recomputed in about a second: not worth the RAM
MIN_GAIN = 32            # tokens a restore must add to what the slot has, or a cut must lose for a save
DISK_MIN_TOKENS = 1024   # states this long go to disk too; a prefill this long is checkpointed
MAX_DEFAULT_RAM = 8 * GIB  # llama-server's --cache-ram default


@dataclass(frozen=True)
class CacheOptions:
    ram_mib: int | None = None  # None: a quarter of the RAM available after loading, ≤ 8 GiB
    disk_gib: float = 0.0       # 0: no disk cache
    folder: str | None = None


def build_cache(model: Model, opts: CacheOptions, stats: EngineStats | None = None) -> PromptCache:
    """The prompt cache `opts` asks for, once `model` is loaded (its KV cache allocated)."""
    if opts.ram_mib is None:
        ram = min(MAX_DEFAULT_RAM, (available_memory() or 0) // 4)
    else:
        ram = opts.ram_mib << 20
    files = None
    if opts.disk_gib > 0 and opts.folder:
        build = f"llama-cpp-python {C.__version__}; {C.llama_print_system_info().decode()}"
        files = KvFiles(opts.folder, int(opts.disk_gib * GIB), model.params.path, build, model.layout())
    log.info("prompt cache: %d MiB in RAM, %s", ram >> 20,
             f"{opts.disk_gib:g} GiB on disk in {opts.folder}" if files else "none on disk")
    return PromptCache(model, ram, files, stats)


class PromptCache:
    def __init__(self, model: Model, ram_bytes: int, files: KvFiles | None = None,
                 stats: EngineStats | None = None):
        self.model, self.ram_bytes, self.files = model, ram_bytes, files
        self.ram: list[Entry] = []  # entries with their state in RAM, least recently used first
        self.can_cut = not (C.llama_model_is_recurrent(model.model) or C.llama_model_is_hybrid(model.model))
        stats = stats or EngineStats()  # (the server's outlives this cache: stats.py)
        self.hits: collections.Counter = stats.cache_hits  # requests, by source
        self.reused: collections.Counter = stats.cache_reused  # prompt tokens, by source

    @property
    def ram_used(self) -> int:
        return sum(e.size for e in self.ram)

    def entries(self) -> list[Entry]:
        disk = self.files.usable() if self.files is not None and self.files.ready.is_set() else []
        return self.ram + [e for e in disk if e.data is None]

    # ---- the scheduler's calls (worker thread) ---------------------------------------------------
    def fill(self, slot: Slot, prompt: list[int], n: int, busy: list[Slot], usable) -> int:
        """Make `slot` hold the longest prefix of `prompt` there is: its own `n` tokens, or a busy
        slot's or a cached state's when that is `MIN_GAIN` longer. Saves what the slot held first
        when `MIN_GAIN` or more of its tokens would be lost (past a long prefix, each costs more
        than a token of a short prompt: at 12k tokens of context, 0.15 s on 2 cores). Returns the
        prompt tokens the slot now holds (`usable` caps a shared length: the last prompt token
        and half images are recomputed)."""
        best, source = n + MIN_GAIN - 1, None
        for other in busy if self.can_cut else ():
            k = usable(common_prefix(other.tokens, prompt))
            if k > best:
                best, source = k, other
        for entry in self.entries():
            k = usable(common_prefix(entry.tokens, prompt))
            if k > best and (self.can_cut or k == len(entry.tokens)):
                best, source = k, entry
        if source is None:
            if len(slot.tokens) - n >= MIN_GAIN:  # (a turn's few re-rendered tokens: not worth it)
                self.save(slot.seq_id, slot.tokens)
            return self._count("slot", n) if n else 0
        self.save(slot.seq_id, slot.tokens)
        if isinstance(source, Slot):
            C.llama_memory_seq_cp(self.model.memory, source.seq_id, slot.seq_id, -1, -1)
            slot.tokens[:] = source.tokens
            return self._count("copy", best)
        where = "ram" if source.data is not None else "disk"
        if not self._restore(source, slot):
            return 0
        return self._count(where, best)

    def save(self, seq_id: int, tokens: list[int]) -> None:
        """Keep the state of sequence `seq_id`, which holds `tokens`, unless it is short or an
        entry already covers it."""
        if (len(tokens) < MIN_SAVE_TOKENS or not (self.ram_bytes or self.files)
                or any(self._holds(e, tokens) for e in self.entries())):
            return
        t = time.perf_counter()
        data = self._state(seq_id)
        if not data:
            return
        entry = Entry(list(tokens), len(data), data)
        superseded = [e for e in self.entries() if self.can_cut and self._covers(entry, e.tokens)]
        self.ram = [e for e in self.ram if e not in superseded]
        for e in superseded:
            e.data = None
        self._keep(entry)
        log.debug("prompt cache: %d tokens saved (%.1f MiB) in %.3f s", len(tokens),
                  len(data) / 2**20, time.perf_counter() - t)
        if self.files is not None and len(tokens) >= DISK_MIN_TOKENS and min(tokens) >= 0:
            self.files.write(entry, data, superseded)  # (images: RAM only)

    def close(self) -> None:
        self.ram.clear()
        if self.files is not None:
            self.files.close()

    # ---- inside ----------------------------------------------------------------------------------
    @staticmethod
    def _covers(entry: Entry, tokens: list[int]) -> bool:
        return len(entry.tokens) >= len(tokens) and entry.tokens[:len(tokens)] == tokens

    def _holds(self, entry: Entry, tokens: list[int]) -> bool:
        """`entry` serves every prompt that a state of `tokens` would."""
        return self._covers(entry, tokens) if self.can_cut else entry.tokens == tokens

    def _count(self, source: str, n: int) -> int:
        self.hits[source] += 1
        self.reused[source] += n
        return n

    def _state(self, seq_id: int) -> bytearray | None:
        ctx = self.model.ctx
        size = C.llama_state_seq_get_size(ctx, seq_id)
        data = bytearray(size)
        buf = (ctypes.c_ubyte * size).from_buffer(data)
        with self.model.watched():  # (from --rpc servers: over the network)
            got = C.llama_state_seq_get_data(ctx, buf, size, seq_id)
        del buf  # (a live view would pin the bytearray's size)
        return data if got == size else None

    def _restore(self, entry: Entry, slot: Slot) -> bool:
        t = time.perf_counter()
        where = "RAM" if entry.data is not None else "disk"
        data = entry.data if entry.data is not None else self.files.read(entry)
        ok = data is not None and self._set_state(slot.seq_id, data)
        if not ok:  # llama.cpp has cleared the sequence
            C.llama_memory_seq_rm(self.model.memory, slot.seq_id, -1, -1)
            slot.tokens.clear()
            if entry in self.ram:
                self.ram.remove(entry)
            log.warning("prompt cache: a state of %d tokens could not be restored: recomputing",
                        len(entry.tokens))
            return False
        slot.tokens[:] = entry.tokens
        entry.data = data
        self._keep(entry)
        log.info("slot %d: %d tokens restored from %s in %.2f s", slot.seq_id, len(entry.tokens),
                 where, time.perf_counter() - t)
        return True

    def _set_state(self, seq_id: int, data: bytes | bytearray) -> bool:
        size = len(data)
        buf = (ctypes.c_ubyte * size).from_buffer(data if isinstance(data, bytearray) else bytearray(data))
        with self.model.watched():
            return C.llama_state_seq_set_data(self.model.ctx, buf, size, seq_id) == size

    def _keep(self, entry: Entry) -> None:
        """`entry` in RAM as the most recently used; the least recently used states leave RAM
        (a state also on disk stays there)."""
        entry.used = time.monotonic()
        if entry in self.ram:
            self.ram.remove(entry)
        self.ram.append(entry)
        while self.ram and self.ram_used > self.ram_bytes:
            old = self.ram.pop(0)
            old.data = None
