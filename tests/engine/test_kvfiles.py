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
