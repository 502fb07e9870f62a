"""Prompt and decode tok/s of the model local vs split over loopback `--rpc` servers (engine/rpc.py).

    make install && .venv/bin/python bench/rpc.py [--rounds 5] [--threads N] [MODEL.gguf]

Starts two ggml-rpc-servers (.venv/bin, from `make install`) on loopback ports, each with
--threads threads, and measures three placements of the engine's own `Model` (default: the
embedded SmolLM2-135M): all layers local, all on one server, split across two. Each measurement
is its own process (RPC servers are registered per process) and the placements take turns round
by round; figures are medians. Prompt: one 500-token batch into an empty cache; decode: 64
single-token steps after it. The per-token network cost is the decode step's time over the local
one's, and the bytes sent over loopback (/proc/net/dev, both directions) per decoded token. Loopback has no wire latency:
a LAN adds its round trips (one per device per token) on top.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROMPT, STEPS = 500, 64
MEASURE = r"""
import sys, time, llama_cpp as C
from unsloth_min.engine.model import Model, ModelParams
def lo_bytes():
    for line in open("/proc/net/dev"):
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            f = rest.split()
            return int(f[8])  # sent: on loopback each byte is also counted as received
    return 0
rpc = tuple(e for e in sys.argv[3].split(",") if e)
m = Model(ModelParams(path=sys.argv[1], n_ctx=1024, n_parallel=1, n_threads=int(sys.argv[2]), rpc=rpc))
ids = (m.tokenize("The quick brown fox jumps over the lazy dog. " * 80) * 2)[:%d]
arr = (C.llama_token * len(ids))(*ids)
t = time.perf_counter()
assert C.llama_decode(m.ctx, C.llama_batch_get_one(arr, len(ids))) == 0
C.llama_synchronize(m.ctx)  # (llama_decode may return before a backend has finished)
prompt = len(ids) / (time.perf_counter() - t)
one = (C.llama_token * 1)(ids[0])
sent, t = lo_bytes(), time.perf_counter()
for _ in range(%d):
    assert C.llama_decode(m.ctx, C.llama_batch_get_one(one, 1)) == 0
    C.llama_synchronize(m.ctx)
print(prompt, %d / (time.perf_counter() - t), (lo_bytes() - sent) / %d)
""" % (PROMPT, STEPS, STEPS, STEPS)


def measure(path: str, threads: int, endpoints: list[str]) -> tuple[float, float, float]:
    done = subprocess.run([sys.executable, "-c", MEASURE, path, str(threads), ",".join(endpoints)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise SystemExit(f"measuring {endpoints or 'local'} failed:\n{done.stderr[-2000:]}")
    prompt, decode, net = done.stdout.split()
    return float(prompt), float(decode), float(net)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_servers(threads: int) -> tuple[list[str], list[subprocess.Popen]]:
    from unsloth_min.engine import rpc
    binary = os.path.join(os.path.dirname(sys.executable), "ggml-rpc-server")
    if not os.path.exists(binary):
        raise SystemExit(f"{binary} is missing: run `make install`")
    ports = [free_port(), free_port()]
    procs = [subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(p), "-t", str(threads)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    endpoints = [f"127.0.0.1:{p}" for p in ports]
    for e in endpoints:
        for _ in range(100):
            try:
                rpc.hello(e, timeout=1)
                break
            except rpc.RpcError:
                time.sleep(0.1)
    return endpoints, procs


def main() -> None:
    from unsloth_min.engine import embedded_model_path
    from unsloth_min.engine.model import usable_cores
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=usable_cores())
    args = ap.parse_args()
    path = args.model or embedded_model_path()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?")
    print(f"CPU: {cpu}; {os.path.basename(path)}; {args.threads} threads here and per server, "
          f"{args.rounds} rounds")
    endpoints, procs = start_servers(args.threads)
    try:
        placements = {"local": [], "one RPC server": endpoints[:1], "two RPC servers": endpoints}
        runs = {name: [] for name in placements}
        for _ in range(args.rounds):
            for name, where in placements.items():
                runs[name].append(measure(path, args.threads, where))
    finally:
        for p in procs:
            p.kill()
    local_ms = 1000 / statistics.median(r[1] for r in runs["local"])
    print("| placement | prompt tok/s | decode tok/s | ms per token | over local | bytes per token |")
    print("|---|---|---|---|---|---|")
    for name, results in runs.items():
        decode = statistics.median(r[1] for r in results)
        ms = 1000 / decode
        print(f"| {name} | {statistics.median(r[0] for r in results):.0f} | {decode:.1f} | "
              f"{ms:.2f} | {ms - local_ms:+.2f} ms | {statistics.median(r[2] for r in results):,.0f} |")


if __name__ == "__main__":
    main()
