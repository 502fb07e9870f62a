"""`python -m unsloth_min`: flags → Config → keys, engine, app, HTTP server; or `keys …`.

Strategy: bind the port first (so /health can say "loading"), load the model in a thread, then
serve until SIGINT/SIGTERM, when the server stops accepting, lets streams finish briefly, cancels
the rest, shuts every tool process down and frees the model. The one key minted on a first start
goes to stdout, never the log. `keys create|list|revoke` is a plain argparse over auth.py's
`KeyStore`; a key is printed once, by `create`, and never again.
"""
from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from .app import App
from .auth import KEY_PREFIX, Authenticator, KeyRecord, KeyStore, KeyStoreError, default_home, ensure_key
from .config import Config, parse_config
from .core import Sampling
from .engine import CacheOptions, Engine, EngineOptions, embedded_model_path
from .engine.model import ModelParams
from .guard import Guard, check_bind
from .http import HttpServer
from .tools import ToolOptions, ToolRegistry
from .media import MediaLimits
from .ops import Ops
from .sleep import Sleeper
from .supervisor import EXIT_MODEL_GONE, Supervisor, listen, say_ready

log = logging.getLogger("unsloth_min")
# the embedded 135M model loops rather than ends; coding agents ask for 32-64k tokens: without a
# -n of the user's, it answers at most this many
EMBEDDED_N_PREDICT = 1024
# and without a penalty on repeats it loops to that cap on coding agents' long prompts: live
# `codex exec` turns (9k-token prompt) ended by themselves 2 times in 3 without one, 7 in 7 with
# 1.1 (3 of them with llama.cpp's positions, 4 with --rope-scaling yarn)
EMBEDDED_REPEAT_PENALTY = 1.1
SHUTDOWN_GRACE = 5.0  # seconds an in-flight response gets after SIGTERM before it is cancelled
# once the model is gone, the process ends within this even if its event loop cannot (a worker
# stuck in llama.cpp holding a lock the loop waits for): the supervisor then replaces it
GONE_EXIT_S = SHUTDOWN_GRACE + 10.0


def engine_options(cfg: Config) -> EngineOptions:
    path = cfg.model or embedded_model_path()
    template = None
    if cfg.chat_template:
        with open(cfg.chat_template, encoding="utf-8") as f:
            template = f.read()
    stem = os.path.basename(path).removesuffix(".gguf")
    return EngineOptions(
        model_path=path, model_id=cfg.alias or stem,
        params=ModelParams(path=path, n_ctx=cfg.ctx_size, n_parallel=cfg.parallel,
                           n_gpu_layers=cfg.n_gpu_layers, n_threads=cfg.threads,
                           extra_bufts=cfg.extra_bufts, flash_attn=cfg.flash_attn, rpc=cfg.rpc,
                           tensor_split=cfg.tensor_split, rope_scaling=cfg.rope_scaling,
                           rpc_timeout=cfg.rpc_timeout, rpc_wait=math.inf if cfg.restarted else 0.0),
        defaults=Sampling(temperature=cfg.temp, top_p=cfg.top_p, top_k=cfg.top_k, min_p=cfg.min_p,
                          max_tokens=cfg.max_tokens, repetition_penalty=cfg.repeat_penalty or (
                              None if cfg.model else EMBEDDED_REPEAT_PENALTY)),
        reasoning=cfg.reasoning == "on", chat_template=template, max_queue=cfg.max_queue,
        mmproj=cfg.mmproj, n_predict=cfg.n_predict or (None if cfg.model else EMBEDDED_N_PREDICT),
        cache=CacheOptions(ram_mib=cfg.cache_ram, disk_gib=cfg.cache_disk,
                           folder=cfg.cache_dir or str(default_home() / "prompt-cache")))


def tool_options(cfg: Config) -> ToolOptions:
    return ToolOptions(home=default_home(), timeout=cfg.tool_timeout, search_url=cfg.search_url,
                       bash_network=cfg.bash_network == "on", max_kernels=cfg.max_kernels,
                       session_idle=cfg.session_idle)


def stop_on_signals() -> asyncio.Event:
    """An event SIGINT or SIGTERM sets (on the running loop)."""
    stop, loop = asyncio.Event(), asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(cfg: Config, auth: Authenticator, new_key: str | None = None,
                make_engine=Engine, sock: socket.socket | None = None) -> int:
    """Serve until SIGINT/SIGTERM, or until the engine is gone (EXIT_MODEL_GONE), on `sock` if
    given. `make_engine(EngineOptions)` builds the engine (tests script it)."""
    opts = engine_options(cfg)
    tools = ToolRegistry(tool_options(cfg))
    app = make_app(cfg, opts, auth, tools)
    server = HttpServer(app.handle, error_response=app.error_response, screen=app.screen)
    app.ops.connections = lambda: server.open_connections
    await server.start(cfg.host, cfg.port, sock)
    stop, loop = stop_on_signals(), asyncio.get_running_loop()
    serving = asyncio.create_task(server.serve_forever())
    gone: list[str] = []

    def engine_gone(message: str) -> None:  # any thread
        gone.append(message)
        deadline = threading.Timer(GONE_EXIT_S, os._exit, (EXIT_MODEL_GONE,))
        deadline.daemon = True
        deadline.start()
        loop.call_soon_threadsafe(stop.set)

    def load():  # at start, and again after each --sleep-idle unload
        engine = make_engine(opts)
        engine.on_gone = engine_gone
        opts.params = replace(opts.params, n_ctx=engine.n_ctx)  # the same context when woken
        return engine
    try:
        app.engine = await asyncio.to_thread(load)
        banner(cfg, server, app.engine, new_key)
        say_ready(cfg.ready_fd)
        if cfg.sleep_idle:
            app.sleeper = Sleeper(app, load, cfg.sleep_idle)
            app.sleeper.start()
        await stop.wait()
        if gone:
            log.error("the model is gone (%s): stopping with exit status %d", gone[0], EXIT_MODEL_GONE)
    finally:
        await shut_down(app, server, serving, tools)
    return EXIT_MODEL_GONE if gone else 0


