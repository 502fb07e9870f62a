"""The disk tier's writer thread, without a model."""
from __future__ import annotations

import os
import sys
import threading

import pytest

from unsloth_min.engine.kvfiles import KvFiles


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own nice value is Linux's")
def test_the_disk_cache_writer_runs_at_the_lowest_cpu_priority(tmp_path):
    """Hashing and writing a state must not take a core from llama.cpp's decoding threads."""
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF" * 1000)
    files = KvFiles(str(tmp_path / "cache"), 1 << 30, str(weights), "build", {"n_ctx": 1})
    try:
        assert files.ready.wait(30)
        tid = files._thread.native_id
        with open(f"/proc/self/task/{tid}/stat") as f:
            nice = int(f.read().rsplit(")", 1)[1].split()[16])
        assert nice == 19 and os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0
    finally:
        files.close()


def test_a_state_superseded_while_it_waits_for_the_writer_is_never_written(tmp_path, monkeypatch):
    """A prompt's checkpoint still queued when the conversation's whole state replaces it: only
    the whole state reaches the disk (it used to be written too, and stay)."""
    from unsloth_min.engine.kvfiles import Entry
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF" * 1000)
    files = KvFiles(str(tmp_path / "cache"), 1 << 30, str(weights), "build", {"n_ctx": 1})
    hold, writing, real, written = threading.Event(), threading.Event(), KvFiles._atomic_write, []

    def slow(path, parts):
        writing.set()
        written.append(parts[1])
        assert hold.wait(30)
        real(path, parts)
    try:
        assert files.ready.wait(30)  # (the model's hash is memoized with the same writes)
        monkeypatch.setattr(KvFiles, "_atomic_write", staticmethod(slow))
        other, prompt, whole = Entry([9] * 8, 4), Entry([1, 2, 3], 4), Entry([1, 2, 3, 4, 5], 4)
        files.write(other, b"oooo", [])
        assert writing.wait(30)  # the writer holds `other`; the next two wait in the queue
        files.write(prompt, b"pppp", [])
        files.write(whole, b"wwww", [prompt])
        hold.set()
    finally:
        files.close()
    assert sorted(e.tokens for e in files.usable()) == [[1, 2, 3, 4, 5], [9] * 8]
    assert written == [b"oooo", b"wwww"] and prompt.path is None
    assert len(os.listdir(tmp_path / "cache")) == 3  # (and models.json)
