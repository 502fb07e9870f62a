"""ggml's C API where llama-cpp-python has no binding: backend devices and registries, and the
abort hook.

Strategy: ggml's symbols resolve through libllama's handle (its dependencies), bound once with
their C types. `ggml_abort` (a failed GGML_ASSERT, a lost RPC server) calls the process's one
abort callback and then abort(): `on_abort` puts a Python function there, which may log, answer
what it can and park its thread for good instead of returning into abort().

Does not: choose where weights go (bufts.py), talk to RPC servers (rpc.py), or decide what an
abort means for the server (the engine does).
"""
from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Callable

import llama_cpp as C

CPU_DEVICE = 0  # GGML_BACKEND_DEVICE_TYPE_CPU
GPU_DEVICES = (1, 2)  # GGML_BACKEND_DEVICE_TYPE_GPU, _IGPU (an RPC server's devices say GPU)
_vp, _str, _size = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
_SIGNATURES = (
    ("ggml_backend_dev_by_type", [ctypes.c_int], _vp),
    ("ggml_backend_dev_count", [], _size),
    ("ggml_backend_dev_get", [_size], _vp),
    ("ggml_backend_dev_type", [_vp], ctypes.c_int),
    ("ggml_backend_dev_name", [_vp], _str),
    ("ggml_backend_dev_description", [_vp], _str),
    ("ggml_backend_dev_memory", [_vp, ctypes.POINTER(_size), ctypes.POINTER(_size)], None),
    ("ggml_backend_dev_backend_reg", [_vp], _vp),
    ("ggml_backend_reg_by_name", [_str], _vp),
    ("ggml_backend_reg_name", [_vp], _str),
    ("ggml_backend_reg_get_proc_address", [_vp, _str], _vp),
    ("ggml_backend_register", [_vp], None),
    ("ggml_backend_buft_name", [_vp], _str),
    ("ggml_set_abort_callback", [_vp], _vp),
)


@functools.cache
def lib():
    handle = C.llama_cpp._lib
    for name, args, res in _SIGNATURES:
        fn = getattr(handle, name)
        fn.argtypes, fn.restype = args, res
    return handle


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    kind: int        # CPU_DEVICE, one of GPU_DEVICES, or another ggml type (ACCEL)
    backend: str     # its registry: "CPU", "CUDA", "RPC"…
    free: int
    total: int


def devices() -> list[Device]:
    """Every device ggml knows now, with its memory (an RPC server's is asked over the network)."""
    g, free, total, out = lib(), _size(), _size(), []
    for i in range(g.ggml_backend_dev_count()):
        dev = g.ggml_backend_dev_get(i)
        g.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        reg = g.ggml_backend_dev_backend_reg(dev)
        out.append(Device(g.ggml_backend_dev_name(dev).decode(),
                          (g.ggml_backend_dev_description(dev) or b"").decode(),
                          g.ggml_backend_dev_type(dev), g.ggml_backend_reg_name(reg).decode(),
                          free.value, total.value))
    return out


def proc(reg: int, name: str, ctype):
    """A registry's extra entry point (`ggml_backend_reg_get_proc_address`) as `ctype`, or None."""
    addr = lib().ggml_backend_reg_get_proc_address(reg, name.encode())
    return ctype(addr) if addr else None


_ABORT = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
_handler: list[Callable[[str], None]] = []


@_ABORT
def _on_abort(message: bytes | None) -> None:  # on whichever thread failed, C++ ones included
    text = (message or b"").decode("utf-8", "replace").strip()
    if _handler:
        _handler[0](text)  # ggml calls abort() if this returns


def on_abort(handler: Callable[[str], None] | None) -> None:
    """Send ggml's aborts to `handler(message)` (None: its own message and backtrace again)."""
    _handler[:] = [handler] if handler else []
    lib().ggml_set_abort_callback(ctypes.cast(_on_abort, _vp) if handler else None)
