"""Throughput and latency of unsloth_min, side by side with llama-cpp-python and llama-server.

Usage:
  .venv/bin/python bench/bench.py [--model PATH] [--threads N] [--parallel 4] [--tokens 128]
                                  [--runs 3] [--llama-server PATH] [--skip-inprocess]

`--llama-server` takes a binary built from the llama.cpp source inside the llama-cpp-python sdist
(vendor/llama.cpp; see bench/README.md); it runs with the same model, threads, context and slots.
For each server this prints: single-stream decode tok/s, time to first token (TTFT) for a short
and a ~2k-token prompt, TTFT of a follow-up turn of that 2k conversation (the prefix cache at
work), aggregate decode tok/s at 1, 2, 4 and 8 concurrent streams, and peak RSS. The in-process
reference is llama-cpp-python's own streaming `create_chat_completion` with the same settings.

Method: greedy sampling, a fixed token budget, and a unique first line per request so no run
profits from an earlier one's cache (except the follow-up turn, whose point that is). Decode
tok/s counts tokens after the first over the time after the first, so prompt reading is not in
it. Each single-stream figure is the median of --runs runs after a warm-up. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from unsloth_min.engine import embedded_model_path  # noqa: E402
from unsloth_min.engine.model import usable_cores  # noqa: E402

KEY = "sk-unsloth-" + "b" * 32
STORY = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
FACTS = " ".join(f"Fact {i}: the lighthouse on island {i} was painted in the year {1800 + i}."
                 for i in range(120))  # about 2k tokens with SmolLM2's tokenizer


class Server:
    """A server process on a free port with helpers for streamed chat requests."""

    def __init__(self, cmd: list[str], port: int):
        self.port = port
        env = dict(os.environ, UNSLOTH_MIN_HOME=tempfile.mkdtemp())
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited early")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError("server not healthy")

    def stream(self, messages: list[dict], max_tokens: int) -> dict:
        body = json.dumps({"model": "m", "stream": True, "max_tokens": max_tokens, "temperature": 0,
                           "messages": messages, "stream_options": {"include_usage": True}})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
        resp = conn.getresponse()
        stamps, text, usage, finish = [], [], {}, None
        for line in resp:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    stamps.append(time.perf_counter())
                    text.append(piece)
                finish = choice.get("finish_reason") or finish
            usage = chunk.get("usage") or usage
        conn.close()
        return {"t0": t0, "stamps": stamps, "text": "".join(text), "usage": usage, "finish": finish}

    def peak_rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ttft(r: dict) -> float:
    return r["stamps"][0] - r["t0"]


def decode_tps(r: dict) -> float:
    s = r["stamps"]
    return (len(s) - 1) / (s[-1] - s[0]) if len(s) > 1 else 0.0


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def measure(server: Server, args, tag: str) -> dict:
    out = {}
    server.stream(user(f"[{tag} warm] {STORY}"), 16)  # warm-up
    runs = [server.stream(user(f"[{tag} run {i}] {STORY}"), args.tokens) for i in range(args.runs)]
    out["decode_tps"] = statistics.median(decode_tps(r) for r in runs)
    out["tokens"] = min(len(r["stamps"]) for r in runs)
    out["ttft_short_ms"] = 1000 * statistics.median(ttft(r) for r in runs)
    if args.decode_only:
        return out
    long_runs, follow = [], []
    for i in range(args.runs):
        first = server.stream(user(f"[{tag} long {i}] {FACTS}"), 32)
        long_runs.append(first)
        convo = user(f"[{tag} long {i}] {FACTS}") + [
            {"role": "assistant", "content": first["text"]},
            {"role": "user", "content": "Which island's lighthouse is the oldest?"}]
        follow.append(server.stream(convo, 8))
    out["prompt_tokens_long"] = long_runs[0]["usage"].get("prompt_tokens")
    out["ttft_2k_ms"] = 1000 * statistics.median(ttft(r) for r in long_runs)
    out["ttft_followup_ms"] = 1000 * statistics.median(ttft(r) for r in follow)
    cached = (follow[0]["usage"].get("prompt_tokens_details") or {}).get("cached_tokens")
    out["followup_cached_tokens"] = cached
    for n in (1, 2, 4, 8):
        out[f"aggregate_tps_{n}"], out[f"complete_{n}"] = concurrent(server, n, args.tokens, tag)
    out["peak_rss_mib"] = server.peak_rss_mib()
    return out


def concurrent(server: Server, n: int, max_tokens: int, tag: str) -> tuple[float, bool]:
    """Aggregate generated tok/s with n streams at once, and whether every stream completed."""
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda i: server.stream(user(f"[{tag} c{n}-{i}] {STORY}"), max_tokens),
                                range(n)))
    wall = time.perf_counter() - t0
    tokens = sum(len(r["stamps"]) for r in results)
    return tokens / wall, all(r["finish"] in ("stop", "length") for r in results)


def in_process(model: str, args) -> dict:
    import llama_cpp
    llm = llama_cpp.Llama(model, n_ctx=8192, n_threads=args.threads, n_threads_batch=args.threads,
                          n_batch=512, verbose=False)
    runs = []
    for i in range(args.runs + 1):
        t0 = time.perf_counter()
        stamps = []
        for chunk in llm.create_chat_completion(user(f"[inproc run {i}] {STORY}"), stream=True,
                                                temperature=0, max_tokens=args.tokens):
            if chunk["choices"][0]["delta"].get("content"):
                stamps.append(time.perf_counter())
        runs.append({"t0": t0, "stamps": stamps})
    runs = runs[1:]
    return {"decode_tps": statistics.median(decode_tps(r) for r in runs),
            "ttft_short_ms": 1000 * statistics.median(ttft(r) for r in runs),
            "tokens": min(len(r["stamps"]) for r in runs)}


ROWS = [("decode_tps", "single-stream decode tok/s", "{:.1f}"), ("ttft_short_ms", "TTFT short prompt ms", "{:.0f}"),
        ("ttft_2k_ms", "TTFT ~2k-token prompt ms", "{:.0f}"), ("ttft_followup_ms", "TTFT follow-up turn ms", "{:.0f}"),
        ("followup_cached_tokens", "follow-up cached tokens", "{}"),
        ("aggregate_tps_1", "aggregate tok/s, 1 stream", "{:.1f}"), ("aggregate_tps_2", "aggregate tok/s, 2 streams", "{:.1f}"),
        ("aggregate_tps_4", "aggregate tok/s, 4 streams", "{:.1f}"), ("aggregate_tps_8", "aggregate tok/s, 8 streams", "{:.1f}"),
        ("peak_rss_mib", "peak RSS MiB", "{:.0f}")]


def table(results: dict[str, dict]) -> str:
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, label, fmt in ROWS:
        cells = [fmt.format(results[n][key]) if results[n].get(key) is not None else "–" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=usable_cores())
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=8192, help="tokens per sequence")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--llama-server", default=None)
    ap.add_argument("--skip-inprocess", action="store_true")
    ap.add_argument("--decode-only", action="store_true", help="single-stream decode and TTFT only")
    args = ap.parse_args()
    model = args.model or embedded_model_path()
    threads = ["-t", str(args.threads), "-np", str(args.parallel)]
    contenders = {"unsloth_min": lambda p: [sys.executable, "-m", "unsloth_min", "--model", model, "-p", str(p),
                                            "--api-key", KEY, "--log-level", "warning", "-c", str(args.ctx),
                                            *threads]}
    if args.llama_server:  # its -c is the total, split into per-slot streams: the same KV layout as ours
        contenders["llama-server"] = lambda p: [args.llama_server, "-m", model, "--port", str(p),
                                                "--api-key", KEY, "--jinja", "--no-kv-unified",
                                                "-c", str(args.ctx * args.parallel), *threads]
    print(f"model {os.path.basename(model)}, {args.threads} threads, ctx {args.ctx}, {args.parallel} slots, "
          f"{args.tokens} tokens per stream, median of {args.runs}", flush=True)
    results = {}
    for name, cmd in contenders.items():
        port = free_port()
        server = Server(cmd(port), port)
        try:
            results[name] = measure(server, args, name)
        finally:
            server.close()
        print(name, json.dumps(results[name]), flush=True)
    if not args.skip_inprocess:
        results["llama-cpp-python in-process"] = in_process(model, args)
        print("in-process", json.dumps(results["llama-cpp-python in-process"]), flush=True)
    print(table(results))
    ours = results["unsloth_min"]
    for name in results:
        if name != "unsloth_min":
            print(f"unsloth_min / {name} single-stream decode: {ours['decode_tps'] / results[name]['decode_tps']:.3f}x")
    if args.decode_only:
        return
    print(f"unsloth_min 4 streams / 1 stream: {ours['aggregate_tps_4'] / ours['aggregate_tps_1']:.2f}x; "
          f"follow-up TTFT / 2k TTFT: {ours['ttft_followup_ms'] / ours['ttft_2k_ms']:.2f}")
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "bench.json"), "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
