"""Where the weights live on the CPU: llama.cpp's extra buffer types (AMX, CPU_REPACK), per machine.

Strategy: llama.cpp's CPU backend can keep weights in "extra" buffer types that re-lay them out
for faster matrix products, tried in order: AMX (Intel Sapphire Rapids and later), then
CPU_REPACK (interleaved blocks for AVX2/AVX512). On AMX machines the AMX kernels segfault in
`ggml_backend_amx_mul_mat` on the first batch of more than one token (measured on this project's
machines for Q4_0, Q4_1, Q8_0 and Q4_K; upstream llama.cpp issue 20824), while CPU_REPACK alone
works and is worth having (+41 % prompt, +8 % decode tok/s on a Q4_0 model, bench/RESULTS.md).
llama.cpp only turns both on or both off (`use_extra_bufts`), so "repack" turns them off and
sends each weight that CPU_REPACK would take there by name (`tensor_buft_overrides`), reading
the weights' types and shapes from the GGUF header and CPU_REPACK's x86 rules (ggml's
`ggml_repack_get_optimal_repack_type`: Q4_0, Q4_K, IQ4_NL, MXFP4 with AVX2; Q2_K with AVX512;
rows a multiple of 8). A weight it is unsure of stays in the plain CPU buffer: slower, never wrong.

Modes (`--extra-bufts`): on (llama.cpp's default), off (neither), repack, and auto: on, except
where ggml reports AMX_INT8 and this build has the AMX buffer type: repack there — or off when
a GPU build offloads layers, since an override would pin those weights to the CPU.

Does not: load the model (model.py), or apply the ARM/RISC-V repack rules (no AMX there: auto
keeps llama.cpp's own choice on those machines, and "repack" there means off).
"""
from __future__ import annotations

import ctypes
import logging
import re
from dataclasses import dataclass

from . import ggml
from .gguf import TensorInfo, read_tensors

log = logging.getLogger("unsloth_min.engine")

MODES = ("auto", "on", "off", "repack")
# ggml_type → the CPU feature CPU_REPACK needs for it on x86 (ggml/src/ggml-cpu/repack.cpp)
REPACK_X86 = {2: "AVX2", 12: "AVX2", 20: "AVX2", 39: "AVX2", 10: "AVX512"}  # Q4_0 Q4_K IQ4_NL MXFP4 Q2_K
REPACK_ROWS = 8
# weights used only by plain matrix products (MoE experts, MUL_MAT_ID, stay where llama.cpp puts them)
MATMUL = re.compile(r"^(?:blk\.(\d+)\.(attn_(?:q|k|v|qkv|output)|ffn_(?:gate|up|down)(?:_shexp)?)|(output))\.weight$")


class Override(ctypes.Structure):  # llama_model_tensor_buft_override
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


@dataclass
class Placement:
    """What `llama_model_params` gets: the flag, and the overrides (kept alive while loading)."""
    mode: str                      # the mode in effect (auto resolved)
    use_extra_bufts: bool = True
    patterns: tuple[str, ...] = ()
    buft: int | None = None        # CPU_REPACK's buffer type, for every pattern
    _array: object = None

    def apply(self, mp) -> None:
        mp.use_extra_bufts = self.use_extra_bufts
        if self.patterns:
            items = [Override(p.encode(), self.buft) for p in self.patterns] + [Override(None, None)]
            self._array = (Override * len(items))(*items)
            mp.tensor_buft_overrides = ctypes.cast(self._array, ctypes.c_void_p)


def gpu_free_memory() -> int | None:
    """Free memory summed over the GPUs ggml sees, RPC servers' included (None: no such device):
    where the KV cache of offloaded layers lives, so what the default context must fit in."""
    free = [d.free for d in ggml.devices() if d.kind in ggml.GPU_DEVICES]
    return sum(free) if free else None


class _Feature(ctypes.Structure):  # ggml_backend_feature
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]


def cpu_backend() -> tuple[dict[str, str], dict[str, int]]:
    """(the CPU backend's features, as llama.cpp prints them: AVX2, AMX_INT8…; its extra buffer
    types by name). Both empty where this build does not expose them."""
    lib = ggml.lib()
    dev = lib.ggml_backend_dev_by_type(ggml.CPU_DEVICE)
    reg = lib.ggml_backend_dev_backend_reg(dev) if dev else None
    if not reg:
        return {}, {}
    features, bufts = {}, {}
    get = ggml.proc(reg, "ggml_backend_get_features",
                    ctypes.CFUNCTYPE(ctypes.POINTER(_Feature), ctypes.c_void_p))
    if get:
        items = get(reg)
        i = 0
        while items[i].name:
            features[items[i].name.decode()] = (items[i].value or b"").decode()
            i += 1
    get = ggml.proc(reg, "ggml_backend_dev_get_extra_bufts",
                    ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p))
    if get:
        items = get(dev)
        i = 0
        while items and items[i]:
            bufts[lib.ggml_backend_buft_name(items[i]).decode()] = items[i]
            i += 1
    return features, bufts


def repack_patterns(tensors: list[TensorInfo], features: dict[str, str]) -> tuple[str, ...]:
    """Anchored patterns naming the weights CPU_REPACK takes on this x86 CPU, one per role
    (`blk\\.(0|3)\\.ffn_down\\.weight`): llama.cpp compiles each pattern for every tensor."""
    layers: dict[str, list[str]] = {}
    for t in tensors:
        m = MATMUL.match(t.name)
        need = REPACK_X86.get(t.type)
        if not m or need is None or features.get(need) != "1" or len(t.shape) != 2:
            continue
        if t.shape[1] % REPACK_ROWS:
            continue
        layers.setdefault(m.group(2) or m.group(3), []).append(m.group(1))
    out = []
    for role, ids in layers.items():
        if ids == [None]:
            out.append(rf"^{role}\.weight$")
        else:
            out.append(rf"^blk\.({'|'.join(ids)})\.{role}\.weight$")
    return tuple(out)


def choose(mode: str, path: str, offloading: bool) -> Placement:
    """The placement for `mode` (MODES) on this machine, for the model at `path`."""
    if mode == "on":
        return Placement("on")
    if mode == "off":
        return Placement("off", use_extra_bufts=False)
    features, bufts = cpu_backend()
    amx = features.get("AMX_INT8") == "1" and "AMX" in bufts
    if mode == "auto" and not amx:
        return Placement("on")
    if mode == "auto" and offloading:
        log.info("this CPU has AMX, whose weight buffers crash llama.cpp: extra buffer types off "
                 "(--extra-bufts chooses)")
        return Placement("off", use_extra_bufts=False)
    patterns = repack_patterns(read_tensors(path), features) if "CPU_REPACK" in bufts else ()
    if mode == "auto":
        log.info("this CPU has AMX, whose weight buffers crash llama.cpp: weights in CPU_REPACK "
                 "(%d roles) or plain CPU buffers instead (--extra-bufts chooses)", len(patterns))
    return Placement("repack", use_extra_bufts=False, patterns=patterns,
                     buft=bufts.get("CPU_REPACK"))
