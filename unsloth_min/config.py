"""The one Config: every command-line flag declared once, as a field with its default and its help.

Strategy: each field that is a flag is declared with `flag(...)` — default, short names, argparse
keywords and help in one place — and `build_parser` walks the fields in order, so README, `--help`
and the code cannot drift apart. Fields declared plain (`= value`) are not flags.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields

from .agent import DEFAULT_MAX_CALLS
from .engine.bufts import MODES as BUFT_MODES
from .engine.model import FLASH_ATTN, ROPE_SCALING
from .engine.rpc import RPC_TIMEOUT_S, parse_endpoints
from .engine.scheduler import MAX_QUEUE
from .media import MAX_IMAGES
from .tools.common import MAX_KERNELS, SESSION_IDLE_S, TIMEOUT_S

OPS = ("operations", "GET /metrics, /slots, /props; unloading the model when idle")
TOOLS = ("server tools", "python, bash and web_search, run for requests with enable_tools "
         "(SPEC: Server tools)")


def flag(default, *names: str, group: tuple[str, str] | None = None, **argparse_kw):
    """A Config field that is also a flag: `names` are its short spellings (the long one is the
    field's name with dashes), `argparse_kw` go to add_argument as they are."""
    meta = {"flag": (names, group, argparse_kw)}
    if isinstance(default, list):
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


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


HIDDEN = argparse.SUPPRESS  # set by the supervisor for its child


@dataclass
class Config:
    host: str = flag("127.0.0.1", "-H", help="address to bind (default %(default)s: this machine only)")
    port: int = flag(8888, "-p", type=int, help="port (default %(default)s)")
    model: str | None = flag(None, "-m", help="path of a .gguf model (default: embedded SmolLM2-135M)")
    mmproj: str | None = flag(None, metavar="FILE", help="vision projector .gguf matching the model: "
                              "images are then seen, not dropped")
    alias: str | None = flag(None, help="model id shown in /v1/models (default: the file's stem)")
    ctx_size: int = flag(0, "-c", type=_positive(int), help=(  # 0 → engine/model.py decides
        "tokens per sequence; the KV cache holds ctx-size x parallel (default: the model's training "
        "context but at least 32768, less if that cache would exceed half the free memory)"))
    parallel: int = flag(4, "-np", type=_positive(int),
                         help="sequences decoded together in one batch (default %(default)s)")
    n_gpu_layers: int = flag(-1, "-ngl", type=int, help="layers to offload to the GPU (default -1: "
                             "all that fit; needs a CUDA/Metal build)")
    threads: int = flag(0, "-t", type=_positive(int),
                        help="CPU threads (default: the cores this process may use)")
    extra_bufts: str = flag("auto", choices=BUFT_MODES, help=(
        "llama.cpp's extra CPU weight buffers: on (AMX and CPU_REPACK, llama.cpp's default), off, "
        "repack (CPU_REPACK only), auto (default: on, but repack where the CPU has AMX, whose "
        "kernels crash llama.cpp)"))
    flash_attn: str = flag("auto", "-fa", choices=tuple(FLASH_ATTN), help=(
        "llama.cpp's flash attention (default auto: llama.cpp's choice, on where the device has "
        "it). off is faster on a CPU past a few thousand tokens of context, but answers then "
        "depend on the prompt cache (a seed no longer reproduces the same text)"))
    rope_scaling: str = flag("auto", choices=("auto", *ROPE_SCALING), help=(
        "positions past the model's training context: auto (default) is the model's own (what its "
        "GGUF declares, else none: untrained); linear or yarn stretch the trained positions over "
        "--ctx-size, for every prompt (short answers change too)"))
    rpc: tuple[str, ...] = flag((), type=_endpoints, metavar="HOST:PORT[,HOST:PORT...]", help=(
        "split the model across these ggml-rpc-servers (llama.cpp's RPC backend; start one with "
        ".venv/bin/ggml-rpc-server -p PORT); -ngl layers go to them and to local GPUs, the rest "
        "stay on this CPU. IPv4 only. No authentication: private networks only"))
    rpc_timeout: float = flag(RPC_TIMEOUT_S, type=_positive(float), metavar="SECONDS", help=(
        "a decode still waiting on the --rpc servers after this long (a host gone without a "
        "reset: a firewall, a frozen machine) ends every request with an error and the server "
        "process (see --restart) (default %(default)g; 0: wait for ever)"))
    tensor_split: tuple[float, ...] = flag((), "-ts", type=_split, metavar="N0,N1,...", help=(
        "proportion of the offloaded layers per device, RPC servers first in --rpc order, then "
        "local GPUs (default: by free memory)"))
    reasoning: str = flag("on", choices=("on", "off"),
                          help="default for thinking when a request does not say (default %(default)s)")
    temp: float | None = flag(None, type=_positive(float), help="default temperature (llama.cpp: 0.8)")
    top_p: float | None = flag(None, type=_positive(float), help="default top_p (llama.cpp: 0.95)")
    top_k: int | None = flag(None, type=_positive(int), help="default top_k (llama.cpp: 40)")
    min_p: float | None = flag(None, type=_positive(float), help="default min_p (llama.cpp: 0.05)")
    repeat_penalty: float | None = flag(None, type=_positive(float), help=(  # None → engine's choice
        "default repetition penalty over the last 64 tokens (llama.cpp: 1.0, off; the embedded "
        "model: 1.1, against its loops)"))
    max_tokens: int | None = flag(None, type=_positive(int), help=(
        "default cap on generated tokens (default: until the context is full)"))
    n_predict: int | None = flag(None, "-n", type=_positive(int), metavar="N", help=(
        "cap on generated tokens that no request can raise (llama-server's -n; a coding agent asks "
        "for 32-64k, which a small model may fill with loops) (default: none)"))
    api_key: list[str] = flag([], action="append", metavar="KEY",
                              help="accept this key too (repeatable); it is never stored")
    chat_template: str | None = flag(None, metavar="FILE", help=(
        "Jinja chat template file used instead of the one inside the GGUF"))
    max_queue: int = flag(MAX_QUEUE, type=_positive(int),
                          help="requests waiting for a free sequence before 503 (default %(default)s)")
    max_images: int = flag(MAX_IMAGES, type=_positive(int),
                           help="images allowed in one request, inline or by URL (default %(default)s)")
    log_level: str = flag("info", choices=("debug", "info", "warning", "error"))
    allowed_host: list[str] = flag([], action="append", metavar="NAME", help=(  # DNS rebinding
        "accept requests whose Host is NAME, besides localhost, 127.0.0.1 and [::1] (repeatable; "
        "'*' accepts any; given with a non-loopback --host, it is enforced there too)"))
    cors_origin: list[str] = flag([], action="append", metavar="ORIGIN", help=(
        "let browser pages from ORIGIN (e.g. http://localhost:3000) call the API (repeatable; '*' "
        "for any origin; default: CORS off)"))
    restart: int = flag(0, type=_positive(int), metavar="N", help=(
        "when a fault inside llama.cpp kills the server process, start a new one, up to N times "
        "(default %(default)s: report the cause and exit)"))
    cache_ram: int | None = flag(None, type=_positive(int), metavar="MiB", help=(  # engine decides
        "prompt states kept in RAM beyond the slots, least recently used out first; 0 turns it off "
        "(default: a quarter of the RAM free after loading, at most 8192)"))
    cache_disk: float = flag(8.0, type=_positive(float), metavar="GiB", help=(
        "long prompt states also kept on disk, across restarts (default %(default)s; 0: none)"))
    cache_dir: str | None = flag(None, metavar="DIR", help=(
        "folder of the disk prompt cache (default: $UNSLOTH_MIN_HOME/prompt-cache)"))
    listen_fd: int | None = flag(None, type=int, help=HIDDEN)  # the supervisor's listening socket
    ready_fd: int | None = flag(None, type=int, help=HIDDEN)   # where to say "ready"
    key_shown: bool = flag(False, action="store_true", help=HIDDEN)  # the supervisor printed a new key
    restarted: bool = flag(False, action="store_true", help=HIDDEN)  # by --restart: wait for --rpc
    # server tools (SPEC "Server tools")
    max_tool_calls: int = flag(DEFAULT_MAX_CALLS, group=TOOLS, type=_positive(int), help=(
        "server tool calls per request before the model must answer (default %(default)s; a "
        "request's max_tool_calls may lower it)"))
    tool_timeout: float = flag(TIMEOUT_S, group=TOOLS, type=_positive(float),
                               help="wall-clock seconds per tool call (default %(default)s)")
    search_url: str | None = flag(None, group=TOOLS, metavar="URL", help=(
        "SearXNG instance for web_search (default: DuckDuckGo's HTML endpoint)"))
    bash_network: str = flag("on", group=TOOLS, choices=("on", "off"), help=(
        "off: bash runs without network (unshare -rn), or not at all where that fails "
        "(default %(default)s)"))
    max_kernels: int = flag(MAX_KERNELS, group=TOOLS, type=_positive(int), help=(
        "live Python kernels at most; the least recently used idle one makes room "
        "(default %(default)s)"))
    session_idle: float = flag(SESSION_IDLE_S, group=TOOLS, type=_positive(float), metavar="SECONDS",
                               help=("a session's Python kernel is shut down after this long without "
                                     "a call (default %(default)s)"))
    # operations (sleep.py, ops.py)
    sleep_idle: float = flag(0.0, group=OPS, type=_positive(float), metavar="SECONDS", help=(
        "unload the model after this long without a request (RAM and VRAM freed; the port stays "
        "open, the next request loads it again) (default: never)"))
    metrics_public: bool = flag(False, group=OPS, action="store_true", help=(
        "serve GET /metrics without a key (for a scraper on this host; default: keyed like every "
        "route)"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m unsloth_min",
        description="Serve one GGUF model over OpenAI Chat, Anthropic Messages and OpenAI Responses. "
                    "Subcommand: `keys create|list|revoke` manages API keys.")
    groups: dict[tuple[str, str], argparse._ArgumentGroup] = {}
    for f in fields(Config):
        if "flag" not in f.metadata:
            continue
        names, group, kw = f.metadata["flag"]
        if group is not None and group not in groups:
            groups[group] = p.add_argument_group(*group)
        target = p if group is None else groups[group]
        default = [] if kw.get("action") == "append" else f.default
        target.add_argument(*names, "--" + f.name.replace("_", "-"), default=default, **kw)
    return p


def parse_config(argv: list[str]) -> Config:
    ns = build_parser().parse_args(argv)
    if ns.parallel < 1:
        build_parser().error("--parallel must be at least 1")
    if ns.max_kernels < 1 or ns.tool_timeout <= 0:
        build_parser().error("--max-kernels must be at least 1 and --tool-timeout above 0")
    return Config(**vars(ns))
