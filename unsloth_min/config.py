"""The one Config: every command-line flag with its default, and the argparse that fills it.

Strategy: a dataclass is the single source of truth for defaults; `build_parser` derives the flags
from it so that README, `--help` and the code cannot drift apart.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field

from .agent import DEFAULT_MAX_CALLS
from .engine.bufts import MODES as BUFT_MODES
from .engine.model import FLASH_ATTN, ROPE_SCALING
from .engine.rpc import RPC_TIMEOUT_S, parse_endpoints
from .engine.scheduler import MAX_QUEUE
from .media import MAX_IMAGES
from .tools.common import MAX_KERNELS, SESSION_IDLE_S, TIMEOUT_S


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 8888
    model: str | None = None        # None → the embedded SmolLM2-135M-Instruct
    mmproj: str | None = None
    alias: str | None = None        # None → the model file's stem
    ctx_size: int = 0               # 0 → the training context, at least 32k (engine/model.py)
    parallel: int = 4
    n_gpu_layers: int = -1
    threads: int = 0                # 0 → the cores this process may use
    extra_bufts: str = "auto"       # llama.cpp's extra weight buffer types (engine/bufts.py)
    rpc: tuple[str, ...] = ()       # ggml-rpc-server endpoints the layers are split across
    tensor_split: tuple[float, ...] = ()  # per device: RPC servers first, then local GPUs
    rpc_timeout: float = RPC_TIMEOUT_S  # seconds a decode may wait on --rpc servers (engine/rpc.py)
    flash_attn: str = "auto"        # llama.cpp's choice (engine/model.py: why not off on a CPU)
    rope_scaling: str = "auto"      # the model's own (engine/model.py: why not YaRN)
    reasoning: str = "on"
    temp: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None  # None → 1.0 (off), the embedded model's EMBEDDED_REPEAT_PENALTY
    max_tokens: int | None = None
    n_predict: int | None = None    # a cap even on requests that ask for more
    api_key: list[str] = field(default_factory=list)
    chat_template: str | None = None
    max_queue: int = MAX_QUEUE      # the scheduler's queue: it owns the default
    max_images: int = MAX_IMAGES    # per request
    log_level: str = "info"
    # server tools (SPEC "Server tools")
    max_tool_calls: int = DEFAULT_MAX_CALLS
    tool_timeout: float = TIMEOUT_S
    search_url: str | None = None   # a SearXNG base URL; None → DuckDuckGo's HTML endpoint
    bash_network: str = "on"
    max_kernels: int = MAX_KERNELS
    session_idle: float = SESSION_IDLE_S
    allowed_host: list[str] = field(default_factory=list)  # extra Host names (DNS rebinding)
    cors_origin: list[str] = field(default_factory=list)  # origins browsers may call us from
    restart: int = 0                # crashes survived by starting a new server process
    cache_ram: int | None = None    # MiB of prompt states kept in RAM; None → engine/__init__.py
    cache_disk: float = 8.0         # GiB of prompt states on disk; 0 → none
    cache_dir: str | None = None    # None → $UNSLOTH_MIN_HOME/prompt-cache
    key_shown: bool = False         # (child) the supervisor printed a newly minted key
    listen_fd: int | None = None    # (child) the supervisor's listening socket
    ready_fd: int | None = None     # (child) where to say "ready"
    restarted: bool = False         # (child) started again by --restart: waits for --rpc servers


def _positive(kind):
    def check(text: str):
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value
    return check


def _endpoints(text: str) -> tuple[str, ...]:
    try:
        return parse_endpoints(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _split(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers like 3,1") from None
    if not all(math.isfinite(v) and v >= 0 for v in values) or not sum(values) > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: proportions are >= 0, and not all 0")
    return values


def build_parser() -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(
        prog="python -m unsloth_min",
        description="Serve one GGUF model over OpenAI Chat, Anthropic Messages and OpenAI Responses. "
                    "Subcommand: `keys create|list|revoke` manages API keys.")
    a = p.add_argument
    a("-H", "--host", default=d.host, help="address to bind (default %(default)s: this machine only)")
    a("-p", "--port", type=int, default=d.port, help="port (default %(default)s)")
    a("-m", "--model", default=d.model, help="path of a .gguf model (default: embedded SmolLM2-135M)")
    a("--mmproj", default=d.mmproj, metavar="FILE",
      help="vision projector .gguf matching the model: images are then seen, not dropped")
    a("--alias", default=d.alias, help="model id shown in /v1/models (default: the file's stem)")
    a("-c", "--ctx-size", type=_positive(int), default=d.ctx_size,
      help="tokens per sequence; the KV cache holds ctx-size x parallel (default: the model's "
           "training context but at least 32768, less if that cache would exceed half the free "
           "memory)")
    a("-np", "--parallel", type=_positive(int), default=d.parallel,
      help="sequences decoded together in one batch (default %(default)s)")
    a("-ngl", "--n-gpu-layers", type=int, default=d.n_gpu_layers,
      help="layers to offload to the GPU (default -1: all that fit; needs a CUDA/Metal build)")
    a("-t", "--threads", type=_positive(int), default=d.threads,
      help="CPU threads (default: the cores this process may use)")
    a("--extra-bufts", choices=BUFT_MODES, default=d.extra_bufts,
      help="llama.cpp's extra CPU weight buffers: on (AMX and CPU_REPACK, llama.cpp's default), "
           "off, repack (CPU_REPACK only), auto (default: on, but repack where the CPU has AMX, "
           "whose kernels crash llama.cpp)")
    a("-fa", "--flash-attn", choices=tuple(FLASH_ATTN), default=d.flash_attn,
      help="llama.cpp's flash attention (default auto: llama.cpp's choice, on where the device "
           "has it). off is faster on a CPU past a few thousand tokens of context, but answers "
           "then depend on the prompt cache (a seed no longer reproduces the same text)")
    a("--rope-scaling", choices=("auto", *ROPE_SCALING), default=d.rope_scaling,
      help="positions past the model's training context: auto (default) is the model's own "
           "(what its GGUF declares, else none: untrained); linear or yarn stretch the trained "
           "positions over --ctx-size, for every prompt (short answers change too)")
    a("--rpc", type=_endpoints, default=d.rpc, metavar="HOST:PORT[,HOST:PORT...]",
      help="split the model across these ggml-rpc-servers (llama.cpp's RPC backend; start one "
           "with .venv/bin/ggml-rpc-server -p PORT); -ngl layers go to them and to local GPUs, "
           "the rest stay on this CPU. IPv4 only. No authentication: private networks only")
    a("--rpc-timeout", type=_positive(float), default=d.rpc_timeout, metavar="SECONDS",
      help="a decode still waiting on the --rpc servers after this long (a host gone without a "
           "reset: a firewall, a frozen machine) ends every request with an error and the server "
           "process (see --restart) (default %(default)g; 0: wait for ever)")
    a("-ts", "--tensor-split", type=_split, default=d.tensor_split, metavar="N0,N1,...",
      help="proportion of the offloaded layers per device, RPC servers first in --rpc order, then "
           "local GPUs (default: by free memory)")
    a("--reasoning", choices=("on", "off"), default=d.reasoning,
      help="default for thinking when a request does not say (default %(default)s)")
    a("--temp", type=_positive(float), default=d.temp, help="default temperature (llama.cpp: 0.8)")
    a("--top-p", type=_positive(float), default=d.top_p, help="default top_p (llama.cpp: 0.95)")
    a("--top-k", type=_positive(int), default=d.top_k, help="default top_k (llama.cpp: 40)")
    a("--min-p", type=_positive(float), default=d.min_p, help="default min_p (llama.cpp: 0.05)")
    a("--repeat-penalty", type=_positive(float), default=d.repeat_penalty,
      help="default repetition penalty over the last 64 tokens (llama.cpp: 1.0, off; the "
           "embedded model: 1.1, against its loops)")
    a("--max-tokens", type=_positive(int), default=d.max_tokens,
      help="default cap on generated tokens (default: until the context is full)")
    a("-n", "--n-predict", type=_positive(int), default=d.n_predict, metavar="N",
      help="cap on generated tokens that no request can raise (llama-server's -n; a coding agent "
           "asks for 32-64k, which a small model may fill with loops) (default: none)")
    a("--api-key", action="append", default=[], metavar="KEY",
      help="accept this key too (repeatable); it is never stored")
    a("--chat-template", default=d.chat_template, metavar="FILE",
      help="Jinja chat template file used instead of the one inside the GGUF")
    a("--max-queue", type=_positive(int), default=d.max_queue,
      help="requests waiting for a free sequence before 503 (default %(default)s)")
    a("--max-images", type=_positive(int), default=d.max_images,
      help="images allowed in one request, inline or by URL (default %(default)s)")
    a("--log-level", default=d.log_level, choices=("debug", "info", "warning", "error"))
    a("--allowed-host", action="append", default=[], metavar="NAME",
      help="accept requests whose Host is NAME, besides localhost, 127.0.0.1 and [::1] "
           "(repeatable; '*' accepts any; given with a non-loopback --host, it is enforced there too)")
    a("--cors-origin", action="append", default=[], metavar="ORIGIN",
      help="let browser pages from ORIGIN (e.g. http://localhost:3000) call the API "
           "(repeatable; '*' for any origin; default: CORS off)")
    a("--restart", type=_positive(int), default=d.restart, metavar="N",
      help="when a fault inside llama.cpp kills the server process, start a new one, up to N "
           "times (default %(default)s: report the cause and exit)")
    a("--cache-ram", type=_positive(int), default=d.cache_ram, metavar="MiB",
      help="prompt states kept in RAM beyond the slots, least recently used out first; 0 turns "
           "it off (default: a quarter of the RAM free after loading, at most 8192)")
    a("--cache-disk", type=_positive(float), default=d.cache_disk, metavar="GiB",
      help="long prompt states also kept on disk, across restarts (default %(default)s; 0: none)")
    a("--cache-dir", default=d.cache_dir, metavar="DIR",
      help="folder of the disk prompt cache (default: $UNSLOTH_MIN_HOME/prompt-cache)")
    for hidden in ("--listen-fd", "--ready-fd"):  # set by the supervisor for its child
        a(hidden, type=int, default=None, help=argparse.SUPPRESS)
    a("--key-shown", action="store_true", help=argparse.SUPPRESS)
    a("--restarted", action="store_true", help=argparse.SUPPRESS)
    add_tool_flags(p, d)
    return p


def add_tool_flags(p: argparse.ArgumentParser, d: Config) -> None:
    g = p.add_argument_group("server tools", "python, bash and web_search, run for requests with "
                             "enable_tools (SPEC: Server tools)")
    a = g.add_argument
    a("--max-tool-calls", type=_positive(int), default=d.max_tool_calls,
      help="server tool calls per request before the model must answer (default %(default)s; "
           "a request's max_tool_calls may lower it)")
    a("--tool-timeout", type=_positive(float), default=d.tool_timeout,
      help="wall-clock seconds per tool call (default %(default)s)")
    a("--search-url", default=d.search_url, metavar="URL",
      help="SearXNG instance for web_search (default: DuckDuckGo's HTML endpoint)")
    a("--bash-network", choices=("on", "off"), default=d.bash_network,
      help="off: bash runs without network (unshare -rn), or not at all where that fails "
           "(default %(default)s)")
    a("--max-kernels", type=_positive(int), default=d.max_kernels,
      help="live Python kernels at most; the least recently used idle one makes room "
           "(default %(default)s)")
    a("--session-idle", type=_positive(float), default=d.session_idle, metavar="SECONDS",
      help="a session's Python kernel is shut down after this long without a call "
           "(default %(default)s)")


def parse_config(argv: list[str]) -> Config:
    ns = build_parser().parse_args(argv)
    if ns.parallel < 1:
        build_parser().error("--parallel must be at least 1")
    if ns.max_kernels < 1 or ns.tool_timeout <= 0:
        build_parser().error("--max-kernels must be at least 1 and --tool-timeout above 0")
    return Config(**vars(ns))
