"""The loaded GGUF: llama.cpp model + one context, tokens in and out, metadata.

Strategy: talk to llama.cpp through llama-cpp-python's low-level ctypes bindings (not the `Llama`
class), so that one context can hold several sequences (`n_seq_max`) that the scheduler decodes in
one batch. This module owns the C objects and frees them; it does not decode or sample.

Does not: render chat templates (template.py), schedule or sample (scheduler.py).
"""
from __future__ import annotations

import ctypes
import logging
import os
import time
from dataclasses import dataclass

import llama_cpp as C

from . import bufts, ggml, rpc
from .rpc import RPC_TIMEOUT_S

log = logging.getLogger("unsloth_min.engine")


@dataclass(frozen=True)
class ModelParams:
    path: str
    n_ctx: int = 0            # KV cells per sequence; 0 → the training context, at least MIN_DEFAULT_CTX
    n_parallel: int = 4       # sequences decoded together (llama-server's default)
    n_gpu_layers: int = -1    # -1 → every layer that fits (llama.cpp offloads all; CPU builds ignore it)
    n_threads: int = 0        # 0 → the cores this process may use
    n_batch: int = 512        # tokens per llama_decode (prompt chunks + one token per running seq)
    extra_bufts: str = "auto"  # bufts.MODES: llama.cpp's extra weight buffer types (AMX, CPU_REPACK)
    flash_attn: str = "auto"   # FLASH_ATTN: auto (llama.cpp's choice), on, off
    rpc: tuple[str, ...] = ()  # ggml-rpc-server endpoints (HOST:PORT) the layers are split across
    tensor_split: tuple[float, ...] = ()  # proportions per device (RPC servers first, then GPUs)
    rope_scaling: str = "auto"  # ROPE_SCALING or auto: the model's own (rope_scaling())
    rpc_timeout: float = RPC_TIMEOUT_S  # seconds inside llama.cpp with --rpc before giving up; 0: never
    rpc_wait: float = 0.0       # seconds to wait for an --rpc server that does not answer at start


def usable_cores() -> int:
    """llama.cpp's own default is all physical cores; ours is what the affinity mask allows."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# llama.cpp's flash attention. auto (llama.cpp's choice) is on where the device has the kernel,
# the CPU included. Off is faster on a CPU past a few thousand tokens (a token at 16k context:
# 109 ms against 382 ms on a 2-core EPYC) but its matrix products change with the batch's shape:
# an answer then depends on how much of its prompt came from the cache, and a seed stops
# reproducing the same text. So off is a choice (-fa off), not the default.
FLASH_ATTN = {"auto": C.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": C.LLAMA_FLASH_ATTN_TYPE_ENABLED,
              "off": C.LLAMA_FLASH_ATTN_TYPE_DISABLED}

# RoPE scaling: positions past a model's training context are ones it never saw. YaRN stretches
# the trained positions over the context served, but for every prompt, short ones too: on the
# embedded 135M model (8k trained, 32k served) it lengthened and looped short greedy answers
# ("What color is the sky?" 8 tokens → 59) while helping past 8k (Codex's recorded 9k-token first
# turn answered for 8 seeds in 9 with it, 2 in 3 without). So it is a choice; the default is the
# model's own (the embedded model's loops past 8k are met by its repeat penalty, cli.py).
ROPE_SCALING = {"none": C.LLAMA_ROPE_SCALING_TYPE_NONE, "linear": C.LLAMA_ROPE_SCALING_TYPE_LINEAR,
                "yarn": C.LLAMA_ROPE_SCALING_TYPE_YARN}


def rope_scaling(mode: str, n_ctx: int, n_ctx_train: int):
    """The (ROPE_SCALING kind, frequency scale) to give llama.cpp, or None for the model's own
    (auto: what its GGUF declares, else none); linear/yarn stretch the positions over n_ctx."""
    if mode == "auto":
        return None
    if mode == "none":
        return "none", 1.0
    return mode, min(1.0, n_ctx_train / n_ctx)


GIB = 1 << 30
# the default context is never below this: coding agents' first prompts are 20–30k tokens (Claude
# Code's system prompt and tools), past small models' training context, and must get an answer
MIN_DEFAULT_CTX = 32768
WARM_UP_TOKENS = 8  # a batch long enough to take llama.cpp's batched (prompt) kernels


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def split_array(split: tuple[float, ...]):
    """`--tensor-split` as llama_model_params wants it: a float per device, llama_max_devices() long."""
    if not split:
        return None
    n = C.llama_max_devices()
    if len(split) > n:
        raise RuntimeError(f"--tensor-split has {len(split)} values; this build takes at most {n}")
    return (ctypes.c_float * n)(*split)


_backend_ready = False
llama_log = logging.getLogger("unsloth_min.llama")
# ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the last line).
# llama.cpp's INFO is a page per model load: it goes to our DEBUG.
_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_last_level = [logging.DEBUG]


@C.llama_log_callback
def _forward_llama_log(level: int, text: bytes, _user) -> None:
    lvl = _last_level[0] if level == 5 else _LEVELS.get(level, logging.DEBUG)
    _last_level[0] = lvl
    if llama_log.isEnabledFor(lvl):
        line = text.decode("utf-8", "replace").rstrip()
        if line:
            llama_log.log(lvl, "%s", line)


def _init_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        C.llama_log_set(_forward_llama_log, ctypes.c_void_p(0))  # llama.cpp speaks through logging
        C.llama_backend_init()
        _backend_ready = True


def _abort_while_loading(message: str) -> None:
    """ggml gave up before the server serves (an RPC handshake refused, a failed assertion; or
    the --rpc watchdog saw the warm-up wait too long): say why in one line and end the process
    with a failed start, instead of abort()'s core dump."""
    log.error("llama.cpp stopped while loading the model: %s", message)
    logging.shutdown()
    os._exit(1)