def make_app(cfg: Config, opts: EngineOptions, auth: Authenticator, tools: ToolRegistry) -> App:
    return App(opts.model_id, auth, tools=tools, max_tool_calls=cfg.max_tool_calls,
               media=MediaLimits(max_images=cfg.max_images),
               guard=Guard.for_bind(cfg.host, cfg.allowed_host, cfg.cors_origin),
               ops=Ops(opts.stats), metrics_public=cfg.metrics_public)


async def shut_down(app: App, server: HttpServer, serving: asyncio.Task, tools: ToolRegistry) -> None:
    log.info("shutting down")
    await server.shutdown(SHUTDOWN_GRACE)
    serving.cancel()
    await tools.close()  # every kernel; bash calls ended with their cancelled requests
    if app.sleeper is not None:  # an unload or a load under way ends first
        await app.sleeper.close()
    if app.engine is not None:
        await asyncio.to_thread(app.engine.close)


def banner(cfg: Config, server, engine: Engine, new_key: str | None) -> None:
    host = f"[{server.host}]" if ":" in server.host else server.host
    hint = "key: the one printed above" if new_key or cfg.key_shown else "keys: python -m unsloth_min keys list"
    vision = f", vision: {os.path.basename(cfg.mmproj)}" if cfg.mmproj else ""
    print(f"unsloth_min: serving {engine.model_id} on http://{host}:{server.port}/v1 "
          f"(ctx {engine.n_ctx}, {cfg.parallel} slots, {engine.model.n_threads} threads{vision}; "
          f"{hint})", flush=True)


def main(argv: list[str] | None = None, child: list[str] | None = None) -> int:
    """The supervisor (binds the port, mints a first key, runs the server as its child), or,
    given the supervisor's socket, the server itself. `child`: the server's command (tests)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keys"]:
        return keys_command(argv[1:], default_home())
    cfg = parse_config(argv)
    logging.basicConfig(level=cfg.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = KeyStore(default_home())
    try:
        if cfg.listen_fd is None:
            return supervise(cfg, argv, store, child)
        faulthandler.enable()  # a fault inside llama.cpp: where, on stderr; the supervisor says why
        sock = socket.socket(fileno=cfg.listen_fd)
        code = asyncio.run(serve(cfg, Authenticator(store, cfg.api_key), sock=sock))
    except (OSError, RuntimeError) as e:  # a missing model file, a busy port, a failed load
        print(f"unsloth_min: {e}", file=sys.stderr)
        return 1
    if code == EXIT_MODEL_GONE:  # threads wait inside llama.cpp for good: no interpreter teardown
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    return code


def supervise(cfg: Config, argv: list[str], store: KeyStore, child: list[str] | None) -> int:
    new_key = ensure_key(store, cfg.api_key)
    if new_key:
        print(f"unsloth_min: created your API key (shown only once, stored hashed in "
              f"{default_home()}):\n\n    {new_key}\n", flush=True)
    check_bind(cfg.host, has_key=any(cfg.api_key) or not store.is_empty())
    with listen(cfg.host, cfg.port) as sock:
        return Supervisor(argv + (["--key-shown"] if new_key else []), sock, cfg.restart,
                          child).run()


# ---- `python -m unsloth_min keys …` -------------------------------------------------------------
def _keys_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unsloth_min keys", description="Manage API keys.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{create,list,revoke}")
    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", default="", help="a label for the key")
    sub.add_parser("list", help="list keys (never shows the keys themselves)")
    revoke = sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", help="the key's id, as shown by `keys list`")
    return parser


def _when(t: float | None) -> str:
    return "never" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _print_table(records: list[KeyRecord], out: TextIO) -> None:
    if not records:
        print("No API keys. Create one with: python -m unsloth_min keys create", file=out)
        return
    rows = [("ID", "NAME", "PREFIX", "CREATED", "LAST USED")]
    rows += [(r.id, r.name or "-", r.prefix, _when(r.created), _when(r.last_used)) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), file=out)


def keys_command(argv: list[str], home: Path, out: TextIO | None = None) -> int:
    out = out or sys.stdout  # looked up per call, so redirected stdout is honored
    try:
        args = _keys_parser().parse_args(argv)
    except SystemExit as e:  # argparse already printed usage / help
        return e.code if isinstance(e.code, int) else 2
    store = KeyStore(home)
    try:
        if args.command == "create":
            record, key = store.create(args.name)
            label = f' ("{record.name}")' if record.name else ""
            print(f"Created key {record.id}{label}. It is shown only this once:", file=out)
            print(key, file=out)
            return 0
        if args.command == "list":
            _print_table(store.records(), out)
            return 0
        if store.revoke(args.id):
            print(f"Revoked key {args.id}.", file=out)
            return 0
        # Someone may paste a key where the id goes: never echo it back.
        shown = repr(args.id)
        if args.id.startswith(KEY_PREFIX):
            shown = "(that looks like a key, not an id)"
        print(f"unsloth_min keys: no key with id {shown}; see `keys list`", file=sys.stderr)
        return 1
    except KeyStoreError as e:
        print(f"unsloth_min keys: {e}", file=sys.stderr)
        return 1
