"""The tensor table of a GGUF file: each weight's name, shape and ggml type, read from the header.

Strategy: GGUF (v2/v3) is a header of key/value pairs and tensor infos before the data; this reads
the header sequentially (skipping the values, which llama.cpp reads itself) and stops before the
data. It is the input for choosing where weights live (bufts.py), which llama.cpp decides only
inside `llama_model_load_from_file`.

Does not: read metadata values or tensor data, memory-map anything, or accept GGUF v1.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"GGUF"
# value type → struct format of one scalar; 8 is a string, 9 an array
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
MAX_NAME = 1 << 16  # a longer key or tensor name means a corrupt header


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length, shape[1] the rows
    type: int               # ggml_type


class _Reader:
    def __init__(self, f):
        self.f = f

    def take(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise ValueError("truncated GGUF header")
        return struct.unpack("<" + fmt, data)[0]

    def string(self, limit: int | None = None) -> bytes:
        n = self.take("Q")
        if limit is not None and n > limit:
            raise ValueError("corrupt GGUF header (name too long)")
        data = self.f.read(n)
        if len(data) != n:
            raise ValueError("truncated GGUF header")
        return data

    def skip_value(self, kind: int) -> None:
        if kind == STRING:
            self.f.seek(self.take("Q"), 1)
        elif kind == ARRAY:
            item, n = self.take("I"), self.take("Q")
            if item in SCALARS:
                self.f.seek(n * struct.calcsize("<" + SCALARS[item]), 1)
            else:
                for _ in range(n):
                    self.skip_value(item)
        elif kind in SCALARS:
            self.f.seek(struct.calcsize("<" + SCALARS[kind]), 1)
        else:
            raise ValueError(f"corrupt GGUF header (value type {kind})")


def read_tensors(path: str) -> list[TensorInfo]:
    """Every tensor's info, in file order (ValueError on a file that is not GGUF v2/v3)."""
    with open(path, "rb") as f:
        r = _Reader(f)
        if f.read(4) != MAGIC:
            raise ValueError(f"{path} is not a GGUF file")
        if r.take("I") not in (2, 3):
            raise ValueError(f"{path}: unsupported GGUF version")
        n_tensors, n_kv = r.take("Q"), r.take("Q")
        for _ in range(n_kv):
            r.string(MAX_NAME)
            r.skip_value(r.take("I"))
        out = []
        for _ in range(n_tensors):
            name = r.string(MAX_NAME).decode("utf-8", "replace")
            shape = tuple(r.take("Q") for _ in range(r.take("I")))
            kind = r.take("I")
            r.take("Q")  # offset into the data
            out.append(TensorInfo(name, shape, kind))
        return out