class Model:
    """One model, one context: `n_parallel` sequences of up to `n_ctx` tokens each."""

    def __init__(self, params: ModelParams):
        _init_backend()
        ggml.on_abort(_abort_while_loading)  # the engine takes over once it serves
        self.params = params
        self.busy_since: float | None = None  # when the worker entered llama.cpp (watched())
        self._busy = Busy(self)  # (one, reused: entered once per decode step)
        self.watchdog: rpc.Watchdog | None = None
        self.model = self._load_weights(params)
        self.vocab = C.llama_model_get_vocab(self.model)
        self.n_vocab = C.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = C.llama_model_n_ctx_train(self.model)
        self.n_ctx = self._fit_kv(params, params.n_ctx or max(self.n_ctx_train, MIN_DEFAULT_CTX))
        self.rope = rope_scaling(params.rope_scaling, self.n_ctx, self.n_ctx_train)
        if self.n_ctx > self.n_ctx_train:
            log.warning("%d tokens per sequence is past the model's training context %d: %s, "
                        "answers to longer prompts may be poor (-c/--ctx-size, --rope-scaling)",
                        self.n_ctx, self.n_ctx_train, self._positions_past_training())
        self.n_threads = params.n_threads or usable_cores()
        self.ctx = C.llama_init_from_model(self.model, self._context_params())
        if not self.ctx:
            C.llama_model_free(self.model)
            raise RuntimeError("could not create the llama.cpp context (out of memory?)")
        self.memory = C.llama_get_memory(self.ctx)
        # per-token lookups the worker makes after every decode: one ctypes call each (tens of
        # microseconds with the caches cold from the decode), so each answer is kept
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._eog: dict[int, bool] = {}
        if params.rpc and params.rpc_timeout > 0:  # (the engine takes `on_stuck` over once it serves)
            self.watchdog = rpc.Watchdog(params.rpc, params.rpc_timeout, lambda: self.busy_since,
                                         _abort_while_loading)

    def watched(self) -> "Busy":
        """Around calls into llama.cpp that may wait on --rpc servers: `busy_since` says since
        when, for the watchdog (rpc.Watchdog). With RPC devices llama_decode only sends the
        work: what waits for it is llama_synchronize, or the next call that reads a result, so
        a decode and the sampling after it are watched as one. Nested: the outermost counts."""
        return self._busy

    def _load_weights(self, params: ModelParams):
        """The llama.cpp model: RPC servers added, weights placed (bufts.py) and split."""
        if params.rpc:
            rpc.add_servers(params.rpc, params.rpc_wait)
        mp = C.llama_model_default_params()
        mp.n_gpu_layers = 999 if params.n_gpu_layers < 0 else params.n_gpu_layers
        # a device to offload to: a GPU, or an RPC server (llama_supports_gpu_offload() is true
        # for any build with the RPC backend, servers or not)
        self.offloading = params.n_gpu_layers != 0 and bufts.gpu_free_memory() is not None
        self.placement = bufts.choose(params.extra_bufts, params.path, self.offloading)
        self.placement.apply(mp)
        self._split = split_array(params.tensor_split)  # (kept: llama.cpp reads it while loading)
        if self._split is not None:
            mp.tensor_split = self._split
        model = C.llama_model_load_from_file(params.path.encode(), mp)
        if not model:
            raise RuntimeError(f"could not load model {params.path}")
        if params.rpc:
            log.info("devices: %s", ", ".join(f"{d.name} {d.description} ({d.free >> 20} MiB free)"
                                              for d in ggml.devices() if d.kind != ggml.CPU_DEVICE))
        return model

    def warm_up(self) -> None:
        """Decode a short batch, then one token, and forget them (llama-server does one too): a
        kernel that fails on this machine fails here, at start, not on a user's request. A batch
        of several tokens takes the prompt path (the AMX kernels crash there), one the decode path.

        Call it on the thread that decodes afterwards (the scheduler's worker), never on another:
        llama.cpp's CPU backend runs each graph on an OpenMP team, and libgomp keeps one team per
        calling thread for as long as that thread lives. Two teams of n_threads on n_threads
        cores are more OpenMP threads than CPUs, and libgomp then spins 100 times instead of
        300,000 before it sleeps (GOMP_SPINCOUNT in its manual): the barriers between a decode's
        graph nodes sleep and wake in the kernel. A warm-up on the loading thread (a pool thread
        that stays alive) took single-stream decode from 100 to 54 tok/s on a 2-core EPYC."""
        text = "The warm-up decode checks that this machine runs the model."
        tokens = self.tokenize(text, add_bos=self.add_bos)[:WARM_UP_TOKENS]
        arr = (C.llama_token * len(tokens))(*tokens)
        with self.watched():
            for n, start in ((len(tokens) - 1, 0), (1, len(tokens) - 1)):
                rc = C.llama_decode(self.ctx, C.llama_batch_get_one(
                    ctypes.cast(ctypes.byref(arr, start * ctypes.sizeof(C.llama_token)),
                                ctypes.POINTER(C.llama_token)), n))
                if rc != 0:
                    raise RuntimeError(f"the warm-up decode failed (llama_decode returned {rc}) with "
                                       f"--extra-bufts {self.placement.mode}: try --extra-bufts off"
                                       + (" or -ngl 0" if self.offloading else ""))
            C.llama_synchronize(self.ctx)
        C.llama_memory_clear(self.memory, True)

    def _positions_past_training(self) -> str:
        """What becomes of the positions past the training context, for the start's warning."""
        if self.rope and self.rope[0] != "none":
            return f"{self.rope[0]} rope scaling stretches its positions x{1 / self.rope[1]:.2g}"
        declared = self.meta(f"{self.meta('general.architecture')}.rope.scaling.type")
        if self.rope is None and declared not in (None, "", "none"):
            return f"its own {declared} rope scaling applies"
        return "its positions past that are untrained"

    def kv_bytes_per_token(self) -> int:
        """An estimate of one KV cell (f16 K and V on every layer), from the model's shape."""
        m = self.model
        head_dim = C.llama_model_n_embd(m) // max(C.llama_model_n_head(m), 1)
        return C.llama_model_n_layer(m) * 2 * C.llama_model_n_head_kv(m) * head_dim * 2

    def _fit_kv(self, params: ModelParams, n_ctx: int) -> int:
        """The context per sequence, shrunk when the default (the training context) would give
        a KV cache beyond half the available memory (a big model's 128k × 4 slots is tens of
        GiB); an explicit --ctx-size is kept, with a warning when it looks too big. With layers
        on a GPU the cache is there too: the GPUs' free memory counts (the weights are loaded)."""
        per_token = self.kv_bytes_per_token()
        need = per_token * n_ctx * params.n_parallel
        vram = bufts.gpu_free_memory() if self.offloading else None
        avail = vram if vram is not None else available_memory()
        where = "of free GPU memory" if vram is not None else "of available RAM"
        if avail and need > avail // 2 and not params.n_ctx:
            fit = (avail // 2) // (per_token * params.n_parallel) // 256 * 256
            fit = max(min(fit, n_ctx), 512)
            log.warning("the training context %d x %d slots needs a %.1f GiB KV cache, more than "
                        "half the %.1f GiB %s: using %d tokens per sequence (choose with "
                        "-c/--ctx-size and -np/--parallel)", n_ctx, params.n_parallel, need / GIB,
                        avail / GIB, where, fit)
            return fit
        if avail and need > avail:
            log.warning("the KV cache for -c %d x %d slots needs %.1f GiB, more than the %.1f GiB "
                        "%s", n_ctx, params.n_parallel, need / GIB, avail / GIB, where)
        log.info("KV cache: %d slots x %d tokens, about %.2f GiB; flash attention %s",
                 params.n_parallel, n_ctx, need / GIB, params.flash_attn)
        return n_ctx

    def _context_params(self):
        p = self.params
        cp = C.llama_context_default_params()
        # Each sequence gets its own stream of n_ctx KV cells (llama-server's -c N*np -np N):
        # a request's attention then sees exactly the same cells whether it runs alone or beside
        # others, so batching never changes its text (a shared, unified pool interleaves cells and
        # changes float summation order). The price: KV memory grows with --parallel.
        cp.n_seq_max = p.n_parallel
        cp.n_ctx = self.n_ctx * p.n_parallel
        cp.kv_unified = False
        cp.n_batch = cp.n_ubatch = p.n_batch
        cp.n_threads = cp.n_threads_batch = self.n_threads
        cp.flash_attn_type = FLASH_ATTN[p.flash_attn]
        cp.no_perf = True
        if self.rope:
            kind, scale = self.rope
            cp.rope_scaling_type, cp.rope_freq_scale = ROPE_SCALING[kind], scale
            cp.yarn_orig_ctx = self.n_ctx_train
        return cp

    def layout(self) -> dict:
        """What a saved sequence state depends on besides the model file and llama.cpp's build."""
        p = self.params
        return {"n_ctx": self.n_ctx, "n_seq": p.n_parallel, "kv_type": "f16", "flash_attn": p.flash_attn,
                "rope": self.rope, "n_gpu_layers": p.n_gpu_layers if self.offloading else 0,
                "placement": self.placement.mode, "rpc": list(p.rpc), "tensor_split": list(p.tensor_split)}

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        if getattr(self, "ctx", None):
            C.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            C.llama_model_free(self.model)
            self.model = None

    # ---- metadata --------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = C.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):  # a big chat template
            buf = ctypes.create_string_buffer(n + 1)
            C.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    def chat_template(self) -> str | None:
        raw = C.llama_model_chat_template(self.model, None)
        return raw.decode("utf-8", "replace") if raw else None

    def special_text(self, token: int) -> str:
        return self.piece(token, special=True).decode("utf-8", "replace") if token >= 0 else ""

    @property
    def bos(self) -> int:
        return C.llama_vocab_bos(self.vocab)

    @property
    def eos(self) -> int:
        return C.llama_vocab_eos(self.vocab)

    @property
    def add_bos(self) -> bool:
        return bool(C.llama_vocab_get_add_bos(self.vocab))

    def is_eog(self, token: int) -> bool:
        eog = self._eog.get(token)
        if eog is None:
            eog = self._eog[token] = bool(C.llama_vocab_is_eog(self.vocab, token))
        return eog

    # ---- tokens ----------------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = False, special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (C.llama_token * cap)()
        n = C.llama_tokenize(self.vocab, data, len(data), buf, cap, add_bos, special)
        if n < 0:  # never with cap > bytes, but follow the API
            cap = -n
            buf = (C.llama_token * cap)()
            n = C.llama_tokenize(self.vocab, data, len(data), buf, cap, add_bos, special)
        return list(buf[:n])

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token (may be part of a UTF-8 character)."""
        out = self._pieces.get((token, special))
        if out is None:
            out = self._pieces[(token, special)] = self._piece(token, special)
        return out

    def _piece(self, token: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)  # per call: tokens are decoded from two threads
        n = C.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = C.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")


class Busy:
    """Model.watched(): sets the model's `busy_since` while the outermost of nested uses runs."""
    __slots__ = ("model", "depth")

    def __init__(self, model: Model):
        self.model, self.depth = model, 0

    def __enter__(self):
        if not self.depth:
            self.model.busy_since = time.monotonic()
        self.depth += 1

    def __exit__(self, *exc):
        self.depth -= 1
        if not self.depth:
            self.model.busy_since = None
