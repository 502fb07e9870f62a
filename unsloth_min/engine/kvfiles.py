"""Sequence KV states on disk: the prompt cache's second tier, which outlives the process.

Strategy: one file per cached prefix in a folder (`--cache-dir`, default `$UNSLOTH_MIN_HOME/prompt-
cache`): `MAGIC`, a 4-byte header length, a JSON header (the fingerprint, the token count, the
state's size and SHA-256), the tokens as int32, then the bytes `llama_state_seq_get_data` gave. The
fingerprint names everything that must be equal for the bytes to mean the same cells: the model
file's content (SHA-256, memoized per path, size and mtime in `models.json` beside the files),
llama.cpp's build (version and system info) and the KV layout (context, slots, flash attention,
placement, RoPE). Files are written by one background thread at the lowest CPU priority (hashing and
writing 60 MiB would otherwise take a core from the decoding threads, and llama.cpp's threads wait
for their slowest: under steady decoding a state reaches the disk in the next idle moment, and one
saved while two wait stays in RAM only; one superseded while it waits is not written), to a
temporary name then renamed (atomic), and the folder is kept under `--cache-disk` bytes, the files
least recently used (mtime, touched on each read) out first, whoever wrote them. Nothing is read at
start but the headers, once the model is hashed (in the same thread): a file that does not parse or
is shorter than its header says is removed with a warning; another fingerprint is skipped (another
model's server may share the folder); the state's SHA-256 is checked on every read, so a damaged
file is a miss, never a wrong answer.

Does not: decide what to cache or restore (prompt_cache.py), or talk to llama.cpp.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import struct
import sys
import threading
import time
from array import array
from dataclasses import dataclass, field

log = logging.getLogger("unsloth_min.engine")

MAGIC = b"UNSLOTHKV1\n"
SUFFIX = ".kv"
MAX_HEADER = 1 << 16
PENDING_WRITES = 2  # states waiting for the writer; more are not written (RAM still has them)
STALE_TMP_S = 3600  # a temporary file this old was left by a writer that died


@dataclass(eq=False)
class Entry:
    """One cached prefix: its tokens and its state, in RAM (`data`), on disk (`path`), or both."""
    tokens: list[int]
    size: int                       # bytes of state
    data: bytes | bytearray | None = None
    path: str | None = None
    used: float = field(default_factory=time.monotonic)
    superseded: bool = False        # a longer entry took its place (queued for disk: not written)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(model_sha256: str, build: str, layout: dict) -> str:
    text = json.dumps({"model": model_sha256, "build": build, "layout": layout}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def encode(fp: str, entry: Entry, data: bytes | bytearray) -> tuple[bytes, bytes]:
    """(the bytes before the state, the state's digest) of a file for `entry`."""
    digest = hashlib.sha256(data).hexdigest()
    header = json.dumps({"fingerprint": fp, "n_tokens": len(entry.tokens), "data_bytes": len(data),
                         "data_sha256": digest}).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + array("i", entry.tokens).tobytes(), digest


def read_head(f) -> tuple[dict, list[int]]:
    """The header and tokens of an open file; ValueError when they do not parse."""
    if f.read(len(MAGIC)) != MAGIC:
        raise ValueError("not a prompt-cache file")
    (n,) = struct.unpack("<I", f.read(4).rjust(4, b"\0"))
    if n > MAX_HEADER:
        raise ValueError("header too long")
    try:
        head = json.loads(f.read(n))
        count, size = int(head["n_tokens"]), int(head["data_bytes"])
        str(head["fingerprint"]), str(head["data_sha256"])
    except (ValueError, KeyError, TypeError):
        raise ValueError("bad header") from None
    raw = f.read(4 * count)
    if count <= 0 or size <= 0 or len(raw) != 4 * count:
        raise ValueError("truncated")
    tokens = array("i")
    tokens.frombytes(raw)
    return head, tokens.tolist()


class KvFiles:
    """The folder of state files, its index, and the thread that writes and evicts them."""

    def __init__(self, folder: str, max_bytes: int, model_path: str, build: str, layout: dict):
        self.folder, self.max_bytes = folder, max_bytes
        self.fp: str | None = None
        self.entries: list[Entry] = []    # ours, usable
        self._sizes: dict[str, int] = {}  # every state file in the folder: path → bytes
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self._jobs: queue.Queue = queue.Queue(PENDING_WRITES)
        self._thread = threading.Thread(target=self._run, args=(model_path, build, layout),
                                        name="unsloth-kvfiles", daemon=True)
        self._thread.start()

    # ---- any thread ------------------------------------------------------------------------------
    def usable(self) -> list[Entry]:
        with self._lock:
            return list(self.entries)

    def write(self, entry: Entry, data: bytes | bytearray, superseded: list[Entry]) -> None:
        """Queue `entry` for writing; the files of `superseded` go once it is written, and those
        still waiting for the writer are not written at all."""
        try:
            self._jobs.put_nowait((entry, data, superseded))
        except queue.Full:
            log.debug("prompt cache: the disk writer is busy; %d tokens kept in RAM only",
                      len(entry.tokens))
            return
        for e in superseded:
            e.superseded = True  # (one waiting in the queue is then skipped)

    def read(self, entry: Entry) -> bytearray | None:
        """The state of `entry` from its file, checked; None (and the file removed) when damaged."""
        path = entry.path
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                head, tokens = read_head(f)
                data = bytearray(head["data_bytes"])
                whole = f.readinto(data) == len(data) and not f.read(1)
            why = None
            if (not whole or tokens != entry.tokens
                    or hashlib.sha256(data).hexdigest() != head["data_sha256"]):
                why = "its state does not match its header"
        except FileNotFoundError:  # evicted meanwhile
            self._forget(entry)
            return None
        except (OSError, ValueError) as e:
            why = str(e)
        if why is None:
            _touch(path)
            return data
        log.warning("prompt cache: %s is damaged (%s): removed", path, why)
        self._remove(path)
        self._forget(entry)
        return None

    def close(self, timeout: float = 30.0) -> None:
        """Let the queued writes finish (a restart finds them), then stop the thread."""
        if self._thread.is_alive():
            self._jobs.put((None, None, None))
            self._thread.join(timeout)

    def _forget(self, entry: Entry) -> None:
        with self._lock:
            if entry in self.entries:
                self.entries.remove(entry)
            self._sizes.pop(entry.path or "", None)
        entry.path = None

    def _remove(self, path: str) -> None:
        with self._lock:
            self._sizes.pop(path, None)
        try:
            os.unlink(path)
        except OSError:
            pass

    # ---- the writer thread -----------------------------------------------------------------------
    def _run(self, model_path: str, build: str, layout: dict) -> None:
        lowest_priority()
        try:
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
            self.fp = fingerprint(self._model_sha256(model_path), build, layout)
            self._scan()
        except OSError as e:
            log.warning("prompt cache: the folder %s is not usable (%s): no disk cache", self.folder, e)
            self.max_bytes = 0
        self.ready.set()
        while True:
            entry, data, superseded = self._jobs.get()
            if entry is None:
                return
            if self.max_bytes and not entry.superseded and entry.size <= self.max_bytes:
                self._store(entry, data, superseded)

    def _model_sha256(self, path: str) -> str:
        """The model file's SHA-256, computed once per path, size and mtime (models.json)."""
        memo_path = os.path.join(self.folder, "models.json")
        st = os.stat(path)
        key, stamp = os.path.realpath(path), [st.st_size, st.st_mtime_ns]
        try:
            with open(memo_path) as f:
                memo = json.load(f)
            if memo.get(key, {}).get("stamp") == stamp:
                return memo[key]["sha256"]
        except (OSError, ValueError, AttributeError, TypeError):
            memo = {}
        t = time.monotonic()
        digest = file_sha256(path)
        log.info("prompt cache: model file hashed in %.1f s", time.monotonic() - t)
        memo = memo if isinstance(memo, dict) else {}
        memo[key] = {"stamp": stamp, "sha256": digest}
        self._atomic_write(memo_path, [json.dumps(memo).encode()])
        return digest

    def _scan(self) -> None:
        for name in sorted(os.listdir(self.folder)):
            path = os.path.join(self.folder, name)
            if name.endswith(".tmp") and time.time() - _mtime(path) > STALE_TMP_S:
                self._remove(path)  # a writer that died mid-file
            if not name.endswith(SUFFIX) or not os.path.isfile(path):
                continue
            try:
                size = os.path.getsize(path)
                with open(path, "rb") as f:
                    head, tokens = read_head(f)
                    start = f.tell()
                if size != start + head["data_bytes"]:
                    raise ValueError("truncated")
            except (OSError, ValueError) as e:
                log.warning("prompt cache: %s is unreadable (%s): removed", path, e)
                self._remove(path)
                continue
            self._sizes[path] = size
            if head["fingerprint"] == self.fp:
                self.entries.append(Entry(tokens, head["data_bytes"], path=path,
                                          used=os.path.getmtime(path) - time.time() + time.monotonic()))
        log.info("prompt cache: %d states on disk in %s (%.1f MiB in all)", len(self.entries),
                 self.folder, sum(self._sizes.values()) / 2**20)

    def _store(self, entry: Entry, data, superseded: list[Entry]) -> None:
        name = hashlib.sha256(array("i", entry.tokens).tobytes() + self.fp.encode()).hexdigest()[:32]
        path = os.path.join(self.folder, name + SUFFIX)
        head, _ = encode(self.fp, entry, data)
        self._evict(len(head) + len(data))
        try:
            self._atomic_write(path, [head, data])
        except OSError as e:
            log.warning("prompt cache: could not write %s: %s", path, e)
            return
        with self._lock:
            self._sizes[path] = len(head) + len(data)
            entry.path = path
            self.entries.append(entry)
        for old in superseded:
            if old.path and old.path != path:
                self._remove(old.path)
                self._forget(old)

    def _evict(self, room: int) -> None:
        """Remove the least recently used files until `room` more bytes fit under the bound."""
        with self._lock:
            total = sum(self._sizes.values())
            order = sorted(self._sizes, key=lambda p: _mtime(p))
        for path in order:
            if total + room <= self.max_bytes:
                break
            total -= self._sizes.get(path, 0)
            self._remove(path)
            with self._lock:
                for e in [e for e in self.entries if e.path == path]:
                    self.entries.remove(e)
                    e.path = None

    @staticmethod
    def _atomic_write(path: str, parts: list) -> None:
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                for part in parts:
                    f.write(part)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def lowest_priority() -> None:
    """The calling thread yields the CPU to every other (Linux: a thread's nice value is its own)."""
    if sys.platform == "linux":
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass


def _touch(path: str) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0
