"""Streaming decode speed and time-to-first-token: our server vs llama-cpp-python in-process.

Usage:  .venv/bin/python bench/bench_stream.py [--model PATH] [--threads N] [--tokens 256] [--runs 3]
        [--llama-server PATH]   (a llama-server binary built from the sdist's vendor/llama.cpp)

Every contender gets the same model, threads, prompt and greedy sampling, and generates the same
number of tokens; decode tok/s counts tokens after the first over the time after the first
(so TTFT and decode speed are measured separately). Each figure is the median of --runs runs,
after one warm-up run. Nothing here is asserted: the numbers go to stdout and bench/README.md.
"""
from __future__ import annotations

import argparse
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

PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
KEY = "sk-unsloth-" + "b" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, proc, timeout=120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited early")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not healthy")


def stream_once(port: int, n_tokens: int, extra: dict) -> tuple[float, float, int]:
    """(ttft seconds, decode tok/s, tokens) for one streamed chat completion over HTTP."""
    body = json.dumps({"model": "m", "stream": True, "max_tokens": n_tokens, "temperature": 0,
                       "messages": [{"role": "user", "content": PROMPT}], **extra})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    resp = conn.getresponse()
    stamps = []
    for line in resp:
        if line.startswith(b"data: {") and b'"content":"' in line and b'"content":""' not in line:
            stamps.append(time.perf_counter())
    conn.close()
    return rates(t0, stamps)


def rates(t0: float, stamps: list[float]) -> tuple[float, float, int]:
    ttft = stamps[0] - t0
    decode = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return ttft, decode, len(stamps)


def in_process(model: str, threads: int, n_tokens: int, runs: int) -> list[tuple]:
    """llama-cpp-python's own streaming chat completion, and its bare generate() loop."""
    import llama_cpp
    llm = llama_cpp.Llama(model, n_ctx=8192, n_threads=threads, n_threads_batch=threads,
                          n_batch=512, verbose=False)
    messages = [{"role": "user", "content": PROMPT}]
    out = []
    for _ in range(runs + 1):
        llm.reset()  # no prefix reuse across runs: each run reads the prompt, as the server's do
        t0 = time.perf_counter()
        stamps = []
        for chunk in llm.create_chat_completion(messages, stream=True, temperature=0, max_tokens=n_tokens):
            if chunk["choices"][0]["delta"].get("content"):
                stamps.append(time.perf_counter())
        out.append(rates(t0, stamps))
    return out[1:]


def server_runs(cmd: list[str], port: int, n_tokens: int, runs: int, extra: dict) -> list[tuple]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, UNSLOTH_MIN_HOME=tempfile.mkdtemp()))
    try:
        wait_healthy(port, proc)
        results = []
        for i in range(runs + 1):
            # a different first word each run defeats the prefix cache: every run reads the prompt
            results.append(stream_once(port, n_tokens, dict(extra, messages=[
                {"role": "user", "content": f"({i}) {PROMPT}"}])))
        return results[1:]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def summary(name: str, results: list[tuple]) -> dict:
    ttft = statistics.median(r[0] for r in results)
    tps = statistics.median(r[1] for r in results)
    toks = min(r[2] for r in results)
    print(f"{name:34s} ttft {ttft * 1000:7.1f} ms   decode {tps:7.1f} tok/s   ({toks} tokens)")
    return {"name": name, "ttft_ms": ttft * 1000, "decode_tps": tps, "tokens": toks}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=usable_cores())
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--llama-server", default=None)
    args = ap.parse_args()
    model = args.model or embedded_model_path()
    print(f"model {os.path.basename(model)}, threads {args.threads}, {args.tokens} tokens, "
          f"median of {args.runs} runs")
    rows = []
    port = free_port()
    ours = [sys.executable, "-m", "unsloth_min", "--model", model, "-p", str(port), "-t",
            str(args.threads), "--api-key", KEY, "--log-level", "warning"]
    rows.append(summary("unsloth_min (HTTP stream)", server_runs(ours, port, args.tokens, args.runs, {})))
    rows.append(summary("llama-cpp-python in-process", in_process(model, args.threads, args.tokens, args.runs)))
    if args.llama_server:
        port = free_port()
        cmd = [args.llama_server, "-m", model, "--port", str(port), "-t", str(args.threads),
               "-c", "8192", "-np", "4", "--api-key", KEY, "--log-disable"]
        rows.append(summary("llama-server (HTTP stream)", server_runs(cmd, port, args.tokens, args.runs, {})))
    base = rows[1]["decode_tps"]
    print(f"unsloth_min / in-process decode: {rows[0]['decode_tps'] / base:.3f}x")
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "bench_stream.json"), "w") as f:
        json.dump({"threads": args.threads, "tokens": args.tokens, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
